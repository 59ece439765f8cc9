#!/usr/bin/env bash
# What the test suite needs besides Python, on a Debian machine: run by `make test` (and so by
# .ci/run). It installs the missing programs with apt-get when it can (root, or sudo without a
# password), and starts Redis and RabbitMQ when they are installed but not answering. Without
# apt-get it lists what is missing: those tests skip with their reason (and fail when CI=true).
set -uo pipefail

port_open() { python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))' "$1"; }
wait_port() { for _ in $(seq "$2"); do port_open "$1" && return 0; sleep 1; done; echo "service on port $1 did not start" >&2; return 1; }
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

missing=()
have rsync || missing+=(rsync)                          # the rsync protocol's tests run the rsync program
have ssh || missing+=(openssh-client)                   # rsync over ssh
have slapd || missing+=(slapd ldap-utils)               # tests/auth starts a private OpenLDAP
have chromium || missing+=(chromium fonts-dejavu-core)  # tests/ui/test_browser.py (Playwright)
have redis-server || missing+=(redis-server)            # the Redis state and the cluster tests
have rabbitmq-server || missing+=(rabbitmq-server)      # the AMQP bus and the cluster tests

if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo -n apt-get); else apt=(); fi
  if ((${#apt[@]})) && command -v apt-get >/dev/null; then
    echo "installing for the tests (a few minutes the first time): ${missing[*]}"
    # slapd must not ask for an admin password: its tests configure their own server.
    "${apt[@]}" update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${missing[@]}" >/dev/null \
      || echo "could not install ${missing[*]}: the tests that need them skip (fail when CI=true)" >&2
  else
    echo "missing: ${missing[*]} (apt-get install them as root): the tests that need them skip" >&2
  fi
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@" 2>/dev/null; fi; }
if ! port_open 6379 && have redis-server; then
  echo "starting redis on 127.0.0.1:6379"
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/biomaj-test-redis.log && wait_port 6379 30
fi
if ! port_open 5672 && have rabbitmq-server; then
  echo "starting rabbitmq on 127.0.0.1:5672"
  as_root rabbitmq-server -detached && wait_port 5672 120
fi
exit 0
