# perf/lib/checks.sh - the validity checks every perf script runs before it
# prints a figure. A benchmark that did not check its replies measured
# nothing: memcaslap once sent keys the server refused, every request got
# CLIENT_ERROR, and the tables compared memcached's work with error replies.
#
#   . "$(dirname "$0")/lib/checks.sh"
#
# Every check_* function either returns quietly or prints one line
#   INVALID [context]: what was wrong
# on stderr and exits the script with status 1 (call them in the script's own
# shell, not inside $(...), or only the subshell exits). Set CHECKS_CONTEXT to
# name the run being checked ("round 2, set, memcached").
#
# Stats snapshots are files of "name value" lines:
#   stats_snapshot PORT [GROUP] > FILE      `stats [GROUP]` over TCP on 127.0.0.1
#                                           (CHECKS_HOST overrides), ending in END
#   stat_get FILE NAME                      a value, or empty when absent
#   stat_delta BEFORE AFTER NAME            after - before (fails if absent)
# Checks:
#   check_number LABEL VALUE                finite and > 0 (an anchor measurement
#                                           that printed inf, nan, 0 or nothing fails)
#   check_within LABEL GOT WANT TOL         |GOT - WANT| <= TOL
#   check_ratio_within LABEL GOT WANT FRAC  |GOT - WANT| <= FRAC * WANT
#   check_no_protocol_errors BEFORE AFTER   protocol_errors did not move; where the
#                                           server has no such stat (memcached), says
#                                           so by returning 1: check the tool's errors
#   check_stored_all BEFORE AFTER           every set was stored: total_items moved
#                                           by cmd_set, and curr_items is not 0
#   check_replicas_caught_up PRIMARY_PORT TIMEOUT_S REPLICA_PORT...
#                                           each replica's applied reaches the
#                                           primary's head, invalid_records is 0
# memcaslap:
#   memcaslap_parse FILE                    sets MS_GETS MS_SETS MS_MISSES MS_OPS
#                                           MS_TPS MS_ERRORS from its output
#   check_memcaslap_run OUT BEFORE AFTER INFLIGHT GET_SHARE
#                                           the tool's output and the server's stats
#                                           agree: no error replies, cmd_get/cmd_set/
#                                           get_hits/get_misses moved by what the tool
#                                           says (within INFLIGHT, the requests that
#                                           can be in flight when it stops), every set
#                                           stored, the get share as configured
# CPU:
#   cpu_ticks PID                           utime + stime of the process, in ticks
#   clk_tck                                 ticks per second
#
# Used by perf/bench_*.sh; other scripts may source it too.

CHECKS_HOST=${CHECKS_HOST:-127.0.0.1}

checks_die() {
    echo "INVALID${CHECKS_CONTEXT:+ [$CHECKS_CONTEXT]}: $*" >&2
    exit 1
}

stats_snapshot() { # PORT [GROUP]
    local port=$1 group=${2:-} line ok=0
    exec 9<>"/dev/tcp/$CHECKS_HOST/$port" || checks_die "stats${group:+ $group}: cannot connect to $CHECKS_HOST:$port"
    printf 'stats%s\r\n' "${group:+ $group}" >&9
    while IFS= read -r -t 10 line <&9; do
        line=${line%$'\r'}
        case $line in
            END) ok=1; break ;;
            "STAT "*) line=${line#STAT }; echo "${line%% *} ${line#* }" ;;
            *) exec 9>&-; checks_die "stats${group:+ $group} on port $port answered: $line" ;;
        esac
    done
    exec 9>&-
    [ "$ok" = 1 ] || checks_die "stats${group:+ $group} on port $port: no END within 10 s"
}

stat_get() { # FILE NAME
    awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$1"
}

stat_delta() { # BEFORE AFTER NAME
    local b a
    b=$(stat_get "$1" "$3"); a=$(stat_get "$2" "$3")
    [ -n "$b" ] && [ -n "$a" ] || checks_die "stat $3 missing from the server's stats"
    echo $((a - b))
}

check_number() { # LABEL VALUE
    awk -v v="$2" 'BEGIN { exit !(v ~ /^[+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/ && v + 0 > 0) }' \
        || checks_die "$1: got '${2}', not a positive number (the measurement failed)"
}

check_within() { # LABEL GOT WANT TOL
    awk -v g="$2" -v w="$3" -v t="$4" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(d <= t) }' \
        || checks_die "$1: $2, expected $3 within $4"
}

check_ratio_within() { # LABEL GOT WANT FRAC
    awk -v g="$2" -v w="$3" -v f="$4" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(d <= f * w) }' \
        || checks_die "$1: $2, expected $3 within $(awk -v f="$4" 'BEGIN{print f*100}')%"
}

check_no_protocol_errors() { # BEFORE AFTER -> 0 checked, 1 the server does not count them
    [ -n "$(stat_get "$2" protocol_errors)" ] || return 1
    local d; d=$(stat_delta "$1" "$2" protocol_errors)
    [ "$d" = 0 ] || checks_die "the server counted $d protocol errors during the run"
    return 0
}

check_stored_all() { # BEFORE AFTER
    local sets items curr
    sets=$(stat_delta "$1" "$2" cmd_set); items=$(stat_delta "$1" "$2" total_items)
    curr=$(stat_get "$2" curr_items)
    [ "$items" = "$sets" ] || checks_die "$sets sets reached the server but $items were stored (total_items)"
    [ "$sets" = 0 ] || [ "${curr:-0}" -gt 0 ] || checks_die "curr_items is 0 after $sets stored sets"
}

check_replicas_caught_up() { # PRIMARY_PORT TIMEOUT_S REPLICA_PORT...
    local pport=$1 timeout=$2 r head applied invalid t0 snap
    shift 2
    snap=$(mktemp)
    stats_snapshot "$pport" replication > "$snap"
    head=$(stat_get "$snap" head)
    [ -n "$head" ] || { rm -f "$snap"; checks_die "the primary on port $pport reports no replication head"; }
    for r in "$@"; do
        t0=$SECONDS
        while :; do
            stats_snapshot "$r" replication > "$snap"
            applied=$(stat_get "$snap" applied)
            [ -n "$applied" ] || { rm -f "$snap"; checks_die "port $r is not a replica (no applied in stats replication)"; }
            [ "$applied" -ge "$head" ] && break
            [ $((SECONDS - t0)) -lt "$timeout" ] || {
                rm -f "$snap"
                checks_die "replica on port $r applied $applied of the primary's head $head within ${timeout} s"
            }
            sleep 0.05 # the harness waiting for a replica, not the data path
        done
        invalid=$(stat_get "$snap" invalid_records)
        [ "$invalid" = 0 ] || { rm -f "$snap"; checks_die "replica on port $r counted ${invalid:-?} invalid records"; }
    done
    rm -f "$snap"
}

memcaslap_parse() { # FILE
    MS_GETS=$(awk '/^cmd_get:/ { print $2 }' "$1" | tail -1)
    MS_SETS=$(awk '/^cmd_set:/ { print $2 }' "$1" | tail -1)
    MS_MISSES=$(awk '/^get_misses:/ { print $2 }' "$1" | tail -1)
    MS_OPS=$(awk '/^Run time:/ { for (i = 1; i <= NF; i++) if ($i == "Ops:") print $(i + 1) }' "$1" | tail -1)
    MS_TPS=$(awk '/^Run time:/ { for (i = 1; i <= NF; i++) if ($i == "TPS:") print $(i + 1) }' "$1" | tail -1)
    # memcaslap echoes every reply it did not expect as "<fd reply"
    # (CLIENT_ERROR, SERVER_ERROR, ERROR) and counts it as an operation.
    MS_ERRORS=$(grep -cE '^<[0-9]+ ' "$1" || true)
}

check_memcaslap_run() { # OUT BEFORE AFTER INFLIGHT GET_SHARE
    local out=$1 before=$2 after=$3 tol=$4 share=$5 gets sets hits misses
    memcaslap_parse "$out"
    [ -n "$MS_OPS" ] && [ -n "$MS_GETS" ] && [ -n "$MS_SETS" ] \
        || checks_die "memcaslap printed no summary: $(tail -3 "$out" | tr '\n' ' ')"
    check_number "memcaslap TPS" "$MS_TPS"
    [ "$MS_ERRORS" = 0 ] || checks_die "memcaslap got $MS_ERRORS error replies, e.g. '$(grep -m1 -E '^<[0-9]+ ' "$out")'"
    check_no_protocol_errors "$before" "$after" || true # memcached has no such stat: MS_ERRORS covers it
    gets=$(stat_delta "$before" "$after" cmd_get); sets=$(stat_delta "$before" "$after" cmd_set)
    hits=$(stat_delta "$before" "$after" get_hits); misses=$(stat_delta "$before" "$after" get_misses)
    check_within "server cmd_get vs memcaslap's gets" "$gets" "$MS_GETS" "$tol"
    check_within "server cmd_set vs memcaslap's sets" "$sets" "$MS_SETS" "$tol"
    check_within "server get_hits vs memcaslap's gets less its misses" "$hits" "$((MS_GETS - MS_MISSES))" "$tol"
    check_within "server get_misses vs memcaslap's misses" "$misses" "$MS_MISSES" "$tol"
    check_stored_all "$before" "$after"
    # The mix memcaslap ran is the one asked for (all sets means its gets never started).
    check_within "memcaslap's get share" "$(awk -v g="$MS_GETS" -v o="$MS_OPS" 'BEGIN { print g / o }')" "$share" 0.02
}

cpu_ticks() { # PID
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

clk_tck() {
    getconf CLK_TCK
}

free_port() { # -> a TCP port on 127.0.0.1 free at this moment
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
wait_port() { # PORT: until a server listens on it (5 s), else fail
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done
    echo "port $1 never opened" >&2; return 1
}
