#!/bin/sh
# biomaj's container entrypoint: make sure an installation exists, then become `biomaj ARGS`.
#
# The installation is the folder of $BIOMAJ_CONFIG (/var/lib/biomaj by default, the volume). When
# it has no config.yml, `biomaj init` lays it out (listening on every interface); when it has one,
# nothing is touched, so restarting or recreating a container on the same volume finds the same
# banks, releases and store. Containers started together on a new volume run `init` once (flock).
# A BioMAJ 3 conf/global.properties copied into the volume before the first start is kept (init
# never overwrites a file without --force).
# `exec` makes biomaj PID 1: it receives SIGTERM itself and stops gracefully.
set -eu
config=${BIOMAJ_CONFIG:-/var/lib/biomaj/config.yml}
root=$(dirname "$config")

initialise() {
    [ -f "$config" ] && return 0
    echo "biomaj-entrypoint: no $config: biomaj init $root --host 0.0.0.0" >&2
    biomaj init "$root" --host 0.0.0.0 >&2  # keeps the files already there (says which)
}

if [ ! -f "$config" ]; then
    mkdir -p "$root" 2>/dev/null || true
    if [ ! -w "$root" ]; then
        echo "biomaj-entrypoint: $root is not writable by uid $(id -u) (the image's biomaj user):" \
             "give the volume to uid $(id -u) (chown $(id -u) on the host folder) or run with --user" >&2
        exit 1
    fi
    if command -v flock >/dev/null 2>&1; then
        # the lock file lives in the root: the same volume seen by several containers
        exec 9>"$root/.biomaj-init.lock"
        flock 9
        initialise
        exec 9>&-
    else
        initialise
    fi
fi
exec biomaj "$@"
