"""`biomaj ctl update --dry-run`, `ctl show` and `ctl status BANK` with the change reports, run as
the installed command on a fresh `biomaj init` root (the example bank, from its local tree)."""

from __future__ import annotations

import json
import os

from tests.cli.test_bank_commands import bank_dir, run, run_json, table_headers

CHANGES_HEADERS = ["Release", "Against", "Added", "Removed", "Changed", "Unchanged"]


def second_release(root) -> dict[str, int]:
    """Release 2: example.fasta changed, example3.fasta added, example2.fasta.gz removed; the sizes."""
    tree = root / "example-remote"
    (tree / "release.txt").write_text("Release 2\n")
    (tree / "example.fasta").write_text(">seq1 changed\nACGT\n")
    (tree / "example3.fasta").write_text(">seq3\nTTTT\n")
    removed = (tree / "example2.fasta.gz").stat().st_size
    (tree / "example2.fasta.gz").unlink()
    return {"removed": removed, **{name: (tree / name).stat().st_size for name in
                                   ("release.txt", "example.fasta", "example3.fasta")}}


def test_dry_run_prints_the_report_and_what_would_move_then_the_update_matches(biomaj_root):
    run(biomaj_root, "update", "example")
    sizes = second_release(biomaj_root)
    lock = biomaj_root / "lock" / "example.lock"

    text = run(biomaj_root, "update", "example", "--dry-run").stdout
    fetched = sizes["release.txt"] + sizes["example.fasta"] + sizes["example3.fasta"]
    assert text.splitlines() == [
        "example: dry run: an update would make release 2",
        f"  1 added ({sizes['example3.fasta']} B), 1 removed ({sizes['removed']} B), "
        f"2 changed ({sizes['release.txt'] + sizes['example.fasta']} B), 0 unchanged (0 B) against release 1",
        f"  would download 3 files ({fetched} B) from the server, reuse 0 files (0 B) of the previous release, "
        "keep 0 files (0 B) already in the offline directory",
        "  added: example3.fasta",
        "  removed: example2.fasta.gz",
        "  changed: example.fasta, release.txt",
    ]
    assert not lock.exists() and not (bank_dir(biomaj_root) / "example_2").exists()
    assert [row["Release"] for row in run_json(biomaj_root, "status", "example")["production"]] == ["1"]

    job = run_json(biomaj_root, "update", "example", "--dry-run")
    assert job["state"] == "done" and job["options"] == {"dry_run": True}
    dry = job["result"]["details"]
    assert dry["transfer"]["fetch"] == {"count": 3, "bytes": fetched}

    run(biomaj_root, "update", "example")
    status = run_json(biomaj_root, "status", "example")
    real = status["changes"][-1]
    assert (real["release"], real["state"], real["against"], real["dry_run"]) == ("2", "published", "1", False)
    for kind in ("added", "removed", "changed", "unchanged"):
        assert real[kind] == dry["changes"][kind], kind
    assert real["files"] == dry["changes"]["files"]


def test_show_and_status_print_the_changes_below_biomaj3_s_tables(biomaj_root):
    run(biomaj_root, "update", "example")
    second_release(biomaj_root)
    run(biomaj_root, "update", "example")

    shown = run(biomaj_root, "show", "example").stdout
    headers = table_headers(shown)
    assert headers == [["Name", "Release", "Format(s)", "Type(s)", "Tag(s)", "File(s)"], CHANGES_HEADERS]
    assert "Changes against the previous release" in shown
    assert "| 2 (current) | 1         | 1 (" in shown

    status = run(biomaj_root, "status", "example").stdout
    assert table_headers(status)[:2] == [["Name", "Type(s)", "Last update status", "Published release"],
                                         ["Session", "Remote release", "Release", "Directory", "Freeze", "Format(s)",
                                          "Log file"]]
    assert table_headers(status)[-1] == CHANGES_HEADERS

    rows = run_json(biomaj_root, "show", "example")
    assert [(row["Release"], (row["changes"] or {}).get("against", "-")) for row in rows] == [
        ("1", None), ("2 (current)", "1")]
    assert rows[1]["changes"]["files"]["added"] == ["example3.fasta"]
    only = run_json(biomaj_root, "show", "example", "--release", "1")
    assert [row["Release"] for row in only] == ["1"] and only[0]["changes"]["added"]["count"] == 3


def test_dry_run_with_nothing_new_and_its_refusals(biomaj_root):
    run(biomaj_root, "update", "example")
    assert run(biomaj_root, "update", "example", "--dry-run").stdout.strip() == (
        "example: dry run: no need to update, release 1 is current")
    refused = run(biomaj_root, "update", "example", "--dry-run", "--stop-after", "download", check=False)
    assert refused.returncode == 1
    assert "--dry-run tells what a new update would do: it takes --fromscratch, not --stop-after" in refused.stderr
    env_json = json.loads(run(biomaj_root, "update", "example", "--dry-run", "--json").stdout)
    assert env_json["result"]["details"] == {"dry_run": True, "update": False, "remoterelease": "1",
                                             "changes": None, "transfer": None}
    assert os.listdir(biomaj_root / "lock") == []
