#!/usr/bin/env bash
# Server CPU per request and latency of /w and /r on the embedded backend and on a Redis
# Cluster (docs/SCALING.md, "Figures"): a fresh release server per backend, wrk -t2 -c16 for
# DURATION seconds per run, RUNS runs, the median of each figure. The cluster's nodes come from
# SIGHTHUB_TEST_REDIS (scripts/clusters start DIR writes them). Redis's own CPU is not counted
# (it runs in other processes): the figure is what a sighthub front end costs.
#
#   SIGHTHUB_TEST_REDIS=127.0.0.1:7101,... scripts/scale_figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/sighthub
DURATION="${DURATION:-5}"
RUNS="${RUNS:-3}"
: "${SIGHTHUB_TEST_REDIS:?set it to the nodes of the cluster}"
work="$(mktemp -d)"
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
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
for backend in embedded redis; do
  data="$work/data-$backend"
  cfg="$work/$backend.toml"
  : >"$cfg"
  if [ "$backend" = redis ]; then
    nodes=$(echo "$SIGHTHUB_TEST_REDIS" | sed 's/[^,][^,]*/"&"/g')
    printf '[storage]\nbackend = "redis"\n[storage.redis]\nnodes = [%s]\nprefix = "bench%s:"\n' \
      "$nodes" "$$" >"$cfg"
  fi
  port=$((20000 + RANDOM % 20000))
  SIGHTHUB_ADMIN_KEY=k "$BIN" serve --data-dir "$data" --listen "127.0.0.1:$port" \
    --plain-http --config "$cfg" 2>"$work/log" &
  echo $! >"$work/pid"
  pid=$(cat "$work/pid")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  curl -sf -H "Authorization: k" "http://127.0.0.1:$port/w/bench/ns?val=fixed" >/dev/null
  for op in w r; do
    cpu=() lat=() rps=()
    for _ in $(seq "$RUNS"); do
      before=$(ticks "$pid")
      if [ "$op" = w ]; then
        out=$(wrk -t2 -c16 -d"${DURATION}s" --latency -H "Authorization: k" -s "$work/w.lua" "http://127.0.0.1:$port")
      else
        out=$(wrk -t2 -c16 -d"${DURATION}s" --latency -H "Authorization: k" "http://127.0.0.1:$port/r/bench/ns?val=fixed&noshadow")
      fi
      after=$(ticks "$pid")
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      cpu+=("$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')")
      # The median latency in ms, whatever unit wrk printed it in.
      lat+=("$(echo "$out" | awk '$1 == "50%" {print $2}' | to_ms)")
      rps+=("$(echo "$out" | awk '/Requests\/sec/ {print $2}')")
    done
    printf '%-8s /%s  server CPU µs/request %s  median latency %s  requests/s %s\n' "$backend" "$op" \
      "$(printf '%s\n' "${cpu[@]}" | median)" "$(printf '%s\n' "${lat[@]}" | median) ms" \
      "$(printf '%s\n' "${rps[@]}" | median)"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
