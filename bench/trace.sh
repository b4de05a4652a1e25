#!/usr/bin/env bash
# Does `wirechat trace` keep up with a loopback load of short connections?
#
# Starts `wirechat trace --port P` (text ladder, piped into `tail`), then bench/connload.rs
# makes CONNS connections (handshake, "ping"/"pong", client close, server close) as fast as
# THREADS client threads can, bounded by SECS seconds. Reports the load's rate, the trace's
# CPU use over the load (from /proc/PID/stat, utime+stime) and what the trace saw: segments,
# connections, and the kernel's drop count for the capture socket (PACKET_STATISTICS).
# Needs root (live capture). Loopback only.
#
#   sudo bench/trace.sh                     # defaults: CONNS=100000 SECS=20 THREADS=2
#   sudo CONNS=200000 SECS=30 bench/trace.sh
set -euo pipefail
CONNS=${CONNS:-100000}
SECS=${SECS:-20}
THREADS=${THREADS:-2}
FORMAT=${FORMAT:-}          # set to --json to measure the JSON printer instead
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench/trace.sh: live capture needs root" >&2
    exit 1
fi
cargo build --release --quiet --bin wirechat --example connload
W=target/release/wirechat
L=target/release/examples/connload
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OUT=$(mktemp -d)
PIPE=""
TPID=""
cleanup() {
    [ -n "$TPID" ] && kill -INT "$TPID" 2>/dev/null
    [ -n "$PIPE" ] && kill "$PIPE" 2>/dev/null
    rm -rf "$OUT"
}
trap cleanup EXIT

$W trace --port "$PORT" $FORMAT --duration $((SECS + 60)) 2>"$OUT/err" | tail -n 12 >"$OUT/tail" &
PIPE=$!
# The trace's own pid: the wirechat process whose stderr is our file.
started=0
for _ in $(seq 100); do
    grep -q "capturing on" "$OUT/err" 2>/dev/null && { started=1; break; }
    sleep 0.1
done
[ "$started" = 1 ] || { echo "the trace did not start:" >&2; cat "$OUT/err" >&2; exit 1; }
TPID=$(pgrep -n -f "wirechat trace --port $PORT")
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$TPID/stat"; }

C0=$(cpu)
T0=$(date +%s.%N)
$L "$PORT" "$CONNS" "$SECS" "$THREADS" >"$OUT/load"
T1=$(date +%s.%N)
# Let the trace drain what is queued (its CPU keeps counting, the wall time does not): wait
# until its CPU time stops growing, at most 10 s.
C1=$(cpu)
for _ in $(seq 50); do
    sleep 0.2
    C2=$(cpu)
    [ "$C2" = "$C1" ] && break
    C1=$C2
done
kill -INT "$TPID"
wait "$PIPE" || true
TPID=""
PIPE=""

WALL=$(echo "$T1 - $T0" | bc -l)
CPU=$(echo "($C1 - $C0) / $HZ" | bc -l)
echo "date:      $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:   $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (before the end of the run)"
echo "command:   CONNS=$CONNS SECS=$SECS THREADS=$THREADS FORMAT=$FORMAT bench/trace.sh"
echo "load:      $(cat "$OUT/load")"
printf 'trace cpu: %.2f s over %.2f s of load = %.0f%% of one core\n' "$CPU" "$WALL" "$(echo "100 * $CPU / $WALL" | bc -l)"
echo "trace end: $(grep -E '^end|"event":"end"' "$OUT/tail" || echo '(no end line)')"
echo "expected:  $CONNS connections + $THREADS wake-up connections at the end of the load"
