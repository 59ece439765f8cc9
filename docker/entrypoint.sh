#!/bin/sh
# First start: create the installation in the volume, listening on every interface.
set -e
root=$(dirname "${BIOMAJ_CONFIG:-/var/lib/biomaj/config.yml}")
if [ ! -f "${BIOMAJ_CONFIG:-/var/lib/biomaj/config.yml}" ]; then
  biomaj init "$root" --host 0.0.0.0
fi
exec biomaj "$@"
