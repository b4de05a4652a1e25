#!/usr/bin/env bash
# Chat-room load benchmark: `wirechat room` and `ncat --chat` side by side, same load generator
# (bench/roomload.rs), same machine, one run. Loopback only; every run is bounded in count and
# time. Usage: [REPEAT=N] bench/room.sh [quick]   (quick: smaller runs, for a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each process needs a descriptor per client: raise the soft limit to the hard limit.
ulimit -n "$(ulimit -Hn)"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr), ulimit -n $(ulimit -n)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build -q --release --bin wirechat --example roomload --example roomfloor
LOAD=target/release/examples/roomload
WIRECHAT=target/release/wirechat
HAVE_NCAT=1
command -v ncat >/dev/null || { HAVE_NCAT=0; echo "# ncat not installed: its rows are skipped"; }
tmp=$(mktemp -d)
SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start_wirechat() { # extra room options
    # Emptied first: the previous server's "listening on" line must not be read as this one's.
    : >"$tmp/err"
    "$WIRECHAT" room 127.0.0.1:0 --rate 0 --max-clients 20000 -q "$@" </dev/null 2>"$tmp/err" &
    SPID=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/err")
        [ -n "$PORT" ] && return
        sleep 0.05
    done
    echo "wirechat room did not start"; cat "$tmp/err"; exit 1
}

start_ncat() { # $1: max clients
    # ncat cannot be told to pick its own port: take a free one and try again if someone else
    # took it before ncat could (then ncat exits, which is checked before every probe).
    for _ in 1 2 3; do
        PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        ncat --chat -l 127.0.0.1 "$PORT" -m "$1" </dev/null >/dev/null 2>"$tmp/err" &
        SPID=$!
        for _ in $(seq 100); do
            kill -0 "$SPID" 2>/dev/null || break
            (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
            sleep 0.05
        done
        kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null || true
    done
    echo "ncat did not start: $(cat "$tmp/err")"; SPID=""; exit 1
}

stop_server() {
    if kill -0 "$SPID" 2>/dev/null; then
        kill "$SPID"; wait "$SPID" 2>/dev/null || true
    else
        echo "   (server had already exited: $(wait "$SPID" 2>/dev/null; echo status $?))"
    fi
    SPID=""
}

run() { # $1 label, $2 server (wirechat|wirechat-t2|ncat), rest: roomload args
    local label=$1 server=$2; shift 2
    local clients
    clients=$(echo "$@" | sed -n 's/.*--clients \([0-9]*\).*/\1/p')
    case $server in
        ncat)
            [ "$HAVE_NCAT" = 1 ] || return 0
            start_ncat "$((clients + 10))" ;;
        wirechat-t2) start_wirechat --threads 2 ;;
        *) start_wirechat ;;
    esac
    echo "\$ roomload --label $server-$label $*"
    "$LOAD" --addr "127.0.0.1:$PORT" --server-pid "$SPID" --label "$server-$label" "$@" \
        | tee "$tmp/out"
    grep '^|' "$tmp/out" >>"$tmp/table"
    stop_server
    echo
}

# Steady-state runs connect 8 at a time (so ncat's listen backlog of 10 does not decide them);
# the burst runs connect everyone at once.
if [ "${1:-}" = quick ]; then
    scenarios=(
        "c100 --clients 100 --senders 4 --messages 100 --rate 50 --connect-concurrency 8"
    )
else
    scenarios=(
        "c10 --clients 10 --senders 4 --messages 250 --rate 50"
        "c1000 --clients 1000 --senders 4 --messages 500 --rate 50 --connect-concurrency 8"
        "burst5000 --clients 5000 --senders 4 --messages 50 --rate 10"
        "c10000 --clients 10000 --senders 4 --messages 100 --rate 10 --connect-concurrency 8"
        "sat1000 --clients 1000 --senders 4 --messages 2500 --rate 250 --connect-concurrency 8"
        "sat1000x2 --clients 1000 --senders 4 --messages 5000 --rate 500 --connect-concurrency 8"
    )
fi
# The two latency targets (c1000, c10000) move with the machine from run to run: wirechat runs
# them REPEAT times (default 3), one row each.
REPEAT=${REPEAT:-3}
for sc in "${scenarios[@]}"; do
    # shellcheck disable=SC2086
    set -- $sc
    name=$1; shift
    run "$name" wirechat "$@"
    case $name in
        c1000|c10000) for i in $(seq 2 "$REPEAT"); do run "$name#$i" wirechat "$@"; done ;;
    esac
    # The room's default is one thread; the main scenarios also run with two.
    case $name in c1000|c10000|sat1000) run "$name" wirechat-t2 "$@" ;; esac
    # The floor under the c1000 target: the same load through a program that does nothing but
    # the sends and the reads (bench/roomfloor.rs), REPEAT times like the room.
    if [ "$name" = c1000 ]; then
        for i in $(seq 1 "$REPEAT"); do
            echo "\$ roomfloor --clients 1000 --rate 200 --lines 2000"
            target/release/examples/roomfloor --clients 1000 --rate 200 --lines 2000 | tee -a "$tmp/floor"
            echo
        done
    fi
    run "$name" ncat "$@"
done

# Latency is to the generator's read; "arrival" is to the line's arrival in the client's socket
# (kernel receive timestamp), without the time it waited for a generator thread.
echo "| run | clients | delivered/expected | lost | dup | out-of-order | corrupt | latency p50 / p99 / max ms | arrival p50 / p99 ms | delivered lines/s | connect failures | slowest connect | server kB/client |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
cat "$tmp/table"
[ -s "$tmp/floor" ] && { echo; cat "$tmp/floor"; }
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
