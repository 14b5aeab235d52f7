#!/usr/bin/env bash
# The whole LogMemcached test suite (the README's test command; CI runs it).
# Installs what it needs when missing, then runs, in order:
#   1. cargo test               unit + integration tests (TCP, shm replication)
#   2. memccapable              memcached's own conformance tool, text and binary
#   3. Python clients           pymemcache (text) and pylibmc (binary) round trips
#   4. RDMA VM suite            verbs tests on Soft-RoCE in a throw-away QEMU VM
# LOGMEMCACHED_SKIP_VM=1 skips step 4 (and says so loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==== %s (%ss) ====\n' "$*" $(( $(date +%s) - start )); }

step "installing missing dependencies"
bash tests/install-deps.sh test
venv=${LOGMEMCACHED_VENV:-$HOME/.cache/logmemcached-venv}

# Tests that need a real peer (memcached, clients) fail instead of skipping.
export LOGMEMCACHED_REQUIRE_PEERS=1

step "cargo test"
cargo build --all-targets
cargo test --no-fail-fast 2>&1 | tee /tmp/logmemcached-cargo-test.log
export LOGMEMCACHED_BIN=$PWD/target/debug/logmemcached

step "memccapable (text and binary)"
bash tests/conformance/memccapable.sh all

step "Python clients"
"$venv/bin/python" -m pytest -q tests/clients

step "RDMA verbs suite in a Soft-RoCE VM"
bash tests/run-vm-suite.sh

step "all suites passed"
