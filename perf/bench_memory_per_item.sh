#!/usr/bin/env bash
# Memory per item (issue 13): Debian's memcached 1.6 and logmemcached, side
# by side in one run at the same -m, filled with 10-byte keys and 10-byte
# values (twice what either can hold, so both evict and end full), then
# counted: curr_items (items at the same -m), RSS (VmRSS, which counts what
# -m does not: memcached's hash table, our index) and bytes per item of both.
# logmemcached runs with --hugepages off so its log is in VmRSS.
#
# Checked before any figure is printed (perf/lib/checks.sh): every set was
# stored (total_items moved by the sets sent, sent with noreply and synced by
# a `version` round trip; memcached may refuse a few with "out of memory"
# while it evicts, at most 0.1% pass and are shown in the table), both evicted (they are full), logmemcached's
# protocol_errors is 0, and the newest 2,000 keys written all come back with
# their own value byte for byte from both servers.
#
#   perf/bench_memory_per_item.sh [MB, default 64] [VALUE_LEN, default 10]
#   EXTRA_BINS="before=/path/to/logmemcached ..." adds rows for other builds
#   (same run, same fill), e.g. the build before a change.
# Writes perf/results/memory_per_item.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib/checks.sh
mb=${1:-64}
vlen=${2:-10}
[ "$(nproc)" -ge 2 ] || { echo "bench_memory_per_item: needs 2 cores to pin servers and filler apart" >&2; exit 1; }
command -v memcached >/dev/null || bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Items the fill writes: twice what a log of -m holds (48-byte record
# header, the 10-byte key, the value, aligned to 8).
rec=$(( (48 + 10 + vlen + 7) / 8 * 8 ))
n=$(( 2 * (mb << 20) / rec ))

# The filler: keys k000000000.., each value its key's number in hex (10
# bytes, repeated to the value's length), noreply sets in 1 MiB writes, then `version` to sync; then gets
# of the newest 2,000 keys, checked byte for byte. Exits non-zero on any
# mismatch.
cat > "$work/fill.py" <<'EOF'
import socket, sys
port, n, mode, vlen = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def key(i): return b"k%09d" % i
def val(i): return ((b"%010x" % i) * (vlen // 10 + 1))[:vlen]
if mode == "fill":
    buf = []
    size = 0
    for i in range(n):
        line = b"set " + key(i) + b" 0 0 %d noreply\r\n" % vlen + val(i) + b"\r\n"
        buf.append(line); size += len(line)
        if size >= 1 << 20:
            s.sendall(b"".join(buf)); buf = []; size = 0
    buf.append(b"version\r\n")
    s.sendall(b"".join(buf))
    l = f.readline()
    if not l.startswith(b"VERSION"):
        sys.exit("a noreply set failed: %r" % l)
else:
    want = 2000
    bad = 0
    for i in range(n - want, n):
        s.sendall(b"get " + key(i) + b"\r\n")
        l = f.readline()
        if l != b"VALUE " + key(i) + b" 0 %d\r\n" % vlen:
            bad += 1
            if l.startswith(b"VALUE"):
                f.readline(); f.readline()
            continue
        v = f.readline()
        if v != val(i) + b"\r\n" or f.readline() != b"END\r\n":
            bad += 1
    if bad:
        sys.exit("%d of the newest %d keys missing or wrong" % (bad, want))
EOF

bins=("logmemcached=./target/release/logmemcached")
for b in ${EXTRA_BINS:-}; do bins+=("$b"); done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
rows=$work/rows
: > "$rows"

measure() { # NAME PID PORT
    local name=$1 pid=$2 port=$3 base rss
    CHECKS_CONTEXT="$name"
    base=$(rss_kb "$pid")
    stats_snapshot "$port" > "$work/before"
    taskset -c 1 python3 "$work/fill.py" "$port" "$n" fill "$vlen" || checks_die "the fill failed"
    stats_snapshot "$port" > "$work/after"
    rss=$(rss_kb "$pid")
    local stored items evictions hash
    stored=$(stat_delta "$work/before" "$work/after" total_items)
    if [ "$name" = memcached ]; then
        [ "$stored" -le "$n" ] && [ $((n - stored)) -le $((n / 1000)) ] \
            || checks_die "total_items moved by $stored, $n sets were sent"
    else
        [ "$stored" -eq "$n" ] || checks_die "total_items moved by $stored, $n sets were sent"
    fi
    evictions=$(stat_get "$work/after" evictions)
    [ "${evictions:-0}" -gt 0 ] || checks_die "no evictions: the fill did not fill it"
    items=$(stat_get "$work/after" curr_items)
    check_number "curr_items" "$items"
    if check_no_protocol_errors "$work/before" "$work/after"; then :; fi
    taskset -c 1 python3 "$work/fill.py" "$port" "$n" check "$vlen" || checks_die "the newest keys did not come back"
    hash=$(stat_get "$work/after" hash_bytes)
    echo "$name $items $rss $base ${hash:-0} $evictions $((n - stored))" >> "$rows"
}

# memcached first, then each logmemcached build, one at a time on cpu0.
port=$(free_port)
taskset -c 0 memcached -u nobody -p "$port" -l 127.0.0.1 -U 0 -t 1 -m "$mb" & pid=$!; pids+=($pid)
wait_port "$port"
measure memcached "$pid" "$port"
kill "$pid"
for b in "${bins[@]}"; do
    name=${b%%=*}; bin=${b#*=}
    port=$(free_port)
    taskset -c 0 "$bin" serve -p "$port" -l 127.0.0.1 -t 1 -m "$mb" --hugepages off 2>"$work/lm.err" & pid=$!; pids+=($pid)
    wait_port "$port"
    measure "$name" "$pid" "$port"
    kill "$pid"
done

mc_items=$(awk '$1 == "memcached" { print $2 }' "$rows")
mc_rss=$(awk '$1 == "memcached" { print $3 }' "$rows")
out=perf/results/memory_per_item.md
[ "$vlen" = 10 ] || out=perf/results/memory_per_item_${vlen}.md
{
    echo "# Memory per item: memcached and logmemcached at the same -m"
    echo
    echo "perf/bench_memory_per_item.sh $mb $vlen, $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
    echo "$(uname -r), logmemcached $(git rev-parse --short HEAD), $(memcached -V); load average before: $load0."
    echo "Both \`-m $mb -t 1\` pinned to cpu0 (logmemcached \`--hugepages off\`, so its log counts in RSS), the filler on cpu1:"
    echo "$n sets of 10-byte keys and $vlen-byte values (twice what a $mb MiB log holds), so both end full and evicting."
    echo "Checked first: every set stored (total_items; memcached may refuse up to 0.1% while it evicts: last column),"
    echo "evictions > 0, no protocol_errors (logmemcached),"
    echo "the newest 2,000 keys read back byte for byte from each."
    echo
    echo "| server | curr_items | items vs memcached | -m bytes per item | RSS after fill, MiB | RSS per item, B | RSS vs memcached per item | index (hash_bytes) per item, B | RSS at start, MiB | sets not stored |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    while read -r name items rss base hash ev lost; do
        awk -v n="$name" -v i="$items" -v r="$rss" -v b="$base" -v h="$hash" -v mi="$mc_items" -v mr="$mc_rss" -v m="$mb" -v l="$lost" 'BEGIN {
            per = r * 1024 / i; mcper = mr * 1024 / mi
            printf "| %s | %d | %.2f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %d |\n", n, i, i / mi, m * 1048576 / i, r / 1024, per, per / mcper, h / i, b / 1024, l }'
    done < "$rows"
} > "$out"
cat "$out"
echo "wrote $out"
