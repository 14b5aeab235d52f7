#!/usr/bin/env bash
# Install what building and testing LogMemcached needs, only what is missing.
# Debian 12 / Ubuntu, as root (or with sudo). Usage:
#   tests/install-deps.sh build   # compile: clang/libclang for bindgen, rdma-core headers
#   tests/install-deps.sh test    # + memcached, libmemcached-tools, Python clients, QEMU for the RDMA VM
set -euo pipefail
what=${1:-test}

build_pkgs=(pkg-config clang libclang-dev libibverbs-dev librdmacm-dev ibverbs-providers)
test_pkgs=(memcached libmemcached-tools nutcracker perl libmemcached-dev zlib1g-dev python3-pip python3-venv
           qemu-system-x86 kmod cpio busybox-static iproute2 ibverbs-utils perftest rdma-core
           systemd)
pkgs=("${build_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found; install Rust stable (https://rustup.rs) first" >&2
    exit 1
fi

# CI checks formatting and lints (tests/run-all.sh).
if [ "$what" = test ] && command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi

if [ "$what" = test ]; then
    # Python clients in a project-local venv, so the system Python stays untouched.
    venv=${LOGMEMCACHED_VENV:-$HOME/.cache/logmemcached-venv}
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    # hdrhistogram (module hdrh): an independent reader for --latency-log files.
    if ! "$venv/bin/python" -c 'import pymemcache, pylibmc, pytest, hdrh' 2>/dev/null; then
        echo "install-deps: installing pymemcache, pylibmc, pytest, hdrhistogram into $venv"
        "$venv/bin/pip" install -q pymemcache pylibmc pytest hdrhistogram
    fi
fi
