#!/bin/bash
# tests/vm/failover-pair.sh - issue 5, scenario 5 across two "hosts": two
# Soft-RoCE VMs joined by a private link (tests/vm/rdma-vm.sh pair).
#   A (192.168.77.1): the primary, --sync-replicas 1, offering its log over
#                     rdma://192.168.77.1:7700.
#   B (192.168.77.2): two replicas of A (each offering its own log), and a
#                     client (tests/vm/failover_client.py) that writes through
#                     A over the link, has the host power-cut A's whole VM,
#                     promotes the replica that got furthest, points the other
#                     at it (admin commands: through each replica's
#                     --admin-socket), and checks that every write A acknowledged is
#                     there and that writes go on.
# Before that power cut, in the same boot of the pair, ROUNDS (default 3)
# kill -9 failovers (tests/vm/failover_rounds.py): each round a fresh primary
# on A, one --promote-after standby on B, writes acknowledged under
# --sync-replicas 1, then B has A's control agent SIGKILL the primary process
# and times, on B's clock, the standby's first accepted write; every
# acknowledged write must be on it. CI asserts the rounds' correctness only;
# perf/bench_failover_vm.sh runs many rounds for p50/p99.
# Usage: tests/vm/failover-pair.sh BINARY [ROUNDS [PROMOTE_AFTER_MS,... [STANDBY_BIN,...]]]
#   (run from the project root; the rounds' lines go to target/vm-pair/rounds.tsv;
#   the standbys take each combination of a STANDBY_BIN, default BINARY, and a
#   PROMOTE_AFTER_MS, default 2000, in turn: CI's debug build under TCG on a
#   loaded host must not see a live primary's heartbeat stall that long)
set -euo pipefail
bin=${1:?usage: failover-pair.sh BINARY [ROUNDS [PROMOTE_AFTER_MS,... [STANDBY_BIN,...]]]}
rounds=${2:-3}
promote_after=${3:-2000}
standbys=${4:-$bin}
case $rounds in ''|*[!0-9]*) echo "failover-pair.sh: ROUNDS is a number" >&2; exit 2 ;; esac
case $promote_after, in *[!0-9,]*|*,,*|,*) echo "failover-pair.sh: PROMOTE_AFTER_MS,... are numbers" >&2; exit 2 ;; esac
[ "$rounds" -le 99 ] || { echo "failover-pair.sh: at most 99 rounds (ports 11400+I, 7800+I)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$root"
work=target/vm-pair
rm -rf "$work"; mkdir -p "$work"

# The side channels are on the private link, beyond loopback: every server
# holds the same token, written inside each VM (mode 0600, as it must be).
token='umask 077; printf %s logmemcached-failover-pair-token > /tmp/lmc-token'

cat > "$work/side-a.sh" <<SIDE_A
set -e
$token
python3 tests/vm/failover_rounds.py agent $bin
exec $bin serve -l 192.168.77.1 -p 11311 -t 1 -m 16 --hugepages off --auth-token-file /tmp/lmc-token \\
    --replication-listen rdma://192.168.77.1:7700 --sync-replicas 1 --sync-timeout 5000
SIDE_A

cat > "$work/side-b.sh" <<SIDE_B
set -e
$token
python3 tests/vm/failover_rounds.py rounds $bin $rounds $promote_after $work/rounds.tsv $standbys
python3 tests/vm/failover_client.py wait 192.168.77.1 11311
$bin serve -l 127.0.0.1 -p 11312 -t 1 -m 16 --hugepages off --replica-of rdma://192.168.77.1:7700 \\
    --auth-token-file /tmp/lmc-token --replication-listen rdma://192.168.77.2:7701 --admin-socket /tmp/lmc-r1.sock & r1=\$!
$bin serve -l 127.0.0.1 -p 11313 -t 1 -m 16 --hugepages off --replica-of rdma://192.168.77.1:7700 \\
    --auth-token-file /tmp/lmc-token --replication-listen rdma://192.168.77.2:7702 --admin-socket /tmp/lmc-r2.sock & r2=\$!
set +e
python3 tests/vm/failover_client.py run
rc=\$?
kill \$r1 \$r2; wait \$r1 \$r2 2>/dev/null
exit \$rc
SIDE_B

RDMA_VM_TIMEOUT=${RDMA_VM_TIMEOUT:-600} tests/vm/rdma-vm.sh pair sh "$work/side-a.sh" -- sh "$work/side-b.sh"
