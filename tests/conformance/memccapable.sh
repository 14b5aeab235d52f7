#!/usr/bin/env bash
# memccapable (Debian's libmemcached-tools) against logmemcached.
#
#   tests/conformance/memccapable.sh        the ascii (text protocol) tests: memccapable -a
#   tests/conformance/memccapable.sh all    every test, binary protocol included
#
# Builds the binary (cargo build), starts it on a free 127.0.0.1 port, runs
# memccapable, prints its results and a summary, stops the server by its pid,
# and exits non-zero if any test failed. $LOGMEMCACHED_BIN overrides the binary.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! command -v memccapable >/dev/null; then
    echo "memccapable not found: apt-get install libmemcached-tools" >&2
    exit 2
fi
mode=ascii
args=(-a)
if [ "${1:-}" = all ]; then
    mode=all
    args=()
fi

cargo build --quiet || exit 2
bin=${LOGMEMCACHED_BIN:-${CARGO_TARGET_DIR:-target}/debug/logmemcached}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$bin" serve -p "$port" -l 127.0.0.1 --hugepages off -t 2 -m 64 &
pid=$!
stop() {
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
}
trap stop EXIT

for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

out=$(timeout 120 memccapable "${args[@]}" -h 127.0.0.1 -p "$port" 2>&1)
rc=$?
echo "$out"
passed=$(grep -c '\[pass\]' <<<"$out")
failed=$(grep -Eci '\[(fail|failed)\]' <<<"$out")
echo "memccapable ($mode): $passed passed, $failed failed (exit $rc)"
if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    exit 1
fi
