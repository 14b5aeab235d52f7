#!/usr/bin/env bash
# Restart speed from a memory file (-e): a 1 GiB log (-m 1024) filled with
# 100-byte and with 4 KB values, kill -9, restart, time to the first served
# request (perf/restart_bench.rs). Every figure is printed only after the
# restarted server served every item (curr_items against what was written,
# no evictions, 2,000 sampled values byte for byte, all counted as hits, and
# protocol_errors 0 in the server's stats before and after); the checks are
# in perf/restart_bench.rs, which exits non-zero (and this script with it)
# when one fails. Needs ~3 GiB of
# /dev/shm and ~2 GiB of RAM for the index. Writes perf/results/restart.md.
#   perf/bench_restart.sh [DIR]     (DIR for the memory file; default /dev/shm)
#   BEFORE_BIN=/path/to/logmemcached adds that build's rows first, in the
#   same run (a before/after comparison on the same host load).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/dev/shm}
cargo build --release -q --bins --example restart_bench
out=perf/results/restart.md
table=$(mktemp)
trap 'rm -f "$table" "$table.one"' EXIT
. perf/lib/checks.sh
builds=()
[ -n "${BEFORE_BIN:-}" ] && builds+=("before=$BEFORE_BIN")
builds+=("$(git rev-parse --short HEAD)=./target/release/logmemcached")
: > "$table"
for b in "${builds[@]}"; do
    ./target/release/examples/restart_bench "${b#*=}" "$dir" 100 4096 > "$table.one" \
        || checks_die "restart_bench failed for ${b%%=*} (an item, a stat or a count was wrong: see above)"
    rows=$(grep -c '^| [0-9]' "$table.one" || true)
    [ "$rows" -eq 2 ] || checks_die "restart_bench wrote $rows rows for ${b%%=*}, expected 2"
    if [ ! -s "$table" ]; then
        grep '^| value' "$table.one" | sed 's/^| value/| build | value/' >> "$table"
        grep '^|---' "$table.one" | sed 's/^|/|---|/' >> "$table"
    fi
    grep '^| [0-9]' "$table.one" | sed "s/^|/| ${b%%=*} |/" >> "$table"
done
rm -f "$table.one"
cat "$table"
{
    echo "# Restart speed from a memory file (-e)"
    echo
    echo "perf/bench_restart.sh, $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
    echo "$(uname -r), logmemcached $(git rev-parse --short HEAD); memory file on $(df --output=fstype "$dir" | tail -1) ($dir),"
    echo "\`-m 1024 -t 1 --hugepages off\`, keys of 10 bytes, the log filled to its end without evicting,"
    echo "then kill -9 and a restart on the file. restart_scan_us: the server validating every record"
    echo "(position, CRC32C, bounds) and rebuilding the index, on one core; restart_us: the whole open"
    echo "(mapping the file included); spawn to first reply: process start to the first answered request."
    echo
    cat "$table"
} > "$out"
echo "wrote $out"
