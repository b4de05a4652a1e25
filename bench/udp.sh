#!/usr/bin/env bash
# UDP receive benchmark: a bounded sender (bench/udpblast.rs) sends N datagrams of 64 and of
# 1400 bytes at each receiver in turn (stdout to /dev/null): wirechat udp listen, nc -u -l,
# ncat -u -l, socat UDP-RECV. The share received comes from the receiving socket's own drop
# counter in /proc/net/udp (received = sent - dropped, after the queue has drained).
#
# Usage: bench/udp.sh            (N=500000 RUNS=3 by default; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500000}
RUNS=${RUNS:-3}
cargo build --release --quiet --bin wirechat --example udpblast
W=target/release/wirechat
BLAST=target/release/examples/udpblast

free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# "RX_QUEUE_BYTES DROPS" of the socket bound to 127.0.0.1:PORT, or nothing if none.
stats() {
  python3 - "$1" <<'PY'
import sys
port = int(sys.argv[1])
for line in open("/proc/net/udp").read().splitlines()[1:]:
    f = line.split()
    if int(f[1].split(":")[1], 16) == port:
        print(int(f[4].split(":")[1], 16), f[-1])
PY
}

RPID=""
trap '[ -n "$RPID" ] && kill "$RPID" 2>/dev/null' EXIT

start_receiver() { # NAME PORT -> pid in $RPID; fails if it exits before it has bound PORT
  case "$1" in
    wirechat) "$W" -q udp listen "127.0.0.1:$2" </dev/null >/dev/null 2>/dev/null & ;;
    nc)       nc -d -u -l 127.0.0.1 "$2" </dev/null >/dev/null 2>/dev/null & ;;
    ncat)     ncat -u -l 127.0.0.1 "$2" --recv-only </dev/null >/dev/null 2>/dev/null & ;;
    socat)    socat -u "UDP-RECV:$2,bind=127.0.0.1" STDOUT </dev/null >/dev/null 2>/dev/null & ;;
  esac
  RPID=$!
  for _ in $(seq 1 200); do
    kill -0 "$RPID" 2>/dev/null || break
    ss -Hlunp "sport = :$2" | grep -q "pid=$RPID," && return 0
    sleep 0.02
  done
  kill "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null || true
  RPID=""
  return 1
}

run_one() { # NAME SIZE -> "share rate"
  # The free port may be taken by someone else before the receiver binds it: then another
  # port is tried, up to 3 times.
  local port tries=0
  until port=$(free_port); start_receiver "$1" "$port"; do
    tries=$((tries + 1))
    [ "$tries" -lt 3 ] || { echo "receiver $1 did not bind" >&2; return 1; }
  done
  local out secs
  out=$("$BLAST" "127.0.0.1:$port" "$N" "$2")
  secs=$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$out")
  # Let the receiver drain its queue (at most 10 s).
  for _ in $(seq 1 500); do
    read -r q _ <<<"$(stats "$port")"
    [ "${q:-0}" = 0 ] && break
    sleep 0.02
  done
  read -r _ drops <<<"$(stats "$port")"
  kill "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null || true
  python3 -c "n=$N; d=$drops; s=$secs; print(f'{(n-d)/n*100:.2f} {(n-d)/s:.0f} {n/s:.0f}')"
}

echo "UDP receive, $N datagrams per run, median of $RUNS runs ($(date -u +%F\ %H:%M) UTC, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
printf '%-9s %6s %10s %14s %14s\n' receiver size received datagrams/s sender/s
for size in 64 1400; do
  for tool in wirechat nc ncat socat; do
    command -v "$tool" >/dev/null || [ "$tool" = wirechat ] || { echo "$tool: not installed"; continue; }
    results=()
    for _ in $(seq 1 "$RUNS"); do
      r=$(run_one "$tool" "$size") || { echo "$tool: its receiver did not start, stopping" >&2; exit 1; }
      results+=("$r")
    done
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p" |
      awk -v t="$tool" -v s="$size" '{ printf "%-9s %6s %9s%% %14s %14s\n", t, s, $1, $2, $3 }'
  done
done
