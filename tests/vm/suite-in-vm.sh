#!/bin/sh
# Runs inside the Soft-RoCE VM (started by tests/run-vm-suite.sh):
#   suite-in-vm.sh LIB_TEST_BIN VERBS_TEST_BIN REPL_TEST_BIN CLIENT_TEST_BIN [libtest args for the verbs binary...]
# and, when LOGMEMCACHED_VM_FAULTS_BIN is set, the fault campaign over verbs.
set -e
lib=$1; verbs=$2; repl=$3; client=$4; shift 4
echo "== in VM: kernel $(uname -r), devices: $(ls /sys/class/infiniband 2>/dev/null | tr '\n' ' ')hugepages: $(cat /proc/sys/vm/nr_hugepages)"
echo "== library rdma:: unit tests"
"./$lib" rdma:: --test-threads=1
echo "== tests/verbs.rs (including the VM-only tests)"
"./$verbs" "$@"
echo "== tests/replication_processes.rs over verbs (RC on rxe0; operation counts / \$LOGMEMCACHED_REPL_OPS_DIV)"
LOGMEMCACHED_REPL_TRANSPORT=rdma LOGMEMCACHED_REPL_OPS_DIV=${LOGMEMCACHED_REPL_OPS_DIV:-5} \
    "./$repl" --test-threads=1 --color=never ${LOGMEMCACHED_VM_REPL_ARGS:-}
echo "== tests/rdma_client.rs (the RDMA client against --rdma-listen, including the VM-only tests)"
# Only the vm_ tests: the tcp_ ones run on the host (cargo test).
"./$client" --include-ignored --test-threads=1 --color=never ${LOGMEMCACHED_VM_CLIENT_ARGS:-vm_}
if [ -n "${LOGMEMCACHED_VM_FAULTS_BIN:-}" ]; then
    echo "== tests/faults over verbs (${LOGMEMCACHED_VM_FAULTS_SECS:-20} s per mode; a failure prints its seed)"
    LOGMEMCACHED_REPL_TRANSPORT=rdma LOGMEMCACHED_FAULTS_SECS=${LOGMEMCACHED_VM_FAULTS_SECS:-20} \
        exec "./$LOGMEMCACHED_VM_FAULTS_BIN" --test-threads=1 --color=never --nocapture ${LOGMEMCACHED_VM_FAULTS_ARGS:-}
fi
