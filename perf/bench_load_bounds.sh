#!/usr/bin/env bash
# What idle and hostile clients cost each server, Debian's memcached and
# logmemcached side by side in one run (perf/load_bounds.rs; the clients of
# tests/load.rs): RSS at start and per idle connection, 10,000 connections,
# the multi-get flood, slow readers and pipelined floods (RSS growth and
# another client's get p99 meanwhile), and RSS with the -m 64 cache full.
# Every figure is printed only after its replies were checked; a wrong or
# missing reply fails the run. Prints the table and writes
# perf/results/load_bounds.md.
#   perf/bench_load_bounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh test >/dev/null
cargo build --release -q --bins --example load_bounds
out=perf/results/load_bounds.md
table=$(mktemp)
trap 'rm -f "$table"' EXIT
./target/release/examples/load_bounds ./target/release/logmemcached /usr/bin/memcached "$table"
{
    echo "# Idle and hostile clients: memcached and logmemcached side by side"
    echo
    echo "perf/bench_load_bounds.sh, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r),"
    echo "$(/usr/bin/memcached -V) and logmemcached $(git rev-parse --short HEAD)."
    echo "Both servers \`-m 64 -t 2\` (logmemcached \`--hugepages off\`), started fresh for each"
    echo "measurement; RSS is VmRSS from /proc. Flood clients keep 64 KiB receive windows and"
    echo "read nothing until the server is quiet; the probe's p99 covers the flood and 500 gets after."
    echo
    cat "$table"
} > "$out"
echo "wrote $out"
