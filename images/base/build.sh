#!/usr/bin/env bash
# Builds the image lks/debian:bookworm offline, without Docker Hub: a minimal
# Debian 12 made with debootstrap from the Debian mirror, with Node.js,
# python3 + pip (`pip install` allowed: no PEP 668 marker), tar, sh/bash and
# ca-certificates. The docker tests and the examples run their services in it
# (in place of node:/python:/debian: images from Docker Hub).
#
#   images/base/build.sh            import unless lks/debian:bookworm exists
#   images/base/build.sh --force    debootstrap and import again
#
# The root filesystem tarball is kept in ${LKS_IMAGE_CACHE:-/var/cache/lks-images},
# so that a new Docker engine (or a removed image) only needs the import
# (seconds), not debootstrap (minutes). The mirror is the one of the host's
# apt sources for bookworm (http://deb.debian.org/debian when none is found);
# LKS_DEBIAN_MIRROR overrides it. Needs root (debootstrap, chroot) to build
# the tarball, installs debootstrap with apt-get when missing, and needs a
# running Docker engine.
set -euo pipefail

image=lks/debian:bookworm
suite=bookworm
packages=nodejs,python3,python3-pip,ca-certificates
cache_dir="${LKS_IMAGE_CACHE:-/var/cache/lks-images}"
# The tarball's name changes with what goes into it, so that a stale one is
# not imported after this script changes what it builds.
key="$(printf '%s\n' "$suite" "$packages" slim-2 | sha256sum | cut -c1-12)"
tarball="$cache_dir/debian-$suite-$key.tar"

log() { echo "images/base/build.sh: $*"; }
die() { echo "images/base/build.sh: $*" >&2; exit 1; }

force=
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "images/base/build.sh: unknown argument '$arg' (usage: build.sh [--force])" >&2; exit 2 ;;
    esac
done

docker info >/dev/null 2>&1 || die "the Docker engine is not running (docker info fails)"
if [ -z "$force" ] && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

# The http(s)/file URI of the first enabled 'deb' source for $suite, in the
# deb822 *.sources files or the one-line sources.list format.
detect_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^[ \t]*#/ || !match($i, /^[A-Za-z-]+:/)) continue
                    k = tolower(substr($i, 1, RLENGTH - 1)); v = substr($i, RLENGTH + 1)
                    if (k == "types") types = v; else if (k == "uris") uris = v
                    else if (k == "suites") suites = v; else if (k == "enabled") enabled = v
                }
                if (enabled ~ /[Nn][Oo]/ || types !~ /(^|[ \t])deb([ \t]|$)/) next
                n = split(suites, s, /[ \t]+/); ok = 0
                for (j = 1; j <= n; j++) if (s[j] == suite) ok = 1
                if (!ok) next
                n = split(uris, u, /[ \t]+/)
                for (j = 1; j <= n; j++) if (u[j] ~ /^(https?|file):/) { print u[j]; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite && $i ~ /^(https?|file):/) { print $i; exit }
            }' "$f"
    done
}

total=$SECONDS
if [ -n "$force" ] || [ ! -s "$tarball" ]; then
    [ "$(id -u)" = 0 ] || die "building the root filesystem needs root (debootstrap); run as root"
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 DEBCONF_NOWARNINGS=yes apt-get install -y -qq debootstrap >/dev/null
    fi
    mirror="${LKS_DEBIAN_MIRROR:-$(detect_mirror | head -1)}"
    mirror="${mirror:-http://deb.debian.org/debian}"

    mkdir -p "$cache_dir"
    work="$(mktemp -d "$cache_dir/.rootfs.XXXXXX")"
    rootfs="$work/rootfs"
    # debootstrap mounts /proc and /sys (and may bind /dev) inside the root
    # filesystem: unmount whatever is left there before removing it, and never
    # cross into another file system while removing.
    cleanup() {
        awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf --one-file-system "$work"
    }
    trap cleanup EXIT

    log "debootstrap $suite from $mirror (log: $work/debootstrap.log while it runs)"
    t=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -30 "$work/debootstrap.log" >&2
        [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -30 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    log "debootstrap took $((SECONDS - t))s"

    # Slim it down: no package caches, apt lists, docs (but the copyright
    # files), man pages, translations or logs; and keep it so when packages
    # are installed in the image later (as Debian's official slim images do).
    t=$SECONDS
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian \
        "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/var/log" -type f -delete
    mkdir -p "$rootfs/var/lib/apt/lists/partial"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/lks-slim" <<'EOF'
# lks/debian:bookworm (images/base/build.sh): no docs, man pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/lks-clean" <<'EOF'
// lks/debian:bookworm (images/base/build.sh): no package cache, no translations.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
    # Like the python: images, let `pip install` install into the system
    # Python: PEP 668 lets container images drop this marker.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    # debootstrap copies the host's resolv.conf and hostname; Docker provides
    # its own in each container.
    rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
    if awk -v r="$rootfs/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        die "file systems are still mounted under $rootfs"
    fi
    tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$tarball"
    # Tarballs of earlier versions of this script.
    find "$cache_dir" -maxdepth 1 -name "debian-$suite-*.tar" ! -name "$(basename "$tarball")" -delete
    log "slimmed and packed in $((SECONDS - t))s: $tarball ($(du -m "$tarball" | cut -f1) MB)"
    cleanup
    trap - EXIT
else
    log "importing the cached $tarball"
fi

t=$SECONDS
old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
new_id="$(docker import --change 'CMD ["/bin/bash"]' "$tarball" "$image")"
log "docker import took $((SECONDS - t))s"
# The image this replaces (--force), unless a container still uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then docker image rm "$old_id" >/dev/null 2>&1 || true; fi

# What the tests rely on.
if ! versions="$(docker run --rm "$image" sh -c \
        'echo "node $(node --version), $(python3 --version), $(python3 -m pip --version | cut -d" " -f1-2), $(tar --version | head -1)"' 2>&1)"; then
    printf '%s\n' "$versions" >&2
    docker image rm "$image" >/dev/null 2>&1 || true
    die "$image lacks node, python3 -m pip, tar or sh"
fi
log "built $image in $((SECONDS - total))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')): $versions"
