#!/bin/sh
# Runs inside the Soft-RoCE VM (started by tests/run-vm-suite.sh):
#   suite-in-vm.sh LIB_TEST_BIN VERBS_TEST_BIN [libtest args for the verbs binary...]
set -e
lib=$1; verbs=$2; shift 2
echo "== in VM: kernel $(uname -r), devices: $(ls /sys/class/infiniband 2>/dev/null | tr '\n' ' ')hugepages: $(cat /proc/sys/vm/nr_hugepages)"
echo "== library rdma:: unit tests"
"./$lib" rdma:: --test-threads=1
echo "== tests/verbs.rs (including the VM-only tests)"
exec "./$verbs" "$@"
