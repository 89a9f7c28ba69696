#!/usr/bin/env bash
# Server CPU per request and latency of /w and /r on the embedded backend and on a Redis
# Cluster, with one front end and with two (docs/SCALING.md, "Figures"): fresh release servers
# per backend, wrk -t2 -c16 for
# DURATION seconds per run, RUNS runs, the median of each figure. The cluster's nodes come from
# SIGHTHUB_TEST_REDIS (scripts/clusters start DIR writes them). Redis's own CPU is not counted
# (it runs in other processes): the figure is what a sighthub front end costs.
#
#   SIGHTHUB_TEST_REDIS=127.0.0.1:7101,... scripts/scale_figures.sh
#   BACKENDS="redis redis-2fe" ...   only those
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/sighthub}"
DURATION="${DURATION:-5}"
RUNS="${RUNS:-3}"
: "${SIGHTHUB_TEST_REDIS:?set it to the nodes of the cluster}"
work="$(mktemp -d)"
trap 'stop_servers $(cat "$work/pid" 2>/dev/null); rm -rf "$work"' EXIT
cat >"$work/w.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/w/bench/ns?val=" .. math.random(1, 1000000000) .. "-" .. n)
end
LUA
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
hz=$(getconf CLK_TCK)
to_ms() {
  awk '{ v = $1; u = $1; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
         if (u == "us") v = v / 1000; else if (u == "s") v = v * 1000; printf "%.2f\n", v }'
}
# One server per backend; `redis-2fe` is two front ends on one cluster (one key prefix), each
# loaded by its own wrk -t1 -c8 at the same time (16 connections in all, as for one): the rate
# is their sum, the CPU both front ends' per request, the latency the median of both wrk runs'
# medians (of two, the larger).
start_server() { # data dir, config -> prints "pid port"
  local port=$((20000 + RANDOM % 20000))
  SIGHTHUB_ADMIN_KEY=k "$BIN" serve --data-dir "$1" --listen "127.0.0.1:$port" \
    --plain-http --config "$2" >>"$work/log" 2>&1 &
  local pid=$!
  echo "$pid" >>"$work/pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  echo "$pid $port"
}
stop_servers() { # pids: SIGTERM, then wait (up to 30 s) until each has closed its data directory
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}
load() { # op, wrk threads, connections, port -> wrk's output
  if [ "$1" = w ]; then
    wrk -t"$2" -c"$3" -d"${DURATION}s" --latency -H "Authorization: k" -s "$work/w.lua" "http://127.0.0.1:$4"
  else
    wrk -t"$2" -c"$3" -d"${DURATION}s" --latency -H "Authorization: k" "http://127.0.0.1:$4/r/bench/ns?val=fixed&noshadow"
  fi
}
for backend in ${BACKENDS:-embedded redis redis-2fe}; do
  cfg="$work/$backend.toml"
  : >"$cfg"
  if [ "$backend" != embedded ]; then
    nodes=$(echo "$SIGHTHUB_TEST_REDIS" | sed 's/[^,][^,]*/"&"/g')
    printf '[storage]\nbackend = "redis"\n[storage.redis]\nnodes = [%s]\nprefix = "bench%s%s:"\n' \
      "$nodes" "$$" "$backend" >"$cfg"
  fi
  : >"$work/pid"
  read -r pid port < <(start_server "$work/data-$backend-a" "$cfg")
  pids=("$pid") ports=("$port")
  if [ "$backend" = redis-2fe ]; then
    read -r pid port < <(start_server "$work/data-$backend-b" "$cfg")
    pids+=("$pid") ports+=("$port")
  fi
  curl -sf -H "Authorization: k" "http://127.0.0.1:${ports[0]}/w/bench/ns?val=fixed" >/dev/null
  for op in w r; do
    cpu=() lat=() rps=()
    for _ in $(seq "$RUNS"); do
      before=0; for p in "${pids[@]}"; do before=$((before + $(ticks "$p"))); done
      if [ "${#ports[@]}" -eq 1 ]; then
        load "$op" 2 16 "${ports[0]}" >"$work/out-0"
      else
        load "$op" 1 8 "${ports[0]}" >"$work/out-0" &
        load "$op" 1 8 "${ports[1]}" >"$work/out-1"
        wait
      fi
      after=0; for p in "${pids[@]}"; do after=$((after + $(ticks "$p"))); done
      reqs=$(cat "$work"/out-* | awk '/requests in/ {s += $1} END {print s}')
      cpu+=("$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')")
      # The median latency in ms, whatever unit wrk printed it in (of two loads: the larger).
      lat+=("$(cat "$work"/out-* | awk '$1 == "50%" {print $2}' | to_ms | sort -g | tail -1)")
      rps+=("$(cat "$work"/out-* | awk '/Requests\/sec/ {s += $2} END {printf "%.2f", s}')")
      rm -f "$work"/out-*
    done
    printf '%-9s /%s  server CPU µs/request %s  median latency %s  requests/s %s\n' "$backend" "$op" \
      "$(printf '%s\n' "${cpu[@]}" | median)" "$(printf '%s\n' "${lat[@]}" | median) ms" \
      "$(printf '%s\n' "${rps[@]}" | median)"
  done
  stop_servers "${pids[@]}"
done
