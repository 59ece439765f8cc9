"""What the /db and FTP tests share: where a bank's published release lies, a tree's contents, the
escape attempts planted in a release, and the bank file of a second biomaj mirroring the first."""

from __future__ import annotations

from pathlib import Path

SECRET = "TOP-SECRET-MARKER outside every release"


async def release_dir(store, bank: str) -> Path:
    """The directory of ``bank``'s published release, as the store records it."""
    doc = await store.get_bank(bank)
    entry = next(p for p in doc["production"] if p["session"] == doc["current"])
    return Path(entry["data_dir"], entry["dir_version"], entry["prod_dir"])


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``: relative path -> bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def plant_escape_attempts(root: Path, flat: Path) -> None:
    """Symlinks out of the release ``flat`` belongs to (to a file, a directory, a sibling release), a
    loop, a hidden file, and one symlink that stays inside (``inner``, which may be served)."""
    (root / "secret.txt").write_text(SECRET)
    (flat / "escape").symlink_to(root / "secret.txt")
    (flat / "escdir").symlink_to(root)
    (flat / "older").symlink_to("../../example_0")  # into a sibling directory of the release
    (flat.parent.parent / "example_0").mkdir()
    (flat.parent.parent / "example_0" / "secret.txt").write_text(SECRET)
    (flat / "inner").symlink_to("example.fasta")  # stays in the release: served
    (flat / ".hidden").write_text(SECRET)
    (flat / "loop").symlink_to("loop")


MIRROR = """[GENERAL]
db.fullname="A bank mirrored from another biomaj over {protocol}"
db.name=mirror
db.type=nucleic
db.formats=fasta
dir.version=mirror
offline.dir.name=offline/mirror_tmp

protocol={protocol}
server=127.0.0.1:{port}
remote.dir={remote_dir}
remote.files=**/*
{credentials}
release.file=^flat/release\\.txt$
release.regexp=Release\\s+(\\d+)

local.files=**/*
keep.old.version=1
"""


def mirror_bank_file(protocol: str, port: int, remote_dir: str, credentials: str = "") -> str:
    """The bank file of ``mirror``: every file of another biomaj's published release at ``remote_dir``."""
    return MIRROR.format(protocol=protocol, port=port, remote_dir=remote_dir, credentials=credentials)
