#!/usr/bin/env bash
# The TCP data path's system calls and CPU, side by side in one run:
# Debian's memcached 1.6, logmemcached --io epoll and logmemcached --io uring,
# all three -t 1 pinned to cpu0, memcaslap -T 1 -c 16 pinned to cpu1
# (taskset), the servers alternating order every round. Workloads, each with
# 100-byte and 4 KiB values and 64-byte keys:
#   mixed  90% get / 10% set (memcaslap's proportions, single-key gets)
#   multi  the same proportions of keys, gets as multi-gets of 50 keys (-d 50)
#   set    set only
# Every run is checked before it counts (perf/lib/checks.sh): no error
# replies, no protocol_errors, cmd_get/cmd_set/get_hits/get_misses moved by
# what memcaslap says it sent (within what can be in flight when it stops: a
# request per connection, 50 keys for a multi-get), every set stored, the get
# share as asked. An invalid run exits 1.
# Reported per server: operations per server CPU-second (memcaslap's and the
# server's unit: a key got or set; CPU is utime+stime of every thread from
# /proc/PID/stat over the run) and system calls per request: every syscall
# entry of the server's threads (perf stat -e raw_syscalls:sys_enter, counting
# only while memcaslap runs: enabled and disabled through perf's control fifo)
# over the protocol requests (sets + gets, a multi-get being one request).
# Medians of the rounds; each round listed. Writes perf/results/io.md.
#   perf/bench_io.sh [seconds per run, default 5] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib/checks.sh
secs=${1:-5}
rounds=${2:-3}
[ "$(nproc)" -ge 2 ] || { echo "bench_io: needs 2 cores to pin server and load apart" >&2; exit 1; }
command -v perf >/dev/null || { echo "bench_io: needs perf (apt-get install linux-perf)" >&2; exit 1; }
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)


# A syscall counter for PID, attached and disabled; `perf_on`/`perf_off` wait
# for perf's acknowledgement, so the window is exactly memcaslap's run.
perf_start() { # PID
    rm -f "$work/ctl" "$work/ack"; mkfifo "$work/ctl" "$work/ack"
    perf stat -x, -D -1 --control "fifo:$work/ctl,$work/ack" -e raw_syscalls:sys_enter -p "$1" -o "$work/perf" 2>"$work/perf.err" &
    perf_pid=$!
    exec 7>"$work/ctl" 8<"$work/ack"
}
perf_cmd() { echo "$1" >&7; local a; read -r -t 10 a <&8 && [ "$a" = ack ] || checks_die "perf did not acknowledge $1"; }
perf_stop() { # sets CALLS: the syscalls counted (not in $(...): perf is this shell's child)
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    exec 7>&- 8<&-
    CALLS=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$work/perf")
}

conc=16
for size in 100 4096; do
    printf 'key\n64 64 1\nvalue\n%s %s 1\ncmd\n0 0.1\n1 0.9\n' "$size" "$size" > "$work/mixed$size.cfg"
    cp "$work/mixed$size.cfg" "$work/multi$size.cfg"
    printf 'key\n64 64 1\nvalue\n%s %s 1\ncmd\n0 1.0\n1 0.0\n' "$size" "$size" > "$work/set$size.cfg"
done
workloads="mixed100 multi100 set100 mixed4096 multi4096 set4096"
declare -A spins=()
declare -A share=([mixed]=0.9 [multi]=0.9 [set]=0) division=([mixed]=1 [multi]=50 [set]=1)
raw=$work/raw
: > "$raw"
tck=$(clk_tck)

# Fresh servers for each value size and round: memcached's slab classes,
# once filled by 100-byte items, leave 4 KiB sets "out of memory", and a
# memcached long full of 4 KiB items answers some sets "out of memory" too
# (seen in round 2 of a 3-round run); each round then starts from empty
# memory for all three alike.
for size in 100 4096; do
    for r in $(seq "$rounds"); do
        mc_port=$(free_port); ep_port=$(free_port); ur_port=$(free_port)
        taskset -c 0 memcached -u nobody -p "$mc_port" -l 127.0.0.1 -U 0 -t 1 -m 1024 -c 1024 & mc_pid=$!; pids+=("$mc_pid")
        for io in epoll uring; do
            port=$ep_port; [ "$io" = uring ] && port=$ur_port
            taskset -c 0 ./target/release/logmemcached serve -p "$port" -l 127.0.0.1 -t 1 -m 1024 -c 1024 --io "$io" \
                --hugepages auto 2>"$work/$io.err" & pid=$!; pids+=("$pid")
            [ "$io" = uring ] && ur_pid=$pid || ep_pid=$pid
        done
        wait_port "$mc_port"; wait_port "$ep_port"; wait_port "$ur_port"
        for p in "$ep_port" "$ur_port"; do
            stats_snapshot "$p" settings > "$work/settings"
            want=epoll; [ "$p" = "$ur_port" ] && want=uring
            [ "$(stat_get "$work/settings" io_mode)" = "$want" ] || checks_die "the --io $want server reports io_mode $(stat_get "$work/settings" io_mode)"
            spins[$want]=$(stat_get "$work/settings" poll_idle_spins)
        done

        # 4 KiB runs start from full memory, as a cache that has run a while
        # does: a fresh server's first touch of each page (zeroing it, and
        # on this VM the host backing it) was half its CPU on 4 KiB sets,
        # a start-up cost and not the request path's. So each server first
        # takes 10% more value bytes than -m holds, untimed but checked.
        # (At 100 B that fill is over 5 M sets and first touches are under
        # 1% of the CPU: no warm-up.)
        if [ "$size" = 4096 ]; then
            for who in mc ep ur; do
                case $who in mc) port=$mc_port ;; ep) port=$ep_port ;; ur) port=$ur_port ;; esac
                CHECKS_CONTEXT="round $r, warm-up fill, $who"
                stats_snapshot "$port" > "$work/before"
                taskset -c 1 memcaslap -s "127.0.0.1:$port" -T 1 -c "$conc" -x $((1024 * 1024 * 1024 / 4096 * 11 / 10)) \
                    -F "$work/set4096.cfg" > "$work/out" 2>&1 || checks_die "memcaslap failed: $(tail -3 "$work/out" | tr '\n' ' ')"
                stats_snapshot "$port" > "$work/after"
                check_memcaslap_run "$work/out" "$work/before" "$work/after" "$conc" 0
            done
        fi
        case $((r % 3)) in 1) order="mc ep ur" ;; 2) order="ep ur mc" ;; *) order="ur mc ep" ;; esac
        for wl in mixed$size multi$size set$size; do
            kind=${wl%%[0-9]*}
            for who in $order; do
                case $who in mc) port=$mc_port; pid=$mc_pid ;; ep) port=$ep_port; pid=$ep_pid ;; ur) port=$ur_port; pid=$ur_pid ;; esac
                CHECKS_CONTEXT="round $r, $wl, $who"
                perf_start "$pid"
                stats_snapshot "$port" > "$work/before"
                c0=$(cpu_ticks "$pid")
                perf_cmd enable
                taskset -c 1 memcaslap -s "127.0.0.1:$port" -T 1 -c "$conc" -t "${secs}s" -F "$work/$wl.cfg" \
                    -d "${division[$kind]}" > "$work/out" 2>&1 || checks_die "memcaslap failed: $(tail -3 "$work/out" | tr '\n' ' ')"
                perf_cmd disable
                c1=$(cpu_ticks "$pid")
                stats_snapshot "$port" > "$work/after"
                perf_stop; calls=$CALLS
                check_number "syscalls counted by perf" "$calls"
                check_memcaslap_run "$work/out" "$work/before" "$work/after" $((conc * ${division[$kind]})) "${share[$kind]}"
                gets=$(stat_delta "$work/before" "$work/after" cmd_get); sets=$(stat_delta "$work/before" "$work/after" cmd_set)
                ops=$((gets + sets))
                reqs=$(awk -v g="$gets" -v s="$sets" -v d="${division[$kind]}" 'BEGIN { printf "%d", s + g / d }')
                ops_cpu=$(awk -v c=$((c1 - c0)) -v t="$tck" -v n="$ops" 'BEGIN { if (c > 0) printf "%.0f", n * t / c }')
                check_number "operations per server CPU-second" "$ops_cpu"
                per_req=$(awk -v c="$calls" -v n="$reqs" 'BEGIN { printf "%.3f", c / n }')
                echo "$r $wl $who $MS_TPS $ops_cpu $per_req $reqs $calls" >> "$raw"
                echo "round $r  $wl  $who  $MS_TPS ops/s  $ops_cpu ops/CPU-s  $per_req syscalls/request  (checked: $MS_GETS gets, $MS_SETS sets, 0 errors)" >&2
            done
        done
        kill "$mc_pid" "$ep_pid" "$ur_pid"; wait "$mc_pid" "$ep_pid" "$ur_pid" 2>/dev/null || true
        pids=()
    done
done
unset CHECKS_CONTEXT

med() { # WL WHO FIELD -> median over rounds
    awk -v w="$1" -v s="$2" -v k="$3" '$2 == w && $3 == s { print $k }' "$raw" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
paired() { # WL -> median over rounds of uring/memcached within the round (the two ran back to back)
    awk -v w="$1" '$2 == w && $3 == "ur" { u[$1] = $5 } $2 == w && $3 == "mc" { m[$1] = $5 }
        END { for (r in u) if (m[r] > 0) printf "%.4f\n", u[r] / m[r] }' "$raw" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v g="$2" -v dir="$3" 'BEGIN { ok = (dir == "le") ? v <= g : v >= g; print ok ? "met" : "missed" }'; }
name() {
    case $1 in
        mixed*) n="90% get / 10% set" ;; multi*) n="90/10, gets as multi-get of 50" ;; set*) n="set only" ;;
    esac
    case $1 in *4096) echo "$n, 4 KiB" ;; *) echo "$n, 100 B" ;; esac
}
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
out=perf/results/io.md
{
    echo "# TCP data path: io_uring vs epoll vs memcached"
    echo
    echo "perf/bench_io.sh $secs $rounds on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty; $(nproc) cores"
    echo "($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)), load average $load0 at the start and"
    echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end (other work shares this box); memcached $(memcached -V | awk '{print $2}')."
    echo "All three servers -t 1 -m 1024 pinned to cpu0, memcaslap -T 1 -c $conc pinned to cpu1, ${secs} s per run,"
    echo "alternating order, fresh servers for each value size and round (at 4 KiB first filled with 1.1x -m of sets, untimed); logmemcached with its defaults otherwise (--poll adaptive,"
    echo "idle spins before blocking: epoll ${spins[epoll]}, uring ${spins[uring]}). Medians of $rounds rounds."
    echo "Every run was checked before it counted: no error replies, no protocol_errors, the server's"
    echo "cmd_get/cmd_set/get_hits/get_misses within what can be in flight of what memcaslap sent, every set stored."
    echo
    echo "- ops per CPU-second: keys got or set (memcaslap's unit; a multi-get of 50 is 50) over the server"
    echo "  process's utime+stime (/proc/PID/stat, all threads) during the run."
    echo "- syscalls per request: syscall entries of all the server's threads (perf stat -e raw_syscalls:sys_enter,"
    echo "  enabled only while memcaslap ran) over protocol requests (sets + gets; a multi-get is one request)."
    echo
    echo "Goals (issue 13): uring <= 0.5 syscalls per request at 16 connections; uring >= 1.25x memcached's ops per CPU-second."
    echo
    echo "| workload | memcached ops/CPU-s | epoll ops/CPU-s | uring ops/CPU-s | uring/memcached (goal >= 1.25) | same, median of each round's ratio | uring/epoll | memcached syscalls/req | epoll syscalls/req | uring syscalls/req (goal <= 0.5) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for wl in $workloads; do
        mc=$(med "$wl" mc 5); ep=$(med "$wl" ep 5); ur=$(med "$wl" ur 5)
        smc=$(med "$wl" mc 6); sep=$(med "$wl" ep 6); sur=$(med "$wl" ur 6)
        ratio=$(div "$ur" "$mc")
        echo "| $(name "$wl") | ${mc%.*} | ${ep%.*} | ${ur%.*} | $ratio ($(verdict "$ratio" 1.25 ge)) | $(paired "$wl") | $(div "$ur" "$ep") | $smc | $sep | $sur ($(verdict "$sur" 0.5 le)) |"
    done
    echo
    echo "Each round (memcaslap ops/s, ops per CPU-second, syscalls per request):"
    echo
    echo "| round | workload | memcached | epoll | uring |"
    echo "|---:|---|---|---|---|"
    for r in $(seq "$rounds"); do
        for wl in $workloads; do
            cell() { awk -v r="$r" -v w="$wl" -v s="$1" '$1==r && $2==w && $3==s {print $4", "$5", "$6}' "$raw"; }
            echo "| $r | $wl | $(cell mc) | $(cell ep) | $(cell ur) |"
        done
    done
} | tee "$out"
