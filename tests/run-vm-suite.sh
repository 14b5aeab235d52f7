#!/bin/bash
# tests/run-vm-suite.sh - the real-verbs part of the test suite.
#
# Builds the test binaries on the host (`cargo test --no-run`), boots a
# throw-away QEMU VM with Soft-RoCE (tests/vm/rdma-vm.sh; ~6 s per boot under
# TCG), and runs inside it, two processes on rxe0:
#   - the rdma:: unit tests of the library (device list, print_devices, ...),
#   - tests/verbs.rs with --include-ignored (RC READ/WRITE of a 4 MiB huge-page
#     region, UD round trip with address handles, a peer killed mid-transfer, bad rkey),
#   - tests/replication_processes.rs over verbs (LOGMEMCACHED_REPL_TRANSPORT=rdma),
#   - tests/rdma_client.rs with --include-ignored (the RDMA client against the
#     server's --rdma-listen endpoint: UD, RC, loss, replicas, bad datagrams),
#   - tests/faults (the fault campaign) over verbs, shorter than on the host:
#     LOGMEMCACHED_VM_FAULTS_SECS per mode (default 20), LOGMEMCACHED_VM_FAULTS_ARGS
#     a libtest filter,
# then, in two VMs joined by a private link, tests/vm/failover-pair.sh (3
# rounds of kill -9 of the primary's process with a --promote-after standby
# in the other VM, then the primary's whole VM power-cut; promote; no
# acknowledged write lost in any of them).
# Installs missing apt packages (build: pkg-config, libibverbs-dev, librdmacm-dev,
# libclang-dev, clang; VM: qemu-system-x86, kmod, cpio, rdma-core userspace) when
# run as root (or with passwordless sudo), and the VM kernel on first use.
#
# Exit status: the tests' own; non-zero with a loud line when the VM cannot start.
# LOGMEMCACHED_SKIP_VM=1 skips everything with one loud line and exits 0.
# Env: RDMA_VM_TIMEOUT (s, default 1500: the emulated VM runs the whole suite in 5 to 10 minutes, more on a loaded host) bounds the whole VM run; other RDMA_VM_*
# knobs go to tests/vm/rdma-vm.sh; LOGMEMCACHED_VM_TEST_ARGS adds libtest
# arguments (e.g. a test name filter) to the verbs binary.
set -euo pipefail

if [ "${LOGMEMCACHED_SKIP_VM:-0}" = 1 ]; then
    echo "RDMA VM SUITE SKIPPED (LOGMEMCACHED_SKIP_VM=1)"
    exit 0
fi

root=$(cd "$(dirname "$0")/.." && pwd -P)
vm=$root/tests/vm/rdma-vm.sh
fail() { echo "RDMA VM SUITE FAILED: $*" >&2; exit 1; }

# Build-time packages for rdma-sys (bindgen + pkg-config over rdma-core headers).
build_missing() {
    local m=()
    command -v pkg-config >/dev/null || m+=(pkg-config)
    pkg-config --exists libibverbs 2>/dev/null || m+=(libibverbs-dev)
    pkg-config --exists librdmacm 2>/dev/null || m+=(librdmacm-dev)
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || compgen -G '/usr/lib/*-linux-gnu/libclang*.so*' >/dev/null \
        || m+=(libclang-dev clang)
    echo "${m[@]}"
}
miss=$(build_missing)
if [ -n "$miss" ]; then
    [ "${LOGMEMCACHED_VM_NO_INSTALL:-0}" != 1 ] || fail "missing build packages: $miss (apt-get install -y $miss)"
    echo "run-vm-suite: installing build packages: $miss" >&2
    sudo=; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $miss >&2 \
        || { $sudo apt-get update >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $miss >&2; } \
        || fail "cannot install build packages: $miss"
fi
"$vm" deps || fail "cannot install the VM's host packages (see above)"

cd "$root"
json=$(mktemp /tmp/lmc-vm-build.XXXXXX)
trap 'rm -f "$json"' EXIT
cargo test --no-run --lib --test verbs --test replication_processes --test rdma_client --test faults --message-format=json >"$json" \
    || { grep -o '"rendered":"[^"]*"' "$json" | head -20 | sed 's/\\n/\n/g' >&2; fail "cargo test --no-run failed"; }
exe_of() {   # the executable of the test target named $1 (kind $2)
    grep '"reason":"compiler-artifact"' "$json" | grep "\"kind\":\[\"$2\"\]" | grep "\"name\":\"$1\"" \
        | grep '"test":true' | grep -o '"executable":"[^"]*"' | head -1 | cut -d'"' -f4
}
verbs=$(exe_of verbs test)
lib=$(exe_of logmemcached lib)
repl=$(exe_of replication_processes test)
server=$(grep '"reason":"compiler-artifact"' "$json" | grep '"kind":\["bin"\]' | grep '"name":"logmemcached"' \
    | grep -o '"executable":"[^"]*"' | head -1 | cut -d'"' -f4)
[ -n "$server" ] && [ -x "$server" ] || fail "cannot find the logmemcached binary in cargo's output"
client=$(exe_of rdma_client test)
faults=$(exe_of faults test)
[ -n "$verbs" ] && [ -x "$verbs" ] || fail "cannot find the verbs test binary in cargo's output"
[ -n "$lib" ] && [ -x "$lib" ] || fail "cannot find the library test binary in cargo's output"
[ -n "$repl" ] && [ -x "$repl" ] || fail "cannot find the replication test binary in cargo's output"
[ -n "$client" ] && [ -x "$client" ] || fail "cannot find the rdma_client test binary in cargo's output"
[ -n "$faults" ] && [ -x "$faults" ] || fail "cannot find the faults test binary in cargo's output"

# The guest sees /usr, /etc and this directory only: stage binaries that live
# elsewhere (CARGO_TARGET_DIR outside the tree) under target/.
stage() {
    case $1 in "$root"/*) echo "${1#"$root"/}" ;;
        *) mkdir -p target/vm-bin && cp "$1" target/vm-bin/ && echo "target/vm-bin/$(basename "$1")" ;;
    esac
}
verbs=$(stage "$verbs")
lib=$(stage "$lib")
repl=$(stage "$repl")
server=$(stage "$server")
client=$(stage "$client")
# The guest gets every LOGMEMCACHED_* variable (tests/vm/rdma-vm.sh).
LOGMEMCACHED_VM_FAULTS_BIN=$(stage "$faults")
export LOGMEMCACHED_VM_FAULTS_BIN

echo "run-vm-suite: booting the Soft-RoCE VM for $lib (rdma::) and $verbs" >&2
t0=$(date +%s)
set +e
# shellcheck disable=SC2086
RDMA_VM_TIMEOUT=${RDMA_VM_TIMEOUT:-1500} RDMA_VM_HUGEPAGES=${RDMA_VM_HUGEPAGES:-32} \
    "$vm" run sh tests/vm/suite-in-vm.sh "$lib" "$verbs" "$repl" "$client" --include-ignored --test-threads=1 --nocapture --color=never ${LOGMEMCACHED_VM_TEST_ARGS:-}
rc=$?
set -e
echo "run-vm-suite: VM run took $(( $(date +%s) - t0 )) s, exit status $rc" >&2
if [ $rc = 0 ]; then
    # Two VMs: the primary's whole "host" is power-cut (issue 5, scenario 5).
    echo "run-vm-suite: two-VM failover (tests/vm/failover-pair.sh)" >&2
    t1=$(date +%s)
    set +e
    RDMA_VM_TIMEOUT=${RDMA_VM_TIMEOUT:-1500} tests/vm/failover-pair.sh "$server"
    rc=$?
    set -e
    echo "run-vm-suite: two-VM failover took $(( $(date +%s) - t1 )) s, exit status $rc" >&2
fi
case $rc in
    0) echo "RDMA VM SUITE PASSED" ;;
    125) fail "the VM could not start or did not finish (exit 125; see the rdma-vm lines above). Set LOGMEMCACHED_SKIP_VM=1 to skip this suite explicitly." ;;
    *) fail "verbs tests failed in the VM (exit $rc)" ;;
esac
