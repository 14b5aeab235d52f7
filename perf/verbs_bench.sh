#!/bin/bash
# perf/verbs_bench.sh - RDMA READ bandwidth and latency: perftest vs our wrapper.
#
# In ONE Soft-RoCE VM run (tests/vm/rdma-vm.sh), two processes on rxe0 each:
#   perftest ib_read_bw -s 65536, ib_read_bw -s 2097152, ib_read_lat (2 bytes)
#   perf/verbs_bench.rs doing the same through logmemcached::rdma
# alternating tool by tool for VERBS_BENCH_ROUNDS rounds (default 5), then writes
# the medians and ratios to perf/results/verbs.md (goal: >= 0.9x perftest's
# bandwidth, <= 1.1x its latency) and the raw lines to target/verbs-bench/.
#
# Not a timed test: numbers under TCG emulation are only comparable with each
# other inside one run. Takes ~4-5 minutes (release build + one VM boot).
# Env: VERBS_BENCH_ROUNDS, VERBS_BENCH_BW_ITERS (64 KiB: 1000), VERBS_BENCH_BW2M_ITERS
# (2 MiB: 100), VERBS_BENCH_LAT_ITERS (1000), VERBS_BENCH_MODES ("bw64 bw2m lat"),
# VERBS_BENCH_PIN=1 (pin servers/clients to vCPU 0/1), RDMA_VM_* (see tests/vm/rdma-vm.sh).
set -euo pipefail

in_vm() {   # runs inside the VM: in_vm BENCH_EXE RAW_OUT ROUNDS N64K N2M NLAT MODES PIN
    local exe=$1 raw=$2 rounds=$3 n64=$4 n2m=$5 nlat=$6 modes=$7 VERBS_BENCH_PIN=$8 ip=10.0.2.15 dev=rxe0 r m nconn=0
    . "$(dirname "$0")/lib/checks.sh"
    # No CPU pinning: pinning a busy-polling client to one vCPU starves the rxe
    # tasklets raised on that vCPU until the next tick (p99 ~4.6 ms for BOTH
    # tools, measured), which measures the scheduler, not the verbs path.
    # VERBS_BENCH_PIN=1 brings it back for experiments.
    local pin_s="" pin_c=""
    if [ "${VERBS_BENCH_PIN:-0}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin_s="taskset -c 0"; pin_c="taskset -c 1"; fi
    : > "$raw"
    echo "ENV kernel=$(uname -r) vCPUs=$(nproc) clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) RoCE-MTU=$(ibv_devinfo -d $dev | awk '/active_mtu/{print $2}') pinning=${pin_c:+server-vCPU0,client-vCPU1}${pin_c:-none}" >> "$raw"
    # perftest pair: server in the background, client retried until the server listens.
    perftest() {  # perftest TOOL MODE SIZE ITERS
        # perftest calibrates its cycle counter against gettimeofday and, when
        # the fit is poor (r^2 < 0.9: a TCG guest on a loaded host), takes the
        # clock rate as 0 and prints latency inf and bandwidth 0.00: that run
        # measured nothing, so it is retried (up to 5 times) and the script
        # fails if none produced a number.
        local tool=$1 mode=$2 size=$3 n=$4 out spid i t0 t1 line col attempt
        col=5; [ "$mode" = read_bw ] && col=4
        for attempt in 1 2 3 4 5; do
            $pin_s stdbuf -oL "$tool" -d $dev -x 1 -F -s "$size" -n "$n" > /tmp/pt-srv.log 2>&1 & spid=$!
            t0=$(date +%s.%N); i=0
            until out=$($pin_c "$tool" -d $dev -x 1 -F -s "$size" -n "$n" $ip 2>&1); do
                i=$((i+1)); [ $i -lt 100 ] || { echo "$out"; kill $spid; return 1; }
                sleep 0.2   # the harness waits for perftest's server to listen; not our data path
            done
            t1=$(date +%s.%N)
            wait $spid || { cat /tmp/pt-srv.log; return 1; }
            line=$(echo "$out" | awk -v s="$size" '$1==s && NF>=5' | tail -1)
            [ -n "$line" ] || { echo "$out"; echo "no result line from $tool"; return 1; }
            echo "--- $tool -s $size -n $n (attempt $attempt): $line (client wall $(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}') s)"
            (check_number x "$(echo "$line" | awk -v c=$col '{print $c}')") 2>/dev/null && break
            echo "    perftest's clock calibration failed: $(echo "$out" | grep -m1 -E 'Correlation|differs|Conflicting' || echo 'no reason printed')"
            echo "PERFTEST_RETRY tool=$tool size=$size attempt=$attempt" >> "$raw"
        done
        CHECKS_CONTEXT="$tool -s $size, round $r" check_number "perftest (5 attempts)" "$(echo "$line" | awk -v c=$col '{print $c}')"
        if [ "$mode" = read_bw ]; then
            echo "$line" | awk -v n="$n" '{printf "RESULT tool=perftest mode=read_bw size=%s iters=%s bw_mib_s=%s msg_rate_mpps=%s\n", $1, n, $4, $5}' >> "$raw"
        else
            echo "$line" | awk '{printf "RESULT tool=perftest mode=read_lat size=%s iters=%s t_min_us=%s t_typical_us=%s t_avg_us=%s t_p99_us=%s\n", $1, $2, $3, $5, $6, $8}' >> "$raw"
        fi
    }
    wrapper() {   # wrapper MODE SIZE ITERS
        local out
        out=$($pin_c "$exe" client --mode "$1" --size "$2" --iters "$3" --server $ip:18600) || { echo "$out"; return 1; }
        echo "--- verbs_bench $1 -s $2 -n $3: $out"
        local res key
        res=$(echo "$out" | grep '^RESULT') || CHECKS_CONTEXT="wrapper $1 -s $2, round $r" checks_die "verbs_bench printed no RESULT line"
        key=bw_mib_s; [ "$1" = read-lat ] && key=t_typical_us
        CHECKS_CONTEXT="wrapper $1 -s $2, round $r" check_number "$key" "$(echo "$res" | tr ' ' '\n' | awk -F= -v k=$key '$1==k {print $2}')"
        echo "$res" >> "$raw"
    }
    for m in $modes; do nconn=$((nconn + rounds)); done
    $pin_s "$exe" server --port 18600 --conns $nconn & local wpid=$!
    for r in $(seq 1 "$rounds"); do
        echo "=== round $r"
        for m in $modes; do
            case $m in
                bw64) perftest ib_read_bw read_bw 65536 "$n64"; wrapper read-bw 65536 "$n64" ;;
                bw2m) perftest ib_read_bw read_bw 2097152 "$n2m"; wrapper read-bw 2097152 "$n2m" ;;
                lat) perftest ib_read_lat read_lat 2 "$nlat"; wrapper read-lat 2 "$nlat" ;;
                *) echo "unknown mode $m"; return 1 ;;
            esac
        done
    done
    wait $wpid
    echo "DONE" >> "$raw"
}

if [ "${1:-}" = --in-vm ]; then shift; in_vm "$@"; exit $?; fi

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"
vm=tests/vm/rdma-vm.sh
outdir=target/verbs-bench
raw=$outdir/raw.txt
if [ "${1:-}" = --report-only ]; then   # rewrite verbs.md from the last run's raw.txt
    [ -f "$raw" ] || { echo "no $raw: run perf/verbs_bench.sh first" >&2; exit 1; }
    secs=$(cat "$outdir/secs" 2>/dev/null || echo "?"); load=$(cat "$outdir/load" 2>/dev/null || echo "?")
else
"$vm" deps
cargo build --release --example verbs_bench
exe=target/release/examples/verbs_bench
mkdir -p "$outdir"
rm -f "$raw"
t0=$(date +%s)
set +e   # a failed VM run must reach the message below, not stop the script silently
RDMA_VM_TIMEOUT=${RDMA_VM_TIMEOUT:-1200} "$vm" run bash perf/verbs_bench.sh --in-vm "$exe" "$raw" \
    "${VERBS_BENCH_ROUNDS:-5}" "${VERBS_BENCH_BW_ITERS:-1000}" "${VERBS_BENCH_BW2M_ITERS:-100}" "${VERBS_BENCH_LAT_ITERS:-1000}" \
    "${VERBS_BENCH_MODES:-bw64 bw2m lat}" "${VERBS_BENCH_PIN:-0}" 2>&1 | tee "$outdir/vm.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] && grep -q '^DONE' "$raw" || { echo "verbs_bench: the VM run failed (exit $rc); see $outdir/vm.log" >&2; exit 1; }
secs=$(( $(date +%s) - t0 )); echo "$secs" > "$outdir/secs"
git rev-parse --short HEAD > "$outdir/commit"; echo "${VERBS_BENCH_ROUNDS:-5}" > "$outdir/rounds"
load=$(cut -d' ' -f1-3 /proc/loadavg); echo "$load" > "$outdir/load"
fi

notes() {
    cat <<'EOF'
## Reading these numbers

- **What bounds them.** Under TCG the whole RDMA data path is software twice over:
  `rdma_rxe` segments every READ response into 1 KiB (RoCE MTU 1024 on a 1500-byte
  netdev) UDP packets, computes the ICRC (CRC32) and copies every byte in the
  emulated guest kernel, ~20x slower than native. Both tools post the same work
  requests (RDMA READ, one SGE, same depth and signalling) through the same
  libibverbs/librxe provider, so ~20 MiB/s and ~100 us are rxe-in-TCG figures; the
  userspace above `ibv_post_send`/`ibv_poll_cq` is a rounding error at this speed.
  The comparison shows the wrapper adds no measurable cost, not what a real NIC does.
- **Noise.** The VM shares a 2-core host with other engineers' compilers; a single
  round can move by a factor of two or more (see the per-round table), which is why tools alternate
  inside each round and medians are reported. A ratio above 1.0 for bandwidth or
  below 1.0 for latency is noise, not a real advantage. Latency is bimodal in this
  VM for both tools (rounds at ~62 us and at ~110-140 us, by where the scheduler
  puts the two processes and the rxe tasklets), so a median over 5 rounds moves
  with how many rounds each tool drew in the fast mode.
- **Same clock as perftest.** The wrapper times each READ with the TSC
  (`logmemcached::rdma::cycles`, calibrated against the wall clock over the run),
  as perftest does. It used `Instant::now()` before; the VM's clocksource is HPET,
  which has no vDSO path, so that was two system calls per timed READ, and the
  wrapper's median came out 1.22x perftest's in the last run that used it.
- **If a goal shows MISSED**: rerun with `VERBS_BENCH_ROUNDS=9`; a miss that does not
  reproduce is the host's load. A reproducible miss would point at the wrapper's
  posting path (one `ibv_post_send` per READ, as perftest with `--post_list 1`),
  or at fewer outstanding READs (check `outs=` in target/verbs-bench/raw.txt; it
  should be the device maximum, 128 on rxe).
- **CPU pinning makes it worse.** With servers pinned to vCPU 0 and clients to
  vCPU 1 (`VERBS_BENCH_PIN=1`), both tools' 99th percentile latency jumped to
  ~4.6 ms: a client busy-polling its vCPU delays the rxe tasklets raised there
  until the next timer tick. The default run leaves placement to the scheduler.
- **perftest glitches.** perftest calibrates its cycle counter against
  gettimeofday at start; under TCG on a loaded host the fit can be poor
  (r^2 < 0.9), perftest then takes the clock rate as 0 and prints latency `inf`
  and bandwidth 0.00. Such a run measured nothing: the script retries it (up to
  5 times, each retry is a `PERFTEST_RETRY` line in target/verbs-bench/raw.txt)
  and fails if no attempt produced a number.
- **Earlier runs** (Nov 2026, before the script checked its figures) moved the
  same way: the sign of each gap flipped from run to run. At a few MiB/s and
  ~100 us both tools wait on the emulated kernel; a quiet host or a real NIC is
  needed to resolve differences below ~25%.
- perftest's time base is the TSC scaled by the guest's calibrated `cpu MHz`; its
  client wall times (in target/verbs-bench/vm.log) agree with its reported
  bandwidth, so the two tools are measured on the same clock.
EOF
}

# median of a key over the rounds for tool/mode/size
med() {  # med TOOL MODE SIZE KEY
    grep "^RESULT tool=$1 mode=$2 size=$3 " "$raw" | tr ' ' '\n' | awk -F= -v k="$4" '$1==k && $2+0 > 0 {print $2}' | sort -g \
        | awk '{v[NR]=$1} END{if(NR==0){print "nan"} else if(NR%2){print v[(NR+1)/2]} else {printf "%.2f\n",(v[NR/2]+v[NR/2+1])/2}}'
}
all() {  # all TOOL MODE SIZE KEY: every round's value
    grep "^RESULT tool=$1 mode=$2 size=$3 " "$raw" | tr ' ' '\n' | awk -F= -v k="$4" '$1==k{printf "%s%s", sep, $2; sep=", "}'
}
row() {  # row LABEL MODE SIZE KEY GOAL(bw|lat)
    local p w ratio ok
    p=$(med perftest "$2" "$3" "$4"); w=$(med wrapper "$2" "$3" "$4")
    ratio=$(awk -v p="$p" -v w="$w" 'BEGIN{ if (p+0>0) printf "%.2f", w/p; else print "nan" }')
    if [ "$5" = bw ]; then ok=$(awk -v r="$ratio" 'BEGIN{print (r+0 >= 0.9) ? "met" : "MISSED"}'); goal=">= 0.90"
    else ok=$(awk -v r="$ratio" 'BEGIN{print (r+0 <= 1.1 && r+0 > 0) ? "met" : "MISSED"}'); goal="<= 1.10"; fi
    echo "| $1 | $p | $w | $ratio | $goal | $ok |"
    if [ "$ok" = MISSED ]; then
        local pr wr
        pr=$(all perftest "$2" "$3" "$4" | tr ',' '\n' | awk '$1+0>0' | sort -g | awk 'NR==1{a=$1} {b=$1} END{print a" to "b}')
        wr=$(all wrapper "$2" "$3" "$4" | tr ',' '\n' | awk '$1+0>0' | sort -g | awk 'NR==1{a=$1} {b=$1} END{print a" to "b}')
        echo "- **$1 missed** (ratio $ratio): perftest's rounds ranged $pr, the wrapper's $wr." >> "$outdir/misses.md"
    fi
    echo "| $1 | $(all perftest "$2" "$3" "$4") | $(all wrapper "$2" "$3" "$4") | | | |" >> "$outdir/rounds.md"
}
: > "$outdir/rounds.md"; : > "$outdir/misses.md"
table=$(
    row "READ bandwidth, 64 KiB (MiB/s)" read_bw 65536 bw_mib_s bw
    row "READ bandwidth, 2 MiB (MiB/s)" read_bw 2097152 bw_mib_s bw
    row "READ latency, 2 B, typical/median (us)" read_lat 2 t_typical_us lat
    row "READ latency, 2 B, average (us)" read_lat 2 t_avg_us lat
    row "READ latency, 2 B, 99th percentile (us)" read_lat 2 t_p99_us lat
)
envline=$(grep '^ENV' "$raw" | head -1 | cut -d' ' -f2-)
# What was measured, as recorded by the run (--report-only may come later).
commit=$(cat "$outdir/commit" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERBS_BENCH_ROUNDS=$(cat "$outdir/rounds" 2>/dev/null || echo "${VERBS_BENCH_ROUNDS:-5}")
host_cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
{
    echo "# RDMA verbs: perftest vs logmemcached::rdma"
    echo
    echo "Generated by \`perf/verbs_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, in one"
    echo "Soft-RoCE (rxe0) QEMU VM run under TCG ($envline; host: $host_cpu, $(nproc) cores"
    echo "shared with other work; host load average at the end: $load), two processes on rxe0, $secs s"
    echo "wall including the release build."
    echo "Medians of ${VERBS_BENCH_ROUNDS:-5} rounds; tools alternate within each round. Wrapper = \`perf/verbs_bench.rs\`"
    echo "(same parameters as perftest: tx depth 128, one signaled READ in 100, outstanding READs = device max;"
    echo "latency: one signaled READ at a time, busy-polled). Iterations: 64 KiB x ${VERBS_BENCH_BW_ITERS:-1000},"
    echo "2 MiB x ${VERBS_BENCH_BW2M_ITERS:-100}, 2 B latency x ${VERBS_BENCH_LAT_ITERS:-1000}."
    echo
    echo "| measurement | perftest | wrapper | wrapper / perftest | goal | |"
    echo "|---|---:|---:|---:|---|---|"
    echo "$table"
    echo
    echo "Every round (perftest | wrapper; perftest runs whose clock calibration failed were retried: $(grep -c "^PERFTEST_RETRY" "$raw" || true) this run):"
    echo
    echo "| measurement | perftest rounds | wrapper rounds | | | |"
    echo "|---|---|---|---|---|---|"
    cat "$outdir/rounds.md"
    echo
    if [ -s "$outdir/misses.md" ]; then
        echo "## Misses in this run"
        echo
        cat "$outdir/misses.md"
        echo
        echo "Where those ranges overlap, the miss is inside this run's noise (see below), not a"
        echo "property of the wrapper; rerun with VERBS_BENCH_ROUNDS=9 on a quiet host to check."
        echo
    fi
    notes
} > perf/results/verbs.md
echo
cat perf/results/verbs.md
