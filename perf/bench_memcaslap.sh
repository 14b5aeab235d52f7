#!/usr/bin/env bash
# Side-by-side throughput: Debian's memcached 1.6 vs logmemcached, same
# machine, same load generator (memcaslap), same settings, same thread count.
# Workloads: 90% get / 10% set and set-only, 100-byte values.
# Prints a table and writes it to perf/results/memcaslap.md.
#   perf/bench_memcaslap.sh [seconds per run, default 10] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
threads=${BENCH_SERVER_THREADS:-2}
conc=${BENCH_CONCURRENCY:-32}
poll=${BENCH_POLL:-adaptive}
spins=${BENCH_IDLE_SPINS:-}
bash tests/install-deps.sh test >/dev/null
cargo build --release -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

mc_port=$(free_port); lm_port=$(free_port)
memcached -u nobody -p "$mc_port" -l 127.0.0.1 -U 0 -t "$threads" -m 64 -c 1024 & pids+=($!)
./target/release/logmemcached serve -p "$lm_port" -l 127.0.0.1 -t "$threads" -m 64 -c 1024 \
    --hugepages auto --poll "$poll" ${spins:+--idle-spins "$spins"} 2>/dev/null & pids+=($!)
wait_port "$mc_port"; wait_port "$lm_port"

printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$work/mixed.cfg"
printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 1.0\n1 0.0\n' > "$work/set.cfg"

run() { # port workload -> ops/s
    memcaslap -s "127.0.0.1:$1" -T 2 -c "$conc" -t "${secs}s" -F "$work/$2.cfg" 2>&1 \
        | awk '/^Run time:/ { for (i=1;i<=NF;i++) if ($i=="TPS:") print $(i+1) }' | tail -1
}

declare -A sum
for r in $(seq "$rounds"); do
    for wl in mixed set; do
        # Alternate which server goes first so drift in the machine's load
        # does not favour one side.
        if [ $((r % 2)) -eq 1 ]; then order="mc lm"; else order="lm mc"; fi
        for who in $order; do
            port=$mc_port; [ "$who" = lm ] && port=$lm_port
            tps=$(run "$port" "$wl")
            echo "round $r  $wl  $who  ${tps:-?} ops/s" >&2
            sum[$who.$wl]=$(( ${sum[$who.$wl]:-0} + ${tps:-0} ))
        done
    done
done

ratio() { python3 -c "print(f'{$1/$2:.2f}' if $2 else 'n/a')"; }
out=perf/results/memcaslap.md
{
    echo "# memcaslap: memcached 1.6 vs logmemcached"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -r)); memcaslap -T 2 -c $conc -t ${secs}s,"
    echo "100-byte values, 64-byte keys; both servers -t $threads -m 64 on 127.0.0.1 (logmemcached --poll $poll --idle-spins ${spins:-default});"
    echo "mean of $rounds rounds, servers alternating first. memcached $(memcached -V | awk '{print $2}')."
    echo
    echo "| workload | memcached ops/s | logmemcached ops/s | ratio (logmemcached/memcached) |"
    echo "|---|---:|---:|---:|"
    for wl in mixed set; do
        mc=$(( sum[mc.$wl] / rounds )); lm=$(( sum[lm.$wl] / rounds ))
        name="90% get / 10% set"; [ "$wl" = set ] && name="set only"
        echo "| $name | $mc | $lm | $(ratio "$lm" "$mc") |"
    done
} | tee "$out"
