#!/usr/bin/env bash
# --sync-replicas 1 (group commit) against asynchronous replication, over shm,
# in one run on this machine, rounds interleaved so drift favours no side:
#  1. set-only throughput, one live replica, 32 connections
#     (`logmemcached bench -t 32 --get-ratio 0`, 100-byte values);
#  2. read latency on the same worker with the replica dead (kill -9): a
#     reader (`bench -t 16 --get-ratio 1`) while a writer keeps 4 connections
#     writing; p99 of the reads against the same load without --sync-replicas.
# The primary runs -t 1 pinned to cpu0; replica, load and writer on cpu1.
# Every figure is checked before it prints: bench fails on any error reply or
# get miss; the server's stats must show protocol_errors 0, curr_items equal
# to the keys written, cmd_get what the reader did; the live replica must hold
# every item; the dead-replica writer must have got only the timeout error,
# as many as sync_timeouts counted.
# Prints tables and writes perf/results/sync_replicas.md.
#   perf/bench_sync.sh [seconds per run, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-3}
keys=10000
cargo build --release -q --bins
bin=./target/release/logmemcached
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
    rm -rf /dev/shm/logmemcached-sync$$*
}
trap cleanup EXIT

die() { echo "INVALID: $*" >&2; stop "${ppid:-}" "${rpid:-}"; exit 1; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; die "port $1 never opened"; }
stat() { # port name [group] -> value of `stats [group]` line NAME
    python3 - "$1" "$2" "${3:-}" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(("stats %s\r\n" % sys.argv[3]).encode())
buf = b""
while not buf.endswith(b"END\r\n"):
    d = s.recv(65536)
    if not d:
        break
    buf += d
for line in buf.decode().split("\r\n"):
    p = line.split(" ")
    if len(p) == 3 and p[1] == sys.argv[2]:
        print(p[2]); break
else:
    sys.exit("no stat " + sys.argv[2])
EOF
}
result() { # bench output, op, field -> value from its RESULT line
    awk -v op="$2" -v f="$3" '/^RESULT/ { ok=0; for (i=1;i<=NF;i++) { split($i,kv,"="); if (kv[1]=="op" && kv[2]==op) ok=1; if (ok && kv[1]==f) print kv[2] } }' <<<"$1"
}

n=0
# start_pair MODE TIMEOUT_MS -> sets pport ppid rpid (MODE: async | sync)
start_pair() {
    n=$((n + 1))
    local name="sync$$-$n" extra=()
    [ "$1" = sync ] && extra=(--sync-replicas 1 --sync-timeout "$2")
    pport=$(free_port)
    taskset -c 0 $bin serve -p "$pport" -t 1 -m 256 --hugepages off --replication-listen "shm://$name" "${extra[@]}" \
        2>"$work/p$n.log" & ppid=$!; pids+=($ppid)
    wait_port "$pport"
    rport=$(free_port)
    taskset -c 1 $bin serve -p "$rport" -t 1 -m 256 --hugepages off --replica-of "shm://$name" \
        2>"$work/r$n.log" & rpid=$!; pids+=($rpid)
    wait_port "$rport"
    # Attached: its progress slot is fresh on the primary.
    for _ in $(seq 200); do [ "$(stat "$pport" replicas replication)" = 1 ] && return 0; sleep 0.05; done
    die "the replica never attached"
}
stop() { for p in "$@"; do [ -n "$p" ] || continue; kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

check_common() { # port, expected curr_items
    [ "$(stat "$1" protocol_errors)" = 0 ] || die "protocol_errors on port $1"
    [ "$(stat "$1" curr_items)" = "$2" ] || die "curr_items $(stat "$1" curr_items), wanted $2"
}

# 1. Set-only throughput, one live replica.
setonly() { # mode -> ops/s
    # A timeout long enough that a loaded machine's scheduling delays do
    # not make a write miss it (any miss fails the run).
    start_pair "$1" 2000
    local out
    out=$(taskset -c 1 $bin bench "tcp://127.0.0.1:$pport" -t 32 --get-ratio 0 --keys $keys --value-size 100 \
        --duration "$secs" 2>&1) || die "bench failed: $out"
    local ops count
    ops=$(result "$out" set ops_s)
    count=$(result "$out" set count)
    [ -n "$ops" ] && [ "$count" -gt 0 ] || die "no set figure: $out"
    check_common "$pport" $keys
    [ "$(stat "$pport" sync_timeouts)" = 0 ] || die "sync_timeouts with a live replica"
    local cmd_set; cmd_set=$(stat "$pport" cmd_set)
    [ "$cmd_set" -ge "$count" ] || die "cmd_set $cmd_set < $count sets measured"
    # The replica applied every item.
    for _ in $(seq 100); do [ "$(stat "$rport" curr_items)" = $keys ] && break; sleep 0.05; done
    [ "$(stat "$rport" curr_items)" = $keys ] || die "the replica holds $(stat "$rport" curr_items) of $keys"
    stop "$rpid" "$ppid"
    echo "$ops"
}

# The writer of part 2: 4 connections, each one set at a time, 2 ms apart,
# over 2 keys each; prints "stored errors other".
cat > "$work/writer.py" <<'EOF'
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
counts = {"stored": 0, "error": 0, "other": 0}
lock = threading.Lock()
def run(i):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    end = time.time() + secs
    j = 0
    while time.time() < end:
        s.sendall(b"set w%d-%d 0 0 5\r\nvalue\r\n" % (i, j % 2))
        line = f.readline()
        k = "stored" if line == b"STORED\r\n" else \
            "error" if line == b"SERVER_ERROR stored, but not confirmed by the required replicas in time\r\n" else "other"
        with lock:
            counts[k] += 1
        j += 1
        time.sleep(0.002)
ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
print(counts["stored"], counts["error"], counts["other"])
EOF

# 2. Reads with the replica dead.
deadreads() { # mode -> p99_us p50_us ops/s stored timed-out
    # As long a timeout as part 1, for the prefill's sake (under load);
    # each of the writer's writes then waits that long for its error.
    start_pair "$1" 2000
    taskset -c 1 $bin bench "tcp://127.0.0.1:$pport" -t 4 --get-ratio 0 --keys $keys --value-size 100 --ops 1 \
        >/dev/null 2>&1 || die "prefill failed"
    stop "$rpid"
    local w0; w0=$(stat "$pport" cmd_get)
    taskset -c 1 python3 "$work/writer.py" "$pport" "$secs" > "$work/writer.out" & local wpid=$!
    local out
    out=$(taskset -c 1 $bin bench "tcp://127.0.0.1:$pport" -t 16 --get-ratio 1 --keys $keys --value-size 100 \
        --no-prefill --duration "$secs" 2>&1) || die "reader bench failed: $out"
    wait "$wpid" || die "writer failed"
    local stored errors other count misses
    read -r stored errors other < "$work/writer.out"
    [ "$other" = 0 ] || die "the writer got $other unexpected replies"
    if [ "$1" = sync ]; then
        [ "$stored" = 0 ] && [ "$errors" -gt 0 ] || die "sync, replica dead: $stored stored, $errors errors"
        [ "$(stat "$pport" sync_timeouts)" = "$errors" ] || die "sync_timeouts $(stat "$pport" sync_timeouts) != $errors"
    else
        [ "$errors" = 0 ] && [ "$stored" -gt 0 ] || die "async: $stored stored, $errors errors"
    fi
    count=$(result "$out" get count)
    misses=$(result "$out" get misses)
    [ "$misses" = 0 ] || die "$misses get misses"
    local cmd_get; cmd_get=$(stat "$pport" cmd_get)
    [ $((cmd_get - w0)) -ge "$count" ] || die "cmd_get grew $((cmd_get - w0)) < $count gets measured"
    [ "$(stat "$pport" get_hits)" -ge "$count" ] || die "get_hits below the gets measured"
    # Keys of the prefill plus the writer's 8.
    check_common "$pport" $((keys + 8))
    stop "$ppid"
    echo "$(result "$out" get p99_us) $(result "$out" get p50_us) $(result "$out" get ops_s) $stored $errors"
}

declare -A sum
rows1=() rows2=()
for round in $(seq "$rounds"); do
    for mode in async sync; do
        t=$(setonly $mode)
        echo "round $round $mode: set-only $t ops/s" >&2
        rows1+=("| $round | $mode | $t |")
        sum[set_$mode]=$(python3 -c "print(${sum[set_$mode]:-0} + $t)")
    done
    for mode in async sync; do
        r=$(deadreads $mode)
        read -r p99 p50 ops stored errors <<<"$r"
        echo "round $round $mode, replica dead: reads p99 $p99 us, p50 $p50 us, $ops ops/s; writer $stored stored, $errors timed out" >&2
        rows2+=("| $round | $mode | $p50 | $p99 | $ops | $stored | $errors |")
        sum[p99_$mode]=$(python3 -c "print(${sum[p99_$mode]:-0} + $p99)")
    done
done
set_ratio=$(python3 -c "print(f'{${sum[set_sync]} / ${sum[set_async]}:.2f}')")
p99_ratio=$(python3 -c "print(f'{${sum[p99_sync]} / ${sum[p99_async]}:.2f}')")
verdict() { python3 -c "print('met' if $1 else 'MISSED')"; }

out=perf/results/sync_replicas.md
{
    echo "# --sync-replicas 1 as group commit, against asynchronous replication (shm)"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD) on $(nproc) cores"
    echo "(shared with other work). Primary -t 1 pinned to cpu0; replica, \`logmemcached bench\` and the writer"
    echo "pinned to cpu1; $secs s per run, $rounds interleaved rounds, a fresh primary and replica per run."
    echo "Checked before printing: no error reply or miss (bench fails otherwise), protocol_errors 0,"
    echo "curr_items = keys written, cmd_set/cmd_get/get_hits >= the operations measured, the live replica"
    echo "holds every item, the dead-replica writer got only the timeout error, as many as sync_timeouts."
    echo
    echo "## Set-only, one live replica, 32 connections (bench -t 32 --get-ratio 0, 100-byte values, --sync-timeout 2000)"
    echo
    echo "| round | mode | sets/s |"
    echo "|---|---|---|"
    printf '%s\n' "${rows1[@]}"
    echo
    echo "sync / async throughput: **$set_ratio** (goal >= 0.8: $(verdict "$set_ratio >= 0.8"))"
    echo
    echo "## Reads on the same worker with the replica dead (kill -9)"
    echo
    echo "Reader: bench -t 16 --get-ratio 1 over $keys keys; writer: 4 connections, one set each 2 ms"
    echo "after its reply (--sync-timeout 2000 under sync, so each write waits 2 s and gets the error)."
    echo
    echo "| round | mode | read p50 us | read p99 us | reads/s | writes stored | writes timed out |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows2[@]}"
    echo
    echo "sync / async read p99: **$p99_ratio** (goal <= 2: $(verdict "$p99_ratio <= 2"))"
} > "$out"
cat "$out"
