"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pytest

PROJECT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class BankFiles:
    """A set of BioMAJ 3-format files: the test suite's banks and remote tree, real-world banks.

    ``banks`` holds ``global.properties``, the banks the workflow tests update (local,
    localprocess, computed, sub1, sub2, multi, directhttp, error ...) and ``bank/``, the tiny
    remote tree of the ``protocol=local`` banks; ``real_world`` holds production-shaped bank
    files (NCBI, EBI, UCSC ...) read with ``global_example``. ``expect`` names the few
    content-specific values tests compare to (a release written in a file, a process's output).
    """

    name: str
    root: Path
    banks: Path
    real_world: Path
    global_example: Path
    expect: Mapping[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> Path:
        return self.banks / "bank"

    @property
    def test_global(self) -> Path:
        return self.banks / "global.properties"

    def bank(self, name: str) -> Path:
        return self.banks / f"{name}.properties"


#: Ours: written by the project, always present (tests/fixtures/README.md).
OURS_DIR = PROJECT / "tests" / "fixtures"
OURS = BankFiles(
    "ours", OURS_DIR, OURS_DIR / "test-banks", OURS_DIR / "bank-properties", OURS_DIR / "global.properties.example",
    expect={
        "text_release": "27",  # test_100.txt: "Release 27 ..."
        "pdbaa_type": ["proteic"],
        "proc0_out": "data in {datadir}\n",  # PROC0: echo data in $datadir
        "proc5": {"format": "sample", "types": ("any",), "tags": {"organism": "yeast", "strain": "s288c"},
                  "files": ("out/a.dat", "out/b.dat")},
        "localprocess_type": "genome",
        "multi": {"search.json": {"query": "kinase", "format": "json"},
                  "submit.json": {"species": "yeast", "limit": "10"}},
        "directhttp": ("www.example.org", "/mirror/pages", "index.html", "VERSION"),
        "global": {"db.name": "suite_banks", "use_ldap": "0"},
        "uniprot_like": "ebi_uniprot",
    },
)

#: Upstream's: BioMAJ 3's own bank files and test fixtures (AGPL), never copied into the project.
UPSTREAM_DIR = Path(os.environ.get("BIOMAJ3_FIXTURES") or PROJECT.parent / "shared" / "biomaj3-fixtures")
UPSTREAM = BankFiles(
    "upstream", UPSTREAM_DIR, UPSTREAM_DIR / "upstream-tests", UPSTREAM_DIR / "bank-properties",
    UPSTREAM_DIR / "global.properties.example",
    expect={
        "text_release": "103",
        "pdbaa_type": ["nucleic_protein"],
        "proc0_out": "test {datadir}\n",  # PROC0: echo test $datadir
        "proc5": {"format": "test", "types": ("any",), "tags": {"chr": "chr1", "organism": "hg19"},
                  "files": ("dir1/file1", "dir1/file2", "dir1/file3")},
        "localprocess_type": "nucleic_protein",
        "multi": {"test1.json": {"key1": "value1", "key2": "value2"},
                  "test2.json": {"key1": "value1", "key2": "value2"}},
        "directhttp": ("ftp2.fr.debian.org", "/debian", "README.html", "README"),
        "global": {"db.name": "biomaj_test", "use_ldap": "1"},
        "uniprot_like": "UniProt",
    },
)
#: The one reason every compatibility test gives when upstream's files are absent.
UPSTREAM_MISSING = (f"upstream BioMAJ 3 fixtures not found at {UPSTREAM_DIR}: "
                    "set BIOMAJ3_FIXTURES (compatibility suite, marker compat)")


def require_upstream() -> BankFiles:
    """Upstream's files, or skip (fail when CI=true: CI always has them)."""
    if not UPSTREAM_DIR.is_dir():
        if IN_CI:
            pytest.fail(f"{UPSTREAM_MISSING} (required when CI=true)")
        pytest.skip(UPSTREAM_MISSING)
    return UPSTREAM


def upstream_paths(pattern: str) -> list:
    """Parameters for a test over upstream's bank files matching ``pattern`` (relative to their
    root; global.properties is never a bank and is left out).

    Without them, one placeholder parameter: its test skips through :func:`require_upstream`
    (with the one reason) instead of pytest's "empty parameter set".
    """
    if UPSTREAM_DIR.is_dir():
        return [pytest.param(p, marks=pytest.mark.compat, id=f"{p.parent.name}/{p.stem}")
                for p in sorted(UPSTREAM_DIR.glob(pattern)) if p.name != "global.properties"]
    return [pytest.param(None, marks=pytest.mark.compat, id="upstream-absent")]


#: ``@pytest.mark.parametrize("files", BOTH, indirect=True)``: a test run on ours and on upstream's.
BOTH = ["ours", pytest.param("upstream", marks=pytest.mark.compat)]


@pytest.fixture(scope="session")
def bank_files() -> BankFiles:
    """The project's own BioMAJ 3-format files (tests/fixtures)."""
    return OURS


@pytest.fixture(scope="session")
def upstream_files() -> BankFiles:
    """Upstream's files: the test is part of the compatibility suite (skips or fails without them)."""
    return require_upstream()


@pytest.fixture
def files(request) -> BankFiles:
    """Ours, or upstream's when parametrised with ``"upstream"`` (see BOTH)."""
    if getattr(request, "param", "ours") == "upstream":
        return require_upstream()
    return OURS


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The root of upstream's files (compatibility suite); new tests take ``bank_files``."""
    return require_upstream().root


def pytest_collection_modifyitems(items):
    """Whatever reads upstream's files is in the compatibility suite (``-m compat`` lists it)."""
    for item in items:
        if {"upstream_files", "fixtures_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.compat)


def pytest_runtest_setup(item):
    """A compat test without upstream's files: skipped with the one reason, failed when CI=true."""
    if item.get_closest_marker("compat"):
        require_upstream()


#: The skips that are expected on a machine (upstream's files absent, no MongoDB server): each is
#: reported at one place, so that ``-rs`` names each in one line.
MONGO_MISSING = ("set BIOMAJ_TEST_MONGO_URL to run the store suite on a real MongoDB server (skipped in CI too: "
                 "no MongoDB server runs there; the mongo-double variant ran)")
#: reason -> (file, 0-based line) where it is reported; tests/storage/conftest.py adds MongoDB's.
ONE_LINE_SKIPS = {UPSTREAM_MISSING: (__file__, require_upstream.__code__.co_firstlineno - 1)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each expected skip (:data:`ONE_LINE_SKIPS`) reported at one place, whatever the test."""
    report = (yield).get_result()
    if report.skipped and isinstance(report.longrepr, tuple):
        where = next((where for reason, where in ONE_LINE_SKIPS.items() if reason in str(report.longrepr[2])), None)
        if where is not None:
            report.longrepr = (*where, report.longrepr[2])


@pytest.fixture
def biomaj_root(tmp_path: Path) -> Path:
    """A fresh `biomaj init` root on a free web port."""
    from biomaj.config.scaffold import init_root

    root = tmp_path / "root"
    init_root(root, web_port=free_port())
    return root


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(name="free_port")
def free_port_fixture():
    return free_port


@pytest.fixture(scope="session")
def biomaj_cmd() -> list[str]:
    """The installed console script, run as a user would."""
    script = Path(sys.executable).with_name("biomaj")
    return [str(script)] if script.exists() else [sys.executable, "-m", "biomaj"]


def _port_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def service_url(variable: str, default: str, service: str) -> str:
    """URL of a real service: $variable, else `default` when it answers on loopback.

    Without it the test skips on a laptop, and fails when CI=true (CI must run service tests).
    """
    url = os.environ.get(variable) or default
    if url and _port_answers(url):
        return url
    reason = f"{service} not reachable at {url or '(no URL)'}: start it or set {variable}"
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture(name="service_url", scope="session")
def service_url_fixture():
    """`service_url(variable, default, service)`: see :func:`service_url`."""
    return service_url


@pytest.fixture
async def site(tmp_path, files):
    """A BioMAJ 3 test installation (tests/workflow/harness.py) with its actors running, on our
    bank files (or upstream's where a test parametrises ``files`` with BOTH)."""
    from tests.workflow.harness import Site

    installation = Site(tmp_path / "biomaj", files)
    await installation.open()
    try:
        yield installation
    finally:
        await installation.close()


def files_on_both():
    """A module's ``files`` fixture over ours and upstream's (``files = files_on_both()``): every
    test of the module that takes ``site`` runs on both sets, upstream's in the compat suite."""

    @pytest.fixture(params=BOTH)
    def files(request) -> BankFiles:
        return require_upstream() if request.param == "upstream" else OURS

    return files


@pytest.fixture(scope="session")
def s3_open():
    """moto's S3 server (tests/servers/s3_server.py) accepting any signature: public buckets, and
    buckets any key may write. One per test session; each test makes its own buckets."""
    from tests.servers.s3_server import MotoS3

    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_auth():
    """moto's S3 server checking every signature against its one IAM user (``access_key``,
    ``secret_key``); unsigned requests get 403 AccessDenied, as on AWS."""
    from tests.servers.s3_server import MotoS3

    with MotoS3(auth=True) as server:
        yield server


@pytest.fixture
def bucket_name(request) -> str:
    """A bucket name of this test's own (S3 rules: lower case, 3-63 characters)."""
    import re
    import uuid

    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"{stem}-{uuid.uuid4().hex[:8]}"
