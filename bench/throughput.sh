#!/usr/bin/env bash
# Bulk TCP throughput on loopback: a listener writing to /dev/null and a client sending SIZE
# bytes from a file in /dev/shm, for wirechat, socat (-b 131072), ncat and OpenBSD nc, plus
# iperf3 (memory to memory, the machine's near-limit), in one run. Each time is from starting
# the client until the listener has exited (everything received). Median of RUNS runs.
#
# Usage: bench/throughput.sh        (SIZE=2G RUNS=5 by default; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-2G}
RUNS=${RUNS:-5}
cargo build --release --quiet --bin wirechat
W=$PWD/target/release/wirechat
INPUT=/dev/shm/wirechat-bench-input
head -c "$SIZE" /dev/urandom > "$INPUT"
BYTES=$(stat -c %s "$INPUT")
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -f "$INPUT"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # PID PORT: until process PID listens on PORT; fails if it exits first
  for _ in $(seq 1 500); do
    kill -0 "$1" 2>/dev/null || return 1
    ss -Hltnp "sport = :$2" | grep -q "pid=$1," && return 0
    sleep 0.01
  done
  return 1
}

now() { date +%s.%N; }

start_server() { # TOOL -> $SERVER and $PORT
  # The free port may be taken by someone else before the tool binds it: then the tool
  # exits (checked while waiting) and another port is tried, up to 3 times.
  for _ in 1 2 3; do
    PORT=$(free_port)
    case "$1" in
      wirechat) "$W" -q tcp listen "127.0.0.1:$PORT" </dev/null >/dev/null 2>&1 & ;;
      socat)    socat -b 131072 -u "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr" OPEN:/dev/null </dev/null 2>/dev/null & ;;
      ncat)     ncat -l 127.0.0.1 "$PORT" --recv-only </dev/null >/dev/null 2>&1 & ;;
      nc)       nc -l 127.0.0.1 "$PORT" </dev/null >/dev/null 2>&1 & ;;
      iperf3)   iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & ;;
    esac
    SERVER=$!
    wait_listening "$SERVER" "$PORT" && return 0
    kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true
  done
  echo "$1 did not start listening" >&2; return 1
}

one_run() { # TOOL -> seconds
  start_server "$1" || return 1
  local port=$PORT
  local t0; t0=$(now)
  case "$1" in
    wirechat) "$W" -q tcp connect "127.0.0.1:$port" <"$INPUT" >/dev/null ;;
    socat)    socat -b 131072 -u OPEN:"$INPUT" "TCP:127.0.0.1:$port" ;;
    ncat)     ncat --send-only 127.0.0.1 "$port" <"$INPUT" ;;
    nc)       nc -N 127.0.0.1 "$port" <"$INPUT" >/dev/null ;;
    iperf3)   iperf3 -c 127.0.0.1 -p "$port" -n "$BYTES" >/dev/null ;;
  esac
  wait "$SERVER"
  SERVER=""
  local t1; t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.4f}')"
}

echo "TCP bulk throughput, $BYTES bytes from a file in /dev/shm to /dev/null, median of $RUNS runs"
echo "($(date -u '+%F %H:%M') UTC, $(nproc) cores, $(uname -r), load $(cut -d' ' -f1 /proc/loadavg))"
declare -A rate
for tool in wirechat socat ncat nc iperf3; do
  if [ "$tool" != wirechat ] && ! command -v "$tool" >/dev/null; then
    echo "$tool: not installed, skipped"; continue
  fi
  times=()
  for _ in $(seq 1 "$RUNS"); do
    t=$(one_run "$tool") || { echo "$tool: its server did not start, stopping" >&2; exit 1; }
    times+=("$t")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  rate[$tool]=$(python3 -c "print(f'{$BYTES / $median / 2**30:.2f}')")
  printf '%-9s %6s GiB/s   (runs: %s s)\n' "$tool" "${rate[$tool]}" "${times[*]}"
done
best=0
for t in socat ncat nc; do
  [ -n "${rate[$t]:-}" ] && best=$(python3 -c "print(max($best, ${rate[$t]}))")
done
python3 -c "
w = ${rate[wirechat]}; best = $best; ip = ${rate[iperf3]:-0}
print(f'wirechat / fastest of socat, ncat, nc = {w / best:.2f}x' if best else 'no peers')
print(f'wirechat / iperf3 = {w / ip:.2f}x' if ip else 'no iperf3')
"
