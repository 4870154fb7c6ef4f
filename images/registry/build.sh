#!/usr/bin/env bash
# Builds the image lks/registry:2 offline: a Docker registry with the interface
# of the upstream registry:2 image (port 5000, storage in /var/lib/registry,
# `serve /etc/docker/registry/config.yml`), made from the host's
# /usr/bin/docker-registry (Debian package docker-registry) and the shared
# libraries it links, FROM scratch. Nothing is pulled from Docker Hub.
#
#   images/registry/build.sh            build unless lks/registry:2 exists
#   images/registry/build.sh --force    build again
#
# Needs a running Docker engine; installs docker-registry with apt-get (as
# root) when /usr/bin/docker-registry is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
image=lks/registry:2
bin=/usr/bin/docker-registry
pidfile=/var/run/docker-registry.pid

force=
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "images/registry/build.sh: unknown argument '$arg' (usage: build.sh [--force])" >&2; exit 2 ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    echo "images/registry/build.sh: the Docker engine is not running (docker info fails)" >&2
    exit 1
fi
if [ -z "$force" ] && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

# Stops the registry service that the Debian package's postinst may start
# (through its init script, listening on :5000): the tests run their own
# registry container on that port. Only processes running $bin are stopped,
# each by its PID.
stop_packaged_registry() {
    local pids="" pid
    [ -f "$pidfile" ] && pids="$(cat "$pidfile" 2>/dev/null || true)"
    if command -v ss >/dev/null 2>&1; then
        pids="$pids $(ss -Hltnp 'sport = :5000' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 || true)"
    fi
    for pid in $pids; do
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$bin" ] || continue
        echo "images/registry/build.sh: stopping the docker-registry service the package started (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    done
    rm -f "$pidfile"
}

if [ ! -x "$bin" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "images/registry/build.sh: $bin is missing; install the Debian package docker-registry (as root: apt-get install docker-registry)" >&2
        exit 1
    fi
    echo "images/registry/build.sh: installing docker-registry"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 DEBCONF_NOWARNINGS=yes apt-get install -y -qq docker-registry >/dev/null
    stop_packaged_registry
fi

start=$SECONDS
ctx="$(mktemp -d "${TMPDIR:-/tmp}/lks-registry-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/bin" "$root/etc/docker/registry" "$root/var/lib/registry" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin" "$root/bin/registry"
cp "$here/config.yml" "$root/etc/docker/registry/config.yml"
cp "$here/Dockerfile" "$ctx/Dockerfile"

# The shared libraries (`libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (...)`)
# and the dynamic loader (`/lib64/ld-linux-x86-64.so.2 (...)`), each copied
# (symlinks resolved) to the path ldd names, so the loader finds them in the
# image where it finds them on the host.
libs="$(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)" || true
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

# Quiet unless it fails (a newer docker CLI warns that the legacy builder,
# all that Debian's docker.io 20.10 has, is deprecated).
if ! out="$(docker build -q -t "$image" "$ctx" 2>&1)"; then
    printf '%s\n' "$out" >&2
    echo "images/registry/build.sh: docker build failed" >&2
    exit 1
fi
echo "images/registry/build.sh: built $image in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
