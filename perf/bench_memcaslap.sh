#!/usr/bin/env bash
# Side by side in one run: Debian's memcached 1.6 and logmemcached under the
# same load generator (memcaslap), 90% get / 10% set and set-only, 100-byte
# values, 64-byte keys. Two forms (BENCH_FORMS, default both):
#   pinned  both servers -t 1 pinned to cpu0, memcaslap -T 1 -c 16 pinned to
#           cpu1 (taskset): the server's CPU per request is its own work;
#   shared  both servers -t 2, memcaslap -T 2 -c 32, nothing pinned: the form
#           the earlier tables used; server and load generator share both cores.
# Each run is checked before any figure is kept (perf/lib/checks.sh): no
# error replies from memcaslap, no protocol_errors, cmd_get/cmd_set/get_hits/
# get_misses moved by what memcaslap says it sent (within the requests that can
# be in flight when it stops, one per connection), every set stored
# (total_items), the get share as configured. An invalid run exits 1.
# Reports throughput, server CPU per request (utime+stime from /proc/PID/stat
# over the run, divided by the requests the server counted) and ratios;
# median of the rounds, each round listed. Writes perf/results/memcaslap.md.
#   perf/bench_memcaslap.sh [seconds per run, default 10] [rounds, default 3]
#   LMC_BIN=PATH runs that logmemcached build instead of this tree's (an
#   earlier build, for a before/after look; the table names the commit only
#   when it is this tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib/checks.sh
secs=${1:-10}
rounds=${2:-3}
forms=${BENCH_FORMS:-pinned shared}
[ "$(nproc)" -ge 2 ] || { echo "bench_memcaslap: needs 2 cores to pin server and load apart" >&2; exit 1; }
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)


printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$work/mixed.cfg"
printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 1.0\n1 0.0\n' > "$work/set.cfg"
declare -A share=([mixed]=0.9 [set]=0)
raw=$work/raw
: > "$raw"
tck=$(clk_tck)

for form in $forms; do
    case $form in
        pinned) threads=1; mthreads=1; conc=16; spin="taskset -c 0"; lspin="taskset -c 1" ;;
        shared) threads=2; mthreads=2; conc=32; spin=""; lspin="" ;;
        *) echo "unknown form $form (pinned|shared)" >&2; exit 2 ;;
    esac
    mc_port=$(free_port); lm_port=$(free_port)
    $spin memcached -u nobody -p "$mc_port" -l 127.0.0.1 -U 0 -t "$threads" -m 64 -c 1024 & mc_pid=$!; pids+=($mc_pid)
    $spin "${LMC_BIN:-./target/release/logmemcached}" serve -p "$lm_port" -l 127.0.0.1 -t "$threads" -m 64 -c 1024 \
        --hugepages auto 2>"$work/lm.err" & lm_pid=$!; pids+=($lm_pid)
    wait_port "$mc_port"; wait_port "$lm_port"
    for r in $(seq "$rounds"); do
        for wl in mixed set; do
            # Alternate which server goes first so drift in the machine's load
            # does not favour one side.
            if [ $((r % 2)) -eq 1 ]; then order="mc lm"; else order="lm mc"; fi
            for who in $order; do
                port=$mc_port; pid=$mc_pid; [ "$who" = lm ] && { port=$lm_port; pid=$lm_pid; }
                CHECKS_CONTEXT="$form, round $r, $wl, $who"
                stats_snapshot "$port" > "$work/before"
                c0=$(cpu_ticks "$pid")
                $lspin memcaslap -s "127.0.0.1:$port" -T "$mthreads" -c "$conc" -t "${secs}s" -F "$work/$wl.cfg" > "$work/out" 2>&1 \
                    || checks_die "memcaslap failed: $(tail -3 "$work/out" | tr '\n' ' ')"
                c1=$(cpu_ticks "$pid")
                stats_snapshot "$port" > "$work/after"
                check_memcaslap_run "$work/out" "$work/before" "$work/after" "$conc" "${share[$wl]}"
                reqs=$(( $(stat_delta "$work/before" "$work/after" cmd_get) + $(stat_delta "$work/before" "$work/after" cmd_set) ))
                cpu_us=$(awk -v c=$((c1 - c0)) -v t="$tck" -v n="$reqs" 'BEGIN { printf "%.2f", c * 1e6 / t / n }')
                check_number "server CPU per request" "$cpu_us"
                echo "$form $r $wl $who $MS_TPS $reqs $cpu_us" >> "$raw"
                echo "$form round $r  $wl  $who  $MS_TPS ops/s  $cpu_us us CPU/request  (checked: $MS_GETS gets, $MS_SETS sets, 0 errors)" >&2
            done
        done
    done
    kill "$mc_pid" "$lm_pid"; wait "$mc_pid" "$lm_pid" 2>/dev/null || true
done
unset CHECKS_CONTEXT

med() { # FORM WL WHO FIELD -> median over rounds
    awk -v f="$1" -v w="$2" -v s="$3" -v k="$4" '$1 == f && $3 == w && $4 == s { print $k }' "$raw" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
commit=$(git rev-parse --short HEAD)
[ -n "${LMC_BIN:-}" ] && commit="$commit, logmemcached from $LMC_BIN"
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
out=perf/results/memcaslap.md
{
    echo "# memcaslap: memcached 1.6 vs logmemcached"
    echo
    echo "perf/bench_memcaslap.sh $secs $rounds on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty; $(nproc) cores"
    echo "($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)), load average $load0 at the start and"
    echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end (other work shares this box); memcached $(memcached -V | awk '{print $2}'),"
    echo "logmemcached with its defaults (--poll adaptive). memcaslap: 100-byte values, 64-byte keys,"
    echo "${secs} s per run; both servers -m 64, side by side, alternating which goes first; medians of $rounds rounds."
    echo "Every run was checked before it counted: no error replies, no protocol_errors, the server's"
    echo "cmd_get/cmd_set/get_hits/get_misses within one in-flight request per connection of what memcaslap"
    echo "sent, every set stored. CPU per request: the server process's utime+stime over the run"
    echo "(/proc/PID/stat, all threads) over the requests it counted."
    for form in $forms; do
        echo
        case $form in
            pinned) echo "## Pinned: servers -t 1 on cpu0, memcaslap -T 1 -c 16 on cpu1 (taskset)" ;;
            shared) echo "## Shared cores: servers -t 2, memcaslap -T 2 -c 32, nothing pinned (the earlier tables' form)" ;;
        esac
        echo
        echo "| workload | memcached ops/s | logmemcached ops/s | ratio | memcached CPU us/request | logmemcached CPU us/request | requests per CPU-second, logmemcached/memcached |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for wl in mixed set; do
            name="90% get / 10% set"; [ "$wl" = set ] && name="set only"
            mt=$(med "$form" $wl mc 5); lt=$(med "$form" $wl lm 5)
            mc=$(med "$form" $wl mc 7); lc=$(med "$form" $wl lm 7)
            echo "| $name | ${mt%.*} | ${lt%.*} | $(div "$lt" "$mt") | $mc | $lc | $(div "$mc" "$lc") |"
        done
        echo
        echo "Each round (ops/s, CPU us/request):"
        echo
        echo "| round | workload | memcached | logmemcached |"
        echo "|---:|---|---|---|"
        for r in $(seq "$rounds"); do
            for wl in mixed set; do
                echo "| $r | $wl | $(awk -v f="$form" -v r="$r" -v w="$wl" '$1==f && $2==r && $3==w && $4=="mc" {print $5", "$7}' "$raw") | $(awk -v f="$form" -v r="$r" -v w="$wl" '$1==f && $2==r && $3==w && $4=="lm" {print $5", "$7}' "$raw") |"
            done
        done
    done
    echo
    echo "What limits these figures: 2 cores. Pinned, the server has cpu0 to itself only as far as"
    echo "the rest of the box leaves it alone (the load average above); memcaslap on cpu1 is the"
    echo "ceiling on throughput, so ops/s say more about the load generator than the servers and CPU"
    echo "per request is the comparison. Shared, memcaslap's two threads and the server's two workers"
    echo "compete for the same cores and the throughput ratio mostly measures scheduling."
} | tee "$out"
