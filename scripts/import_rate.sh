#!/bin/sh
# Import rate of `sighthub import-sightingdb` (values/s) on a generated snapshot in SightingDB
# 0.7.8's format (crates/migrate, example synthetic_snapshot): 1,000,000 values over 20
# namespaces in 4 shards by default. Three runs, each into a fresh data directory; prints each
# and the median. Needs `cargo build --release` first.
#
#   scripts/import_rate.sh [values]
set -eu
cd "$(dirname "$0")/.."
N=${1:-1000000}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cargo run -q --release -p sighthub-migrate --example synthetic_snapshot -- "$T/snap" "$N" 20 4
du -sh "$T/snap" | awk '{print "snapshot: " $1 " on disk"}'
for i in 1 2 3; do
  s=$(date +%s.%N)
  target/release/sighthub import-sightingdb "$T/snap" --data-dir "$T/data$i" > "$T/out$i" 2>&1
  e=$(date +%s.%N)
  grep -q "values: $N new" "$T/out$i" || { cat "$T/out$i"; exit 1; }
  echo "$N $s $e" | awk '{printf "%.0f values/s (%.2f s)\n", $1/($3-$2), $3-$2}'
done | tee "$T/rates"
sort -n "$T/rates" | sed -n 2p | awk '{print "median: " $1 " values/s"}'
