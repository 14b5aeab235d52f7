#!/usr/bin/env bash
# The whole LogMemcached test suite (the README's test command; CI runs it).
# Installs what it needs when missing, then runs, in order:
#   0. cargo fmt --check and cargo clippy --all-targets -D warnings
#   1. cargo test               unit + integration tests (TCP, shm replication,
#                               the layer order of src/: tests/layering.rs), then
#                               the TCP suites again under --io epoll
#   1b. loom                    the model of the log's publish/clean/read
#                               protocol (tests/loom_log.rs, its own cfg build)
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

step "format and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "cargo test"
cargo build --all-targets
cargo test --no-fail-fast 2>&1 | tee /tmp/logmemcached-cargo-test.log
export LOGMEMCACHED_BIN=$PWD/target/debug/logmemcached

# The run above takes --io auto, io_uring where it works (tests/io_modes.rs
# checks the choice and runs --io uring explicitly); the TCP suites run again
# under --io epoll, so the fallback stays covered too.
step "TCP suites under --io epoll"
tcp_suites="--test server_basics --test text_protocol --test binary_protocol --test meta_protocol --test idle_timeout --test load --test operations --test watch --test sync_group_commit --test store_semantics --test admin"
# shellcheck disable=SC2086
LOGMEMCACHED_TEST_IO=epoll cargo test --no-fail-fast $tcp_suites 2>&1 | tee /tmp/logmemcached-io-modes.log

step "loom model of the log's atomics"
# --cfg loom changes every crate's flags: its own target directory keeps the
# main build's cache intact.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --test loom_log 2>&1 | tee /tmp/logmemcached-loom.log

step "memccapable (text and binary)"
bash tests/conformance/memccapable.sh all 2>&1 | tee /tmp/logmemcached-memccapable.log

step "Python clients"
"$venv/bin/python" -m pytest -q tests/clients 2>&1 | tee /tmp/logmemcached-pytest.log

step "RDMA verbs suite in a Soft-RoCE VM"
bash tests/run-vm-suite.sh 2>&1 | tee /tmp/logmemcached-vm.log

step "all suites passed"
# One closing line over every suite (libtest "test result" lines from cargo and
# the VM, memccapable's summary, pytest's): reaching here means none failed.
sum_libtest() { grep -ao 'test result: [^ ]*ok[^ ]*\. [0-9]* passed; [0-9]* failed' "$1" | awk '{p+=$4; f+=$6} END {print p+0, f+0}'; }
read -r cp cf < <(sum_libtest /tmp/logmemcached-cargo-test.log)
read -r ip if_ < <(sum_libtest /tmp/logmemcached-io-modes.log)
cp=$((cp + ip)); cf=$((cf + if_))
read -r lp lf < <(sum_libtest /tmp/logmemcached-loom.log)
read -r vp vf < <(sum_libtest /tmp/logmemcached-vm.log)
mp=$(grep -ao 'memccapable ([a-z]*): [0-9]* passed' /tmp/logmemcached-memccapable.log | awk '{print $3}' | tail -1)
pp=$(grep -aoE '[0-9]+ passed' /tmp/logmemcached-pytest.log | tail -1 | awk '{print $1}')
echo "suites: $((cp + lp + vp + ${mp:-0} + ${pp:-0})) passed, $((cf + lf + vf)) failed"
