#!/usr/bin/env bash
# Replication cost and lag over shm, one run on this machine:
#  1. primary throughput (memcaslap 90/10, 100-byte values) with 0 and with 2
#     replicas attached, and the primary's CPU time per operation (from
#     /proc/PID/stat), runs interleaved 0,2,0,2 so drift does not favour a side;
#  2. replication lag: a probe writes on the primary and polls a replica
#     (perf/replication_lag.rs, HdrHistogram), idle and under load.
# Prints tables and writes perf/results/replication.md.
#   perf/bench_replication.sh [seconds per run, default 10] [rounds, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-4}
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins --example replication_lag
bin=./target/release/logmemcached
probe=./target/release/examples/replication_lag
work=$(mktemp -d)
name="bench$$"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; rm -f "/dev/shm/logmemcached-$name"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

pport=$(free_port)
$bin serve -p "$pport" -t 2 -m 64 --hugepages auto --replication-listen "shm://$name" 2>/dev/null & ppid=$!; pids+=($ppid)
wait_port "$pport"
printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$work/mixed.cfg"

start_replicas() {
    rports=()
    rpids=()
    for _ in 1 2; do
        local p; p=$(free_port)
        $bin serve -p "$p" -t 1 -m 64 --hugepages auto --replica-of "shm://$name" 2>/dev/null & rpids+=($!); pids+=($!)
        wait_port "$p"; rports+=("$p")
    done
}
stop_replicas() { for p in "${rpids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; rpids=(); }

run() { # -> "tps cpu_us_per_op"
    local c0 c1 tps
    c0=$(cpu_ticks "$ppid")
    tps=$(memcaslap -s "127.0.0.1:$pport" -T 2 -c 32 -t "${secs}s" -F "$work/mixed.cfg" 2>&1 \
        | awk '/^Run time:/ { for (i=1;i<=NF;i++) if ($i=="TPS:") print $(i+1) }' | tail -1)
    c1=$(cpu_ticks "$ppid")
    python3 -c "t=$tps; print(t, f'{($c1-$c0)*10000/(t*$secs):.2f}')"
}

declare -A tps cpu
round_lines=()
for round in $(seq "$rounds"); do
    for n in 0 2; do
        [ "$n" = 2 ] && start_replicas
        read -r t c < <(run)
        echo "round $round, $n replicas: $t ops/s, $c us CPU/op on the primary" >&2
        round_lines+=("| $round | $n | $t | $c |")
        tps[$n]=$(( ${tps[$n]:-0} + ${t%.*} )); cpu[$n]=$(python3 -c "print(${cpu[$n]:-0} + $c)")
        [ "$n" = 2 ] && stop_replicas
    done
done

start_replicas
idle=$($probe "$pport" "${rports[0]}" 2000)
memcaslap -s "127.0.0.1:$pport" -T 1 -c 16 -t "$((secs))s" -F "$work/mixed.cfg" >/dev/null 2>&1 & lg=$!
loaded=$($probe "$pport" "${rports[0]}" 2000)
wait $lg || true
stop_replicas

out=perf/results/replication.md
{
    echo "# Replication over shm: cost on the primary and lag"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores; primary -t 2 -m 64, replicas -t 1 -m 64 on the same host;"
    echo "memcaslap -T 2 -c 32 -t ${secs}s 90% get/10% set, 100-byte values; mean of $rounds interleaved rounds."
    echo "Every process shares the same 2 cores, so replicas applying records compete with the primary"
    echo "and the load generator for CPU; CPU time per operation isolates the primary's own work."
    echo
    echo "| replicas | primary ops/s | primary CPU us/op |"
    echo "|---:|---:|---:|"
    for n in 0 2; do echo "| $n | $(( tps[$n] / rounds )) | $(python3 -c "print(f'{${cpu[$n]}/$rounds:.2f}')") |"; done
    echo
    echo "Ratios (2 replicas / 0): throughput $(python3 -c "print(f'{${tps[2]}/${tps[0]}:.3f}')") (goal >= 0.95),"
    echo "CPU per op $(python3 -c "print(f'{${cpu[2]}/${cpu[0]}:.3f}')") (goal <= 1.05)."
    echo
    echo "Each round (this shared box swings by tens of percent between consecutive runs):"
    echo
    echo "| round | replicas | primary ops/s | primary CPU us/op |"
    echo "|---:|---:|---:|---:|"
    printf '%s\n' "${round_lines[@]}"
    echo
    echo "Lag (write on the primary until a replica serves it; includes one TCP get of polling granularity):"
    echo
    echo "| load | p50 us | p99 us | p99.9 us | max us | samples | plain get RTT p50 us |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for pair in "idle:$idle" "memcaslap 90/10 beside it:$loaded"; do
        label=${pair%%:*}; vals=${pair#*:}
        eval "$(echo "$vals" | tr ' ' '\n' | grep '=' | sed 's/^/local_/')"
        echo "| $label | $local_p50 | $local_p99 | $local_p999 | $local_max | $local_n | $local_get_rtt_p50 |"
    done
} | tee "$out"
