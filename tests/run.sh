#!/usr/bin/env bash
# Runs the whole lks test suite: unit tests, end-to-end tests against the real
# binaries, and a short smoke run of the benchmark. Installs what the tests need
# and is safe to run again (idempotent). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "tests/run.sh: '$1' is required: $2" >&2; exit 1; }; }
need cargo "install Rust with rustup (https://rustup.rs)"
need python3 "install python3 (apt-get install python3)"

# The example services and the lks up tests run Node.js and Go programs.
install_missing() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: '$1' is missing; install the Debian package '$2' (as root: apt-get install $2)" >&2
        exit 1
    fi
    echo "tests/run.sh: installing $2 (for '$1')"
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 DEBCONF_NOWARNINGS=yes apt-get install -y -qq "$2" >/dev/null
}
install_missing node nodejs
install_missing go golang-go
# The web page's tests drive a real headless Chromium over WebDriver.
install_missing chromium chromium
install_missing chromedriver chromium-driver

# kubernetes-validate (PyPI) checks every Kubernetes object lks renders
# against the API schemas (no cluster can run on these machines).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "tests/run.sh: installing kubernetes-validate (pip)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate
fi
command -v kubernetes-validate >/dev/null 2>&1 || {
    echo "tests/run.sh: kubernetes-validate is not on PATH after pip install (check pip's scripts directory)" >&2
    exit 1
}

# debugpy (PyPI): `lks up --debug` runs a Python app under it, and a test
# attaches to it with a DAP client.
if ! python3 -c "import debugpy" >/dev/null 2>&1; then
    echo "tests/run.sh: installing debugpy (pip)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore debugpy \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages debugpy
fi

# The Docker engine (Debian's docker.io), started when it is not running.
install_missing dockerd docker.io
if ! docker info >/dev/null 2>&1; then
    echo "tests/run.sh: starting dockerd (log: target/dockerd.log)"
    # A dockerd that was killed leaves its pid file behind, and a new one
    # refuses to start while it is there.
    pgrep -x dockerd >/dev/null || rm -f /var/run/docker.pid
    mkdir -p target
    nohup dockerd >target/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
        echo "tests/run.sh: dockerd did not start; the end of target/dockerd.log:" >&2
        tail -20 target/dockerd.log >&2
        exit 1
    fi
fi

# The images the docker tests and examples run, built offline (nothing comes
# from Docker Hub; see images/README.md): lks/registry:2, a registry:2 made
# from Debian's docker-registry, and lks/debian:bookworm, a Debian with node
# and python3 made with debootstrap. The build scripts do nothing when their
# image exists, and so are the tools they need only installed then.
docker image inspect lks/registry:2 >/dev/null 2>&1 || install_missing docker-registry docker-registry
docker image inspect lks/debian:bookworm >/dev/null 2>&1 || install_missing debootstrap debootstrap
# The docker-registry package's postinst may start its service on :5000, where
# the tests run their own registry container: stop it, by PID (the init
# script's pid file, or the process listening on :5000 if it is that binary).
stop_packaged_registry() {
    local pids="" pid
    [ -f /var/run/docker-registry.pid ] && pids="$(cat /var/run/docker-registry.pid 2>/dev/null || true)"
    command -v ss >/dev/null 2>&1 && pids="$pids $(ss -Hltnp 'sport = :5000' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 || true)"
    for pid in $pids; do
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/docker-registry ] || continue
        echo "tests/run.sh: stopping the docker-registry service on :5000 (pid $pid), the tests need the port"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    done
    if [ -f /var/run/docker-registry.pid ] && [ "$(id -u)" = 0 ]; then rm -f /var/run/docker-registry.pid; fi
}
stop_packaged_registry
images/registry/build.sh
images/base/build.sh

# The real-cluster tier: a single-node Kubernetes (v1.36) from
# ../shared/k8s/up.sh, which installs its own prerequisites; stopped at the
# end, also on failure (when this script started it). Elsewhere the tier
# uses LKS_TEST_KUBECONFIG; without either it says loudly that it did not
# run, and in CI (CI=true) that is a failure.
install_missing kubectl kubernetes-client
# ../shared beside the checkout, else the machines' own copy.
shared_k8s=""
for d in "${LKS_SHARED_DIR:-}" "$(cd .. && pwd)/shared" /work/shared; do
    if [ -n "$d" ] && [ -f "$d/k8s/up.sh" ]; then shared_k8s="$d/k8s"; break; fi
done
cluster_tier_missing=
if [ -n "${LKS_TEST_KUBECONFIG:-}" ]; then
    echo "tests/run.sh: the real-cluster tests use LKS_TEST_KUBECONFIG=$LKS_TEST_KUBECONFIG"
elif [ -n "$shared_k8s" ]; then
    k8s_dir="${LKS_K8S_DIR:-/tmp/lks-k8s}"
    # The kubelet answers its healthz on 127.0.0.1:10248.
    kubelet_up() {
        for _ in $(seq "${1:-40}"); do
            curl -fsS --max-time 2 http://127.0.0.1:10248/healthz >/dev/null 2>&1 && return 0
            sleep 0.5
        done
        return 1
    }
    mkdir -p target
    started_here=
    if [ -f "$k8s_dir/kube-apiserver.pid" ] && kill -0 "$(cat "$k8s_dir/kube-apiserver.pid")" 2>/dev/null \
        && kubelet_up 1; then
        echo "tests/run.sh: using the test cluster that runs already ($k8s_dir)"
    else
        # A fresh cluster each time this script starts one: restarting an old
        # $k8s_dir can start the kubelet before containerd's CRI is up, and
        # nothing earlier runs can leave (namespaces, images) gets in the way.
        started_here=1
        for attempt in 1 2; do
            echo "tests/run.sh: starting a fresh test cluster ($shared_k8s/up.sh, log: target/k8s-up.log)"
            bash "$shared_k8s/down.sh" >/dev/null 2>&1 || true
            rm -rf "$k8s_dir" 2>/dev/null || true
            if bash "$shared_k8s/up.sh" >target/k8s-up.log 2>&1 && kubelet_up; then
                break
            fi
            if [ "$attempt" = 2 ]; then
                echo "tests/run.sh: the test cluster did not start; the end of target/k8s-up.log:" >&2
                tail -30 target/k8s-up.log >&2
                exit 1
            fi
            echo "tests/run.sh: the test cluster did not come up; once more"
        done
    fi
    if [ -n "$started_here" ]; then
        trap 'echo "tests/run.sh: stopping the test cluster"; bash "$shared_k8s/down.sh" >/dev/null 2>&1 || true' EXIT
    fi
    LKS_TEST_KUBECONFIG="$k8s_dir/kubeconfig"
    export LKS_TEST_KUBECONFIG
else
    if [ "${CI:-}" = true ]; then
        echo "tests/run.sh: CI=true but there is no cluster for the real-cluster tests: no shared/k8s/up.sh (../shared, /work/shared, \$LKS_SHARED_DIR) and no LKS_TEST_KUBECONFIG" >&2
        exit 1
    fi
    cluster_tier_missing="tests/run.sh: *** the real-cluster tests did NOT run: no shared/k8s/up.sh (looked in ../shared, /work/shared, \$LKS_SHARED_DIR); set LKS_TEST_KUBECONFIG to the kubeconfig of a local cluster (kind, k3d, minikube) to run them ***"
    echo "$cluster_tier_missing" >&2
fi

# The end-to-end tests run the real binaries: build them first, and the
# static agent that FROM-scratch images get (glibc, statically linked: this
# toolchain has no musl target).
cargo build --workspace --bins --locked
RUSTFLAGS="-C target-feature=+crt-static" cargo build -p lks-agent --target x86_64-unknown-linux-gnu --locked
cargo test --workspace --locked -- --test-threads=2
# A short smoke run of the sync benchmark (the full run is in the README).
cargo run -p lks-e2e --bin lks-bench --locked -- --smoke
cargo run -p lks-e2e --bin lks-bench-up --locked -- --smoke
cargo run -p lks-e2e --bin lks-bench-scale --locked -- --smoke
cargo run -p lks-e2e --bin lks-bench-ui --locked -- --smoke
cargo run -p lks-e2e --bin lks-bench-docker --locked -- --smoke
if [ -n "${LKS_TEST_KUBECONFIG:-}" ]; then
    cargo run -p lks-e2e --bin lks-bench-kube --locked -- --smoke
fi
if [ -n "$cluster_tier_missing" ]; then echo "$cluster_tier_missing" >&2; fi
