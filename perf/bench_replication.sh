#!/usr/bin/env bash
# Replication over shm, side by side in one run on this machine:
#  1. the primary's cost: memcaslap 90/10 (100-byte values) against a primary
#     `-t 1` pinned to cpu0, memcaslap -T 1 -c 16 pinned to cpu1, in three
#     placements interleaved round by round so drift favours none:
#       none    no replica attached (the anchor);
#       apart   2 replicas pinned to cpu1, beside the load generator: the
#               primary's core is its own, as with replicas on other hosts
#               (on 2 cores, "other cores" can only mean the load's core);
#       shared  2 replicas pinned to cpu0, beside the primary;
#     throughput, the primary's CPU per request (utime+stime from
#     /proc/PID/stat over the run, over the requests it counted) and the
#     replicas' CPU per request;
#  2. replication lag: a probe writes on the primary and polls a replica
#     (perf/replication_lag.rs, HdrHistogram), idle and under memcaslap.
# Every run is checked before a figure is kept (perf/lib/checks.sh): memcaslap
# saw no error replies, the primary's protocol_errors did not move, its
# cmd_get/cmd_set/get_hits/get_misses match what memcaslap sent, every set was
# stored; each replica applied up to the primary's head with invalid_records 0;
# the 0-replica anchor produced a number; the lag probe timed out on no sample.
# An invalid run exits 1 with one INVALID line. Writes perf/results/replication.md.
#   perf/bench_replication.sh [seconds per run, default 10] [rounds, default 3]
# BENCH_PROFILE=1 adds one watched run per placement (per-thread CPU, perf stat
# software counters, perf record symbols): perf/results/replication_profile.md;
# with rounds 0 only that.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib/checks.sh
secs=${1:-10}
rounds=${2:-3}
placements=${BENCH_PLACEMENTS:-none apart shared}
[ "$(nproc)" -ge 2 ] || { echo "bench_replication: needs 2 cores to pin primary and load apart" >&2; exit 1; }
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins --example replication_lag
bin=./target/release/logmemcached
probe=./target/release/examples/replication_lag
work=$(mktemp -d)
name="bench$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
    rm -f /dev/shm/logmemcached-"$name"*
}
trap cleanup EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)
tck=$(clk_tck)
conc=16

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; checks_die "port $1 never opened"; }

pport=$(free_port)
taskset -c 0 $bin serve -p "$pport" -l 127.0.0.1 -t 1 -m 64 --hugepages auto --replication-listen "shm://$name" 2>"$work/primary.err" & ppid=$!; pids+=($ppid)
wait_port "$pport"
printf 'key\n64 64 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$work/mixed.cfg"

rports=()
rpids=()
start_replicas() { # CPU
    rports=(); rpids=()
    local p i
    for i in 1 2; do
        p=$(free_port)
        taskset -c "$1" $bin serve -p "$p" -l 127.0.0.1 -t 1 -m 64 --hugepages auto --replica-of "shm://$name" 2>"$work/replica$i.err" &
        rpids+=($!); pids+=($!)
        wait_port "$p"; rports+=("$p")
    done
    # A fresh replica first copies what the primary holds: measure after that.
    check_replicas_caught_up "$pport" 60 "${rports[@]}"
}
stop_replicas() { for p in "${rpids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; rpids=(); rports=(); }

raw=$work/raw
: > "$raw"
for round in $(seq "$rounds"); do
    for pl in $placements; do
        CHECKS_CONTEXT="round $round, $pl"
        case $pl in
            none) ;;
            apart) start_replicas 1 ;;
            shared) start_replicas 0 ;;
            *) echo "unknown placement $pl (none|apart|shared)" >&2; exit 2 ;;
        esac
        stats_snapshot "$pport" > "$work/before"
        c0=$(cpu_ticks "$ppid"); r0=0
        for p in "${rpids[@]}"; do r0=$((r0 + $(cpu_ticks "$p"))); done
        taskset -c 1 memcaslap -s "127.0.0.1:$pport" -T 1 -c "$conc" -t "${secs}s" -F "$work/mixed.cfg" > "$work/out" 2>&1 \
            || checks_die "memcaslap failed: $(tail -3 "$work/out" | tr '\n' ' ')"
        c1=$(cpu_ticks "$ppid"); r1=0
        for p in "${rpids[@]}"; do r1=$((r1 + $(cpu_ticks "$p"))); done
        stats_snapshot "$pport" > "$work/after"
        check_memcaslap_run "$work/out" "$work/before" "$work/after" "$conc" 0.9
        [ "$pl" = none ] || check_replicas_caught_up "$pport" 30 "${rports[@]}"
        reqs=$(($(stat_delta "$work/before" "$work/after" cmd_get) + $(stat_delta "$work/before" "$work/after" cmd_set)))
        cpu=$(awk -v c=$((c1 - c0)) -v t="$tck" -v n="$reqs" 'BEGIN { printf "%.2f", c * 1e6 / t / n }')
        rcpu=$(awk -v c=$((r1 - r0)) -v t="$tck" -v n="$reqs" 'BEGIN { printf "%.2f", c * 1e6 / t / n }')
        check_number "primary CPU per request" "$cpu"
        echo "$round $pl $MS_TPS $cpu $rcpu" >> "$raw"
        echo "round $round, $pl: $MS_TPS ops/s, primary $cpu us CPU/request, replicas $rcpu us CPU/request (checked)" >&2
        [ "$pl" = none ] || stop_replicas
    done
done

if [ "$rounds" -gt 0 ]; then
# Lag, replicas apart (cpu1) as in the "apart" rows.
CHECKS_CONTEXT="lag"
start_replicas 1
lag() { # LABEL: runs the probe, checks it, appends "LABEL|values"
    local out
    out=$(taskset -c 1 $probe "$pport" "${rports[0]}" 2000) || checks_die "the lag probe failed: $out"
    case " $out " in *" timeouts=0 "*) ;; *) checks_die "lag probe ($1): samples timed out: $out" ;; esac
    case " $out " in *" n=2000 "*) ;; *) checks_die "lag probe ($1): not 2000 samples: $out" ;; esac
    echo "$1|$out" >> "$work/lag"
}
: > "$work/lag"
lag idle
taskset -c 1 memcaslap -s "127.0.0.1:$pport" -T 1 -c "$conc" -t "${secs}s" -F "$work/mixed.cfg" > "$work/out" 2>&1 & lg=$!
lag "memcaslap 90/10 beside it"
wait $lg || checks_die "memcaslap (lag load) failed: $(tail -3 "$work/out" | tr '\n' ' ')"
memcaslap_parse "$work/out"
[ "$MS_ERRORS" = 0 ] || checks_die "memcaslap (lag load) got $MS_ERRORS error replies"
check_number "memcaslap TPS (lag load)" "$MS_TPS"
check_replicas_caught_up "$pport" 30 "${rports[@]}"
stop_replicas
unset CHECKS_CONTEXT
fi

# BENCH_PROFILE=1: one more run per placement with the primary watched, to
# say what the replicas' cost on the primary is made of: per-thread CPU (from
# /proc/PID/task), scheduler events per request (`perf stat` software
# counters: this host exposes no hardware counters, so no cache misses), and
# where the primary's time goes (`perf record -e cpu-clock`, symbols).
thread_ticks() { # PID -> "name ticks" per thread, summed by name
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' '_' < "$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat")"
    done | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }' | sort
}
switches() { # PID... -> "voluntary nonvoluntary" context switches, all threads of all PIDs
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/status; done \
        | awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 } END { print v + 0, n + 0 }'
}
if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    command -v perf >/dev/null || checks_die "BENCH_PROFILE=1 needs perf"
    : > "$work/prof"
    for pl in $placements; do
        CHECKS_CONTEXT="profile, $pl"
        case $pl in none) ;; apart) start_replicas 1 ;; shared) start_replicas 0 ;; esac
        stats_snapshot "$pport" > "$work/before"
        thread_ticks "$ppid" > "$work/th0"
        read -r pv0 pn0 < <(switches "$ppid"); read -r rv0 rn0 < <(switches "${rpids[@]}")
        w0=$SECONDS
        taskset -c 1 perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -p "$ppid" -o "$work/pstat.$pl" -- sleep "$secs" &
        ps1=$!
        taskset -c 1 perf record -q -e cpu-clock -F 4000 -p "$ppid" -o "$work/prec.$pl" -- sleep "$secs" 2>/dev/null &
        ps2=$!
        taskset -c 1 memcaslap -s "127.0.0.1:$pport" -T 1 -c "$conc" -t "${secs}s" -F "$work/mixed.cfg" > "$work/out" 2>&1 \
            || checks_die "memcaslap failed: $(tail -3 "$work/out" | tr '\n' ' ')"
        wait $ps1 $ps2 || checks_die "perf failed"
        thread_ticks "$ppid" > "$work/th1"
        read -r pv1 pn1 < <(switches "$ppid"); read -r rv1 rn1 < <(switches "${rpids[@]}")
        w1=$((SECONDS - w0))
        stats_snapshot "$pport" > "$work/after"
        check_memcaslap_run "$work/out" "$work/before" "$work/after" "$conc" 0.9
        [ "$pl" = none ] || check_replicas_caught_up "$pport" 30 "${rports[@]}"
        reqs=$(($(stat_delta "$work/before" "$work/after" cmd_get) + $(stat_delta "$work/before" "$work/after" cmd_set)))
        # perf stat counted over sleep $secs, memcaslap ran $secs: per request, close enough.
        for ev in context-switches cpu-migrations page-faults; do
            v=$(awk -F, -v e="$ev" '$3 == e { print $1 }' "$work/pstat.$pl")
            echo "$pl ev $ev $(awk -v v="$v" -v n="$reqs" 'BEGIN { printf "%.4f", v / n }')" >> "$work/prof"
        done
        echo "$pl sw $(awk -v a=$((pv1 - pv0)) -v b=$((pn1 - pn0)) -v c=$(( (rv1 - rv0) + (rn1 - rn0) )) -v n="$reqs" -v w="$w1" 'BEGIN { printf "%.4f %.4f %.0f", a / n, b / n, c / (w > 0 ? w : 1) }')" >> "$work/prof"
        join "$work/th0" "$work/th1" | awk -v pl="$pl" -v n="$reqs" -v t="$tck" '{ printf "%s th %s %.2f\n", pl, $1, ($3 - $2) * 1e6 / t / n }' >> "$work/prof"
        perf report -i "$work/prec.$pl" --stdio --sort sym 2>/dev/null | awk -v pl="$pl" '/^ +[0-9.]+%/ { p = $1; sub(/%/, "", p); $1 = ""; $2 = ""; sub(/^ +/, ""); if (n++ < 15) printf "%s sym %s %s\n", pl, p, $0 }' >> "$work/prof"
        echo "$pl tps $MS_TPS $(awk -v c=$(($(awk '{ s += $2 } END { print s }' "$work/th1") - $(awk '{ s += $2 } END { print s }' "$work/th0"))) -v t="$tck" -v n="$reqs" 'BEGIN { printf "%.2f", c * 1e6 / t / n }')" >> "$work/prof"
        echo "profile $pl: $MS_TPS ops/s (checked)" >&2
        [ "$pl" = none ] || stop_replicas
    done
    unset CHECKS_CONTEXT
    {
        echo "# What the replicas cost the primary, placement by placement"
        echo
        echo "BENCH_PROFILE=1 perf/bench_replication.sh $secs: one extra run per placement, on $(date -u '+%Y-%m-%d %H:%M UTC'),"
        echo "commit $(git rev-parse --short HEAD); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end. Same setup as"
        echo "perf/results/replication.md (primary -t 1 on cpu0, memcaslap on cpu1, replicas on cpu1 = apart or cpu0 = shared);"
        echo "perf stat and perf record attached to the primary, both pinned to cpu1. Runs checked as there."
        echo "This host exposes no hardware counters (\`perf stat -e instructions\` is <not supported>), so cache misses"
        echo "cannot be counted; scheduler events and where the time goes can."
        echo
        echo "| placement | ops/s | primary CPU us/request | context switches/request (perf stat) | voluntary / preempted per request (/proc) | replicas' context switches per second | migrations/request | page faults/request |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for pl in $placements; do
            g() { awk -v p="$pl" -v e="$1" '$1 == p && $2 == "ev" && $3 == e { print $4 }' "$work/prof"; }
            echo "| $pl | $(awk -v p="$pl" '$1 == p && $2 == "tps" { print $3 }' "$work/prof") | $(awk -v p="$pl" '$1 == p && $2 == "tps" { print $4 }' "$work/prof") | $(g context-switches) | $(awk -v p="$pl" '$1 == p && $2 == "sw" { print $3 " / " $4 }' "$work/prof") | $(awk -v p="$pl" '$1 == p && $2 == "sw" { print $5 }' "$work/prof") | $(g cpu-migrations) | $(g page-faults) |"
        done
        echo
        echo "The primary's CPU per request by thread (us):"
        echo
        echo "| thread | $(echo $placements | sed 's/ / | /g') |"
        echo "|---|$(for _ in $placements; do printf -- '---:|'; done)"
        for th in $(awk '$2 == "th" { print $3 }' "$work/prof" | sort -u); do
            echo "| $th | $(for pl in $placements; do printf '%s | ' "$(awk -v p="$pl" -v t="$th" '$1 == p && $2 == "th" && $3 == t { print $4 }' "$work/prof")"; done)"
        done
        echo
        echo "Where the primary's time goes (perf record -e cpu-clock, share of its samples, top symbols):"
        for pl in $placements; do
            echo
            echo "$pl:"
            echo
            echo "| % | symbol |"
            echo "|---:|---|"
            awk -v p="$pl" '$1 == p && $2 == "sym" { pc = $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); printf "| %s | `%s` |\n", pc, $0 }' "$work/prof"
        done
    } | tee perf/results/replication_profile.md
fi

# rounds 0: the profile only (BENCH_PROFILE=1 perf/bench_replication.sh 10 0).
[ "$rounds" -gt 0 ] || exit 0

med() { # PLACEMENT FIELD
    awk -v p="$1" -v k="$2" '$2 == p { print $k }' "$raw" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
t0=$(med none 3); c0=$(med none 4)
check_number "0-replica anchor throughput" "$t0"
check_number "0-replica anchor CPU per request" "$c0"
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
out=perf/results/replication.md
{
    echo "# Replication over shm: cost on the primary and lag"
    echo
    echo "perf/bench_replication.sh $secs $rounds on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty; $(nproc) cores"
    echo "($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)), load average $load0 at the"
    echo "start and $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work shares this box)."
    echo "Primary \`-t 1 -m 64 --replication-listen shm://\` pinned to cpu0; replicas \`-t 1 -m 64 --replica-of shm://\`;"
    echo "memcaslap -T 1 -c $conc -t ${secs}s pinned to cpu1, 90% get / 10% set, 100-byte values, 64-byte keys."
    echo "Placements interleaved in each round; medians of $rounds rounds. Each run was checked: no error"
    echo "replies, no protocol_errors, the primary's counters match what memcaslap sent, every set stored,"
    echo "each replica applied up to the primary's head with 0 invalid records."
    echo
    echo "| replicas | placement | primary ops/s | primary CPU us/request | CPU/request vs 0 replicas | replicas' CPU us/request (both) |"
    echo "|---:|---|---:|---:|---:|---:|"
    for pl in $placements; do
        case $pl in
            none) n=0; what="-" ;;
            apart) n=2; what="cpu1, beside memcaslap (primary's core its own)" ;;
            shared) n=2; what="cpu0, beside the primary" ;;
        esac
        echo "| $n | $what | $(med "$pl" 3 | cut -d. -f1) | $(med "$pl" 4) | $(div "$(med "$pl" 4)" "$c0") | $(med "$pl" 5) |"
    done
    echo
    echo "Throughput vs 0 replicas: $(for pl in $placements; do [ "$pl" = none ] || printf '%s %s; ' "$pl" "$(div "$(med "$pl" 3)" "$t0")"; done)"
    echo "goal: the primary's CPU per request with replicas on other cores <= 1.05x."
    echo
    echo "Each round (ops/s, primary CPU us/request, replicas' CPU us/request):"
    echo
    echo "| round | placement | ops/s | primary CPU us/req | replicas CPU us/req |"
    echo "|---:|---|---:|---:|---:|"
    awk '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$raw"
    echo
    echo "Lag (write on the primary until a replica serves it; includes one TCP get of polling"
    echo "granularity; replicas on cpu1 with the probe; 2000 samples each, none timed out):"
    echo
    echo "| load | p50 us | p99 us | p99.9 us | max us | samples | plain get RTT p50 us |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    while IFS='|' read -r label vals; do
        g() { echo "$vals" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
        echo "| $label | $(g p50) | $(g p99) | $(g p999) | $(g max) | $(g n) | $(g get_rtt_p50) |"
    done < "$work/lag"
    echo
    echo "What limits these figures: 2 cores. memcaslap on cpu1 bounds throughput (the primary"
    echo "uses well under its core), so CPU per request is the comparison; \"apart\" puts the"
    echo "replicas on the load generator's core, which lowers throughput without touching the"
    echo "primary's core. \"shared\" makes the primary's core run the replicas' apply loops too."
} | tee "$out"
