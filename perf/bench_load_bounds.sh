#!/usr/bin/env bash
# What idle and hostile clients cost each server, Debian's memcached and
# logmemcached side by side in one run (perf/load_bounds.rs; the clients of
# tests/load.rs): RSS at start and per idle connection, 10,000 connections,
# the multi-get flood, slow readers and pipelined floods (RSS growth and
# another client's get p99 meanwhile), and RSS with the -m 64 cache full.
# Every figure is printed only after its replies were checked and every
# logmemcached run's stats showed 0 protocol_errors; a wrong or missing
# reply, or a protocol error, fails the run. Prints the table and writes
# perf/results/load_bounds.md.
#   perf/bench_load_bounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins --example load_bounds
out=perf/results/load_bounds.md
table=$(mktemp)
trap 'rm -f "$table"' EXIT
. perf/lib/checks.sh
load0=$(cut -d' ' -f1-3 /proc/loadavg)
./target/release/examples/load_bounds ./target/release/logmemcached /usr/bin/memcached "$table" \
    || checks_die "load_bounds failed (a reply was wrong or missing: see above)"
# The replies were checked by load_bounds itself; here, that every cell is a
# figure: RSS at start and every p99 a positive number, the rest numbers >= 0.
rows=$(tail -n +3 "$table" | grep -c '^| ' || true)
[ "$rows" -ge 10 ] || checks_die "load_bounds wrote $rows rows, expected 12"
while IFS='|' read -r _ name mc lm _; do
    name=$(echo "$name" | sed 's/ *$//; s/^ *//')
    for v in $mc $lm; do
        case $name in
            "RSS at start"* | *p99*) CHECKS_CONTEXT="$name" check_number "value" "$v" ;;
            *) awk -v v="$v" 'BEGIN { exit !(v ~ /^[0-9]+(\.[0-9]+)?$/) }' || CHECKS_CONTEXT="$name" checks_die "'$v' is not a figure" ;;
        esac
    done
done < <(tail -n +3 "$table")
{
    echo "# Idle and hostile clients: memcached and logmemcached side by side"
    echo
    echo "perf/bench_load_bounds.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r),"
    echo "$(/usr/bin/memcached -V) and logmemcached commit $(git rev-parse --short HEAD); load average $load0 at the start"
    echo "and $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work shares this box: p99s move with it, RSS does not)."
    echo "Both servers \`-m 64 -t 2\` (logmemcached \`--hugepages off\`), started fresh for each"
    echo "measurement; RSS is VmRSS from /proc. Flood clients keep 64 KiB receive windows and"
    echo "read nothing until the server is quiet; the probe's p99 covers the flood and 500 gets after."
    echo
    cat "$table"
} > "$out"
echo "wrote $out"
