#!/usr/bin/env bash
# docker/smoke.sh (`make container-test`): build biomaj's image and run it for real, as root.
#
#  1. The engine: docker when a daemon answers, else podman (installed with apt-get when missing,
#     with the adjustments a machine without systemd or with cgroup v1 needs, each said as it is made).
#  2. The base image the Dockerfile names (ARG PYTHON_IMAGE): used when present; else a stand-in is
#     made: debootstrap of Debian trixie (Python 3.13) imported under that tag. The stand-in takes a
#     copy of this host's CA bundle so that pip works behind a TLS-inspecting proxy: that belongs to
#     the stand-in only, never to the Dockerfile.
#  3. The image, built from the Dockerfile, tagged biomaj:latest (the name docker-compose.yml uses).
#  4. Single node: /healthz within 20 s, `ctl update example` inside the container, the release on
#     the volume, a graceful stop on SIGTERM within 10 s, a restarted and a recreated container
#     finding the same state; the environment overrides (BIOMAJ_X_Y_Z, WEB_PORT, BIOMAJ_CONFIG).
#  5. Scale-out on this host's RabbitMQ (127.0.0.1:5672, guest, in a vhost of its own) and Redis
#     (127.0.0.1:6379, under a key prefix of its own), host networking: manager+web and two download
#     containers, three nodes in `ctl nodes`, a 200-file bank from a local HTTP server split between
#     the download containers, one of them killed mid-update, every file in the release.
#  6. docker-compose.yml valid against the compose specification's schema, and naming the commands
#     that step 5 ran.
# Every check prints one line; the run ends with "N passed, N failed". Containers, volumes, the vhost,
# the Redis keys and the temporary folder are removed at the end, whatever happened; the base and
# biomaj:latest images are kept (SMOKE_REMOVE_IMAGES=1 removes them too).
# Settings: SMOKE_ENGINE=podman|docker, SMOKE_KEEP=1 (keep the temporary folder, for debugging).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
id="biomaj-smoke-$$"
image="biomaj:latest"
base_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile | head -1)
work=$(mktemp -d /tmp/biomaj-smoke.XXXXXX)
passed=0
failed=0

say() { printf '==> %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok   %s: %s\n' "$1" "$2"; }
fail() {
    failed=$((failed + 1))
    printf 'FAIL %s: %s\n' "$1" "$2"
    shift 2
    for container in "$@"; do
        echo "---- last lines of ${container}'s log"
        "${engine[@]}" logs "$container" 2>&1 | grep -v 'systemd' | tail -25 || true
    done
    exit 1
}
die() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))' "$1"; }
healthz() { curl -sf --max-time 2 "http://127.0.0.1:$1/healthz" 2>/dev/null | grep -q '"status": "ok"'; }

# --- clean-up, whatever happens --------------------------------------------------------------------
remote_pid=""
update_pid=""
vhost_made=""
dangling_before=""
engine=()
cleanup() {
    local code=$?
    set +e
    trap - EXIT INT TERM
    echo "==> cleaning up"
    [ -n "$update_pid" ] && kill "$update_pid" 2>/dev/null
    [ -n "$remote_pid" ] && kill "$remote_pid" 2>/dev/null && wait "$remote_pid" 2>/dev/null
    if ((${#engine[@]})); then
        for c in $("${engine[@]}" ps -a --filter "name=$id" --format '{{.Names}}' 2>/dev/null); do
            "${engine[@]}" rm -f "$c" >/dev/null 2>&1
        done
        for v in $("${engine[@]}" volume ls --filter "name=$id" --format '{{.Name}}' 2>/dev/null); do
            "${engine[@]}" volume rm -f "$v" >/dev/null 2>&1
        done
        # only the dangling images this run left (the build stage), never another user's
        for img in $("${engine[@]}" images -q --filter dangling=true 2>/dev/null | sort -u); do
            grep -qx "$img" <<<"$dangling_before" || "${engine[@]}" rmi -f "$img" >/dev/null 2>&1
        done
        if [ "${SMOKE_REMOVE_IMAGES:-0}" = 1 ]; then
            "${engine[@]}" rmi -f "$image" >/dev/null 2>&1
            [ "$("${engine[@]}" image inspect -f '{{index .Config.Labels "org.biomaj.stand-in-base"}}' "$base_image" 2>/dev/null)" = yes ] \
                && "${engine[@]}" rmi -f "$base_image" >/dev/null 2>&1
        fi
    fi
    [ -n "$vhost_made" ] && rabbitmqctl -q delete_vhost "$id" >/dev/null 2>&1
    if command -v redis-cli >/dev/null; then
        redis-cli -h 127.0.0.1 --scan --pattern "$id:*" 2>/dev/null | xargs -r -n 100 redis-cli -h 127.0.0.1 del >/dev/null 2>&1
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
    echo "$passed passed, $failed failed"
    echo "container-test took $(($(date +%s) - started)) s"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "setup: run as root (apt-get, debootstrap and rootful podman need it)"

# --- 1. the engine ------------------------------------------------------------------------------------
apt_install() {
    command -v apt-get >/dev/null || die "setup: $* missing and no apt-get here: install them"
    say "installing with apt-get: $*"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || die "setup: apt-get install $* failed"
}

if [ "${SMOKE_ENGINE:-}" != podman ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=(docker)
    say "engine: docker (a daemon answers)"
else
    [ "${SMOKE_ENGINE:-}" = docker ] && die "setup: SMOKE_ENGINE=docker but no Docker daemon answers"
    engine=(podman)
    need=()
    command -v podman >/dev/null || need+=(podman)
    if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
        # cgroup v1 or a hybrid layout: crun (podman's default on Debian) refuses it, runc works
        command -v runc >/dev/null || need+=(runc)
        engine+=(--runtime runc)
        say "podman: cgroup v1/hybrid layout here: --runtime runc"
    fi
    if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
        engine+=(--cgroup-manager=cgroupfs)
        say "podman: systemd is not PID 1: --cgroup-manager=cgroupfs"
    fi
    ((${#need[@]})) && apt_install "${need[@]}"
    conf=/etc/containers/containers.conf
    if ! (ulimit -Hn 1048576) 2>/dev/null && ! grep -qs '^[[:space:]]*default_ulimits' "$conf"; then
        # rootful podman raises NOFILE/NPROC in every container by default; this machine forbids it
        say "podman: this machine cannot raise NOFILE/NPROC: writing 'default_ulimits = []' in $conf"
        mkdir -p /etc/containers
        if grep -qs '^\[containers\]' "$conf"; then
            sed -i '/^\[containers\]/a default_ulimits = []' "$conf"
        else
            printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
        fi
    fi
    say "engine: ${engine[*]} ($(podman --version))"
fi
E() { "${engine[@]}" "$@"; }

# --- 2. the base image -----------------------------------------------------------------------------
if E image inspect "$base_image" >/dev/null 2>&1; then
    say "base image $base_image: present ($(E image inspect -f '{{.Id}}' "$base_image" | cut -c1-19))"
else
    say "base image $base_image: absent, no registry to pull it from: making a stand-in (Debian trixie, Python 3.13)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    rootfs="$work/base"
    t0=$(now)
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
        trixie "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; die "base: debootstrap of trixie failed"; }
    # the stand-in only: this host's CA bundle (it may hold a TLS proxy's CA) so that pip reaches PyPI
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # as small as a -slim image: no apt lists or caches, no docs, man pages or translations
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$rootfs" -c . | E import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --change 'LABEL org.biomaj.stand-in-base=yes' - "$base_image" >"$work/import.log" 2>&1 \
        || { cat "$work/import.log"; die "base: import failed"; }
    rm -rf "$rootfs"
    ok "stand-in base" "$base_image from debootstrap trixie ($(E run --rm --network host "$base_image" python3 -V 2>/dev/null)), $(E image inspect -f '{{.Size}}' "$base_image" | awk '{printf "%.0f MB", $1/1e6}') in $(since "$t0") s"
fi

# can this machine run a container at all? (else the reason, not a build log)
probe=$(E run --rm --network host --entrypoint python3 "$base_image" -c 'print("container runs")' 2>&1) || true
grep -q "container runs" <<<"$probe" \
    || die "setup: this machine cannot run a container with ${engine[*]}: $(grep -v '^$' <<<"$probe" | tail -3 | tr '\n' ' ')"

# --- 3. the image ----------------------------------------------------------------------------------
dangling_before=$(E images -q --filter dangling=true 2>/dev/null | sort -u)
say "building $image"
t0=$(now)
format=()
# podman: Docker format (OCI images drop HEALTHCHECK), no intermediate layer images left behind
[ "${engine[0]}" = podman ] && format=(--format docker --layers=false)
E build "${format[@]}" --network host --build-arg "PYTHON_IMAGE=$base_image" -t "$image" . >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; die "build: the image did not build (log above)"; }
build_s=$(since "$t0")
size=$(E image inspect -f '{{.Size}}' "$image")
base_size=$(E image inspect -f '{{.Size}}' "$base_image")
ok "build" "$image in $build_s s: $((size / 1000000)) MB ($((base_size / 1000000)) MB base + $(((size - base_size) / 1000000)) MB biomaj), $(E run --rm --network host --entrypoint python3 "$image" -V 2>/dev/null)"
user=$(E image inspect -f '{{.Config.User}}' "$image")
[ "$user" = biomaj ] && ok "non-root" "runs as user $user ($(E run --rm --network host --entrypoint id "$image" 2>/dev/null))" \
    || fail "non-root" "the image runs as '$user'"
leaked=$(E run --rm --network host --entrypoint sh "$image" -c \
    'ls -d /opt/biomaj/lib/python3*/site-packages/tests /opt/biomaj/lib/python3*/site-packages/bench /src 2>/dev/null; ls /opt/biomaj/bin | grep -x pip' 2>/dev/null || true)
[ -z "$leaked" ] && ok "contents" "the venv and two scripts only: no tests, bench, docs, sources or pip" \
    || fail "contents" "the image holds: $leaked"

# --- 4. single node --------------------------------------------------------------------------------
say "single node: serve --all in one container, the /var/lib/biomaj volume"
single="$id-single"
E volume create "$single" >/dev/null
volume_dir=$(E volume inspect -f '{{.Mountpoint}}' "$single")
port=$(free_port)
run_single() {  # a container with the image's default command, on the volume
    E run -d --name "$single" --network host -e "WEB_PORT=$port" -v "$single:/var/lib/biomaj" "$image" \
        >/dev/null 2>>"$work/engine.err"
}
wait_healthz() {  # seconds to the first ok of /healthz on port $1 (at most $2 s), or fail
    local t0 deadline
    t0=$(now)
    deadline=$(($(date +%s) + $2))
    until healthz "$1"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
    since "$t0"
}
t0=$(now)
run_single
wait_healthz "$port" 20 >/dev/null || fail "healthz" "no answer on :$port within 20 s" "$single"
start_s=$(since "$t0")
ok "healthz" "GET http://127.0.0.1:$port/healthz ok $start_s s after \`run\` (first start: biomaj init included; WEB_PORT=$port)"
if [ "${engine[0]}" = podman ]; then
    E healthcheck run "$single" >/dev/null 2>>"$work/engine.err" && ok "HEALTHCHECK" "podman healthcheck run: healthy" \
        || fail "HEALTHCHECK" "the image's healthcheck says unhealthy" "$single"
else
    E exec "$single" python3 /usr/local/lib/biomaj-healthcheck.py >/dev/null && ok "HEALTHCHECK" "its command: healthy" \
        || fail "HEALTHCHECK" "the image's healthcheck command says unhealthy" "$single"
fi

out=$(E exec "$single" biomaj ctl update example 2>&1) || fail "ctl update" "exit $?: $out" "$single"
grep -q "release 1 updated" <<<"$out" && ok "ctl update" "docker exec ... biomaj ctl update example: $out" \
    || fail "ctl update" "unexpected: $out" "$single"

out=$(E exec "$single" biomaj users create smoke --email smoke@example.org --admin 2>&1) || fail "users create" "$out"
grep -q 'bmj_' <<<"$out" && ok "users create" "biomaj users create smoke --admin: an API key printed (bmj_...), once" \
    || fail "users create" "no API key in: $out"
# BioMAJ 3's habits: biomaj-users (the console script in the image) and the /status page
out=$(printf 'a smoke password\n' | E exec -i "$single" biomaj-users --action create --user smoke3 \
    --email smoke3@example.org --password-stdin 2>&1) || fail "biomaj-users" "exit $?: $out"
key=$(grep -o 'bmj_[A-Za-z0-9_-]*' <<<"$out" | head -1)
viewed=$(E exec "$single" biomaj-users -A view -U smoke3 2>&1 || true)
grep -q "User successfully created" <<<"$out" && [ -n "$key" ] && grep -q "smoke3@example.org" <<<"$viewed" \
    && ok "biomaj-users" "biomaj-users --action create --user smoke3 --email ... --password-stdin: User successfully created, API key ${key:0:8}...; -A view lists it" \
    || fail "biomaj-users" "$out / $viewed"
status_json=$(curl -sf --max-time 5 -H 'Accept: application/json' "http://127.0.0.1:$port/status" || true)
status_html=$(curl -sf --max-time 5 "http://127.0.0.1:$port/status" || true)
shown=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
assert s["ok"] and s["nodes"] and all("host" not in n for n in s["nodes"]), s
print(", ".join("%s %s" % (r["service"], r["status"]) for r in s["services"]) + "; nodes:", " ".join(n["node_id"] for n in s["nodes"]))' \
    "$status_json" 2>&1) && grep -q "<h1>biomaj services status</h1>" <<<"$status_html" \
    && ok "/status" "anonymous GET /status: an HTML page; with Accept: application/json: $shown (no host shown)" \
    || fail "/status" "$shown; html: ${status_html:0:200}" "$single"

current=$(readlink "$volume_dir/data/example/current" || true)
files=$(ls "$volume_dir/data/example/current/flat" 2>/dev/null | tr '\n' ' ')
[ "$current" = example_1 ] && [ -n "$files" ] \
    && ok "release on the volume" "data/example/current -> $current, flat/: $files(volume $volume_dir)" \
    || fail "release on the volume" "data/example/current -> '$current', files: '$files'" "$single"

t0=$(now)
E stop -t 10 "$single" >/dev/null 2>>"$work/engine.err"
stop_s=$(since "$t0")
code=$(E inspect -f '{{.State.ExitCode}}' "$single")
stopped=$(E logs "$single" 2>&1 | grep -c 'biomaj.node.serve: stopping' || true)
python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 10)" "$stop_s" && [ "$code" = 0 ] && [ "$stopped" -ge 1 ] \
    && ok "SIGTERM" "stop -t 10: stopped gracefully in $stop_s s, exit code 0 (biomaj is PID 1 and got the signal)" \
    || fail "SIGTERM" "stop took $stop_s s, exit code $code (137: killed, not stopped)" "$single"

config_sum=$(sha256sum <"$volume_dir/config.yml")
check_same_state() {  # $1: how the container came back
    local waited out inits
    waited=$(wait_healthz "$port" 20) || fail "$1" "no /healthz within 20 s" "$single"
    inits=$(E logs "$single" 2>&1 | grep -c 'biomaj-entrypoint: no' || true)
    [ "$(sha256sum <"$volume_dir/config.yml")" = "$config_sum" ] || fail "$1" "config.yml changed" "$single"
    out=$(E exec "$single" biomaj ctl update example 2>&1) || fail "$1" "ctl update: $out" "$single"
    [ "$inits" -le 1 ] && ! grep -q "updated" <<<"$out" \
        && ok "$1" "healthy in $waited s, no new init, config.yml unchanged, ctl update example: $out" \
        || fail "$1" "init ran again ($inits) or the release was fetched again: $out" "$single"
}
E start "$single" >/dev/null 2>>"$work/engine.err"
check_same_state "restarted container"
E stop -t 10 "$single" >/dev/null 2>>"$work/engine.err"
E rm "$single" >/dev/null 2>>"$work/engine.err"
run_single
check_same_state "new container, same volume"
E stop -t 10 "$single" >/dev/null 2>>"$work/engine.err"

# BioMAJ 3's environment overrides, read inside the container
oneoff() { E run --rm --network host -v "$single:/var/lib/biomaj" "$@" 2>>"$work/engine.err"; }
out=$(oneoff -e BIOMAJ_USE_LDAP=1 "$image" ctl check example 2>&1) && code=0 || code=$?
grep -q "ldap.host is required" <<<"$out" && [ "$code" != 0 ] \
    || fail "BIOMAJ_X_Y_Z" "BIOMAJ_USE_LDAP=1 ctl check example: exit $code: $out"
out=$(oneoff -e BIOMAJ_USE_LDAP=1 -e BIOMAJ_LDAP_HOST=ldap.example.org -e BIOMAJ_LDAP_PORT=389 \
    -e BIOMAJ_LDAP_DN=dc=example,dc=org "$image" ctl check example 2>&1) \
    && ok "BIOMAJ_X_Y_Z" "BIOMAJ_USE_LDAP=1 makes ctl check example ask for ldap.host; with BIOMAJ_LDAP_HOST/PORT/DN: $(head -1 <<<"$out")" \
    || fail "BIOMAJ_X_Y_Z" "with BIOMAJ_LDAP_*: $out"
out=$(oneoff -e BIOMAJ_CONFIG=/var/lib/biomaj/site2/config.yml "$image" ctl banks 2>&1) \
    && [ -f "$volume_dir/site2/config.yml" ] && grep -q example <<<"$out" \
    && ok "BIOMAJ_CONFIG" "BIOMAJ_CONFIG=/var/lib/biomaj/site2/config.yml: the entrypoint made that root, ctl banks read it" \
    || fail "BIOMAJ_CONFIG" "$out"
# the entrypoint: one init for containers started together on a new root; a global.properties
# copied in before the first start is kept
for n in 1 2; do
    E run --rm --network host -v "$single:/var/lib/biomaj" -e BIOMAJ_CONFIG=/var/lib/biomaj/site3/config.yml \
        "$image" ctl banks >"$work/together.$n" 2>&1 &
done
wait %1 && wait %2 || fail "entrypoint" "two containers on a new root: $(cat "$work/together.1" "$work/together.2")"
inits=$(cat "$work/together.1" "$work/together.2" | grep -c '^biomaj-entrypoint: no' || true)
oneoff --entrypoint sh "$image" -c 'mkdir -p /var/lib/biomaj/site4/conf &&
    printf "[GENERAL]\n# copied from a BioMAJ 3 site\ndata.dir=/var/lib/biomaj/site4/data\n" >/var/lib/biomaj/site4/conf/global.properties'
# (not oneoff: the entrypoint says what init kept on the container's stderr)
out=$(E run --rm --network host -v "$single:/var/lib/biomaj" -e BIOMAJ_CONFIG=/var/lib/biomaj/site4/config.yml \
    "$image" ctl banks 2>&1 || true)
[ "$inits" = 1 ] && grep -q "copied from a BioMAJ 3 site" "$volume_dir/site4/conf/global.properties" \
    && [ -f "$volume_dir/site4/config.yml" ] && grep -q "kept the existing conf/global.properties" <<<"$out" \
    && ok "entrypoint" "two containers started together on a new root: one biomaj init; a copied global.properties kept (init: $(grep -o 'kept the existing conf/global.properties' <<<"$out"))" \
    || fail "entrypoint" "$inits inits for two containers; site4 global.properties: $(head -3 "$volume_dir/site4/conf/global.properties"); init said: $out"

# --- 5. scale-out ----------------------------------------------------------------------------------
say "scale-out: manager+web and two download containers on this host's RabbitMQ and Redis"
for service in "6379 redis-server redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir /tmp" \
               "5672 rabbitmq-server rabbitmq-server -detached"; do
    read -r p program start <<<"$service"
    port_open "$p" && continue
    command -v "$program" >/dev/null || die "scale-out: nothing answers on 127.0.0.1:$p and $program is not installed"
    say "starting $program (nothing answers on 127.0.0.1:$p)"
    eval "$start" >/dev/null
    for _ in $(seq 120); do port_open "$p" && break; sleep 1; done
    port_open "$p" || die "scale-out: $program did not start"
done
rabbitmqctl -q add_vhost "$id" >/dev/null && vhost_made=1
rabbitmqctl -q set_permissions -p "$id" guest '.*' '.*' '.*' >/dev/null
say "RabbitMQ vhost $id (deleted at the end), Redis keys under $id:* (deleted at the end)"

cluster="$id-cluster"
E volume create "$cluster" >/dev/null
cluster_dir=$(E volume inspect -f '{{.Mountpoint}}' "$cluster")
web_port=$(free_port)
manager="$id-manager"
downloads=("$id-download-1" "$id-download-2")
# The commands of docker-compose.yml's manager and download services (step 6 checks they agree).
manager_cmd=(serve --role manager,web,scheduler,process --node-id manager-1)
download_cmd=(serve --role download)
cluster_env=(-e RABBITMQ_HOST=127.0.0.1 -e RABBITMQ_USER=guest -e RABBITMQ_PASSWORD=guest -e "RABBITMQ_VHOST=$id"
             -e REDIS_HOST=127.0.0.1 -e "REDIS_PREFIX=$id" -e "WEB_PORT=$web_port")

# the remote: 200 files and a release file on a slowed-down local HTTP server
mkdir -p "$work/remote/smoke200"
python3 - "$work/remote/smoke200" <<'EOF'
import os, sys
for i in range(200):
    with open(os.path.join(sys.argv[1], f"part{i:03d}.dat"), "wb") as f:
        f.write(os.urandom(4096))
with open(os.path.join(sys.argv[1], "release.txt"), "w") as f:
    f.write("Release 1\n")
EOF
: >"$work/pids"
python3 docker/smoke_remote.py "$work/remote" --delay 0.1 --port-file "$work/remote.port" \
    --pids "$work/pids" --log "$work/requests.log" 2>"$work/remote.err" &
remote_pid=$!
for _ in $(seq 50); do [ -s "$work/remote.port" ] && break; sleep 0.1; done
remote_port=$(cat "$work/remote.port")

# the installation on the volume: init by the entrypoint, then a bank file and smaller limits
# (2 batches per node, 4 connections to the remote for the whole cluster) so that the 200 files
# spread over both download nodes
E run --rm --network host -v "$cluster:/var/lib/biomaj" "$image" ctl banks >/dev/null 2>>"$work/engine.err"
E run --rm -i --network host -v "$cluster:/var/lib/biomaj" --entrypoint python3 "$image" - 2>>"$work/engine.err" <<EOF
import yaml
path = "/var/lib/biomaj/config.yml"
settings = yaml.safe_load(open(path))
settings.setdefault("limits", {}).update({"downloads": 2, "per_host": 4})
open(path, "w").write(yaml.safe_dump(settings))
open("/var/lib/biomaj/conf/smoke200.properties", "w").write("""[GENERAL]
db.fullname="docker/smoke.sh: 200 files over HTTP"
db.name=smoke200
db.type=nucleic
dir.version=smoke200
offline.dir.name=offline/smoke200_tmp
protocol=http
server=127.0.0.1:$remote_port
remote.dir=/smoke200/
remote.files=^part.*\\\\.dat$ ^release\\\\.txt$
release.file=^release\\\\.txt$
release.regexp=Release\\\\s+(\\\\d+)
local.files=^part.*\\\\.dat$ ^release\\\\.txt$
keep.old.version=1
""")
EOF

E run -d --name "$manager" --network host "${cluster_env[@]}" -v "$cluster:/var/lib/biomaj" "$image" \
    "${manager_cmd[@]}" >/dev/null 2>>"$work/engine.err"
waited=$(wait_healthz "$web_port" 20) || fail "manager" "no /healthz within 20 s" "$manager"
for c in "${downloads[@]}"; do
    E run -d --name "$c" --network host --no-healthcheck "${cluster_env[@]}" -v "$cluster:/var/lib/biomaj" "$image" \
        "${download_cmd[@]}" >/dev/null 2>>"$work/engine.err"
done
for c in "$manager" "${downloads[@]}"; do
    echo "$(E inspect -f '{{.State.Pid}}' "$c") ${c#"$id-"}" >>"$work/pids"
done

deadline=$(($(date +%s) + 30))
while :; do
    nodes=$(E exec "$manager" biomaj ctl --json nodes 2>/dev/null || true)
    listed=$(python3 -c '
import json, sys
try:
    nodes = json.loads(sys.argv[1])
except ValueError:
    nodes = []
ids = {n["node_id"] for n in nodes}
shown = ["%s (%s, host %s, pid %s)" % (n["node_id"], ",".join(n["roles"]), n["host"], n["pid"]) for n in nodes]
print(len(ids), "; ".join(sorted(shown)))' "$nodes")
    [ "${listed%% *}" = 3 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "ctl nodes" "after 30 s: ${listed:-nothing}" "$manager" "${downloads[@]}"
    sleep 1
done
ok "ctl nodes" "3 distinct nodes: ${listed#* }"
status_json=$(curl -sf --max-time 5 -H 'Accept: application/json' "http://127.0.0.1:$web_port/status" || true)
shown=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
counts = {r["service"]: r["count"] for r in s["services"] if r["status"] == 1}
assert len(s["nodes"]) == 3 and counts.get("biomaj-download") == 2 and counts.get("biomaj-manager") == 1, s
print("%d nodes, biomaj-download count 2, biomaj-manager 1, backends %s" % (len(s["nodes"]), s["backends"]))' "$status_json" 2>&1) \
    && ok "/status (scale-out)" "$shown" || fail "/status (scale-out)" "$shown" "$manager"
keys=$(redis-cli -h 127.0.0.1 --scan --pattern "$id:*" | wc -l)
queues=$(rabbitmqctl -q list_queues -p "$id" name 2>/dev/null | grep -c '^biomaj\.' || true)
[ "$keys" -gt 0 ] && [ "$queues" -gt 0 ] \
    && ok "REDIS_PREFIX, RABBITMQ_*" "$keys Redis keys under $id:*, $queues biomaj.* queues in vhost $id (RABBITMQ_USER/PASSWORD guest)" \
    || fail "REDIS_PREFIX, RABBITMQ_*" "$keys keys under $id:*, $queues queues in vhost $id"

out=$(E exec "$manager" biomaj ctl check smoke200 2>&1) || fail "bank" "ctl check smoke200: $out"
E exec "$manager" biomaj ctl --json update smoke200 >"$work/update.json" 2>"$work/update.err" &
update_pid=$!
count() { grep -c "^$1 /smoke200/part" "$work/requests.log" || true; }
deadline=$(($(date +%s) + 60))
until [ "$(count download-1)" -ge 30 ] && [ "$(count download-2)" -ge 1 ]; do
    kill -0 "$update_pid" 2>/dev/null || fail "kill mid-update" "the update ended before download-1 fetched 30 files: $(cat "$work/update.err")" "$manager"
    [ "$(date +%s)" -lt "$deadline" ] || fail "kill mid-update" "download-1: $(count download-1), download-2: $(count download-2) files after 60 s" "$manager" "${downloads[@]}"
    sleep 0.2
done
E kill --signal KILL "${downloads[0]}" >/dev/null 2>>"$work/engine.err"
before1=$(count download-1)
before2=$(count download-2)
ok "kill mid-update" "download-1 SIGKILLed after fetching $before1 files (download-2: $before2, all: $(grep -c /smoke200/part "$work/requests.log") of 200)"
wait "$update_pid" && code=0 || code=$?
update_pid=""
state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("state"))' "$work/update.json" 2>/dev/null || true)
[ "$code" = 0 ] && [ "$state" = done ] || fail "update" "exit $code, state '$state': $(cat "$work/update.err" "$work/update.json")" "$manager" "${downloads[1]}"
release=$(readlink "$cluster_dir/data/smoke200/current" || true)
if diff <(cd "$work/remote/smoke200" && sha256sum part*.dat) \
        <(cd "$cluster_dir/data/smoke200/current/flat" 2>/dev/null && sha256sum part*.dat) >"$work/diff" 2>&1; then
    ok "update" "ctl update smoke200: done, exit 0; data/smoke200/current -> $release holds the 200 files, byte for byte"
else
    fail "update" "the release differs from the remote: $(head -5 "$work/diff")" "$manager"
fi
after1=$(count download-1)
after2=$(count download-2)
asked=$(grep -o '/smoke200/part[0-9]*\.dat' "$work/requests.log" | sort -u | wc -l)
by_node=$(grep -rh 'downloaded by node' "$cluster_dir/log/smoke200" 2>/dev/null | tail -1 | sed 's/.*downloaded by node: //')
[ "$after2" -gt "$before2" ] && [ "$after1" = "$before1" ] && [ "$asked" = 200 ] \
    && ok "split" "requests: download-1 $after1 (then killed), download-2 $after2 ($((after2 - before2)) after the kill), $asked distinct files; session log, downloaded by node: $by_node" \
    || fail "split" "download-1 $before1 -> $after1, download-2 $before2 -> $after2, $asked distinct files"
E stop -t 10 "$manager" "${downloads[1]}" >/dev/null 2>>"$work/engine.err"

# --- 6. the compose file -----------------------------------------------------------------------------
say "docker-compose.yml against the compose specification (throwaway venv: check-jsonschema, podman-compose)"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q check-jsonschema podman-compose >"$work/pip.log" 2>&1 \
    || { tail -5 "$work/pip.log"; die "compose: pip install check-jsonschema podman-compose failed"; }
out=$("$work/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml 2>&1) \
    && ok "compose schema" "check-jsonschema $("$work/venv/bin/check-jsonschema" --version | awk '{print $NF}') --builtin-schema vendor.compose-spec: $out" \
    || fail "compose schema" "$out"
if command -v podman >/dev/null; then
    "$work/venv/bin/podman-compose" -f docker-compose.yml config >"$work/compose.yml" 2>"$work/compose.err" \
        || fail "compose config" "podman-compose config: $(tail -5 "$work/compose.err")"
    ok "compose config" "$("$work/venv/bin/podman-compose" version 2>/dev/null | grep -i 'podman-compose version' | head -1) config: parsed, $(grep -c '^  [a-z]' "$work/compose.yml") entries"
    normalized="$work/compose.yml"
else
    normalized=docker-compose.yml
fi
out=$("$work/venv/bin/python" - "$normalized" "${manager_cmd[*]}" "${download_cmd[*]}" <<'EOF'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
problems = []
for name, ran in (("manager", sys.argv[2]), ("download", sys.argv[3])):
    command = services[name].get("command")
    command = " ".join(command) if isinstance(command, list) else command
    if command != ran:
        problems.append(f"{name}: compose runs {command!r}, the smoke test ran {ran!r}")
    if not any(str(v).endswith(":/var/lib/biomaj") or (isinstance(v, dict) and v.get("target") == "/var/lib/biomaj")
               for v in services[name].get("volumes", [])):
        problems.append(f"{name}: no volume on /var/lib/biomaj")
if not services["download"].get("healthcheck", {}).get("disable"):
    problems.append("download: its healthcheck is not disabled (it has no web role)")
print("; ".join(problems) or f"manager: {sys.argv[2]}; download: {sys.argv[3]}")
sys.exit(1 if problems else 0)
EOF
) && ok "compose commands" "the same as the smoke test ran: $out" || fail "compose commands" "$out"

echo "image: $image, $((size / 1000000)) MB, built in $build_s s; first /healthz $start_s s after \`run\`"
