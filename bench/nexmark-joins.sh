#!/usr/bin/env bash
# The joined Nexmark queries (bench/nexmark/{q3,q4,q5,q7,q8,q9,q9w,q11,q19}.toml: our person and auction
# tables beside the spec's bid stream, 10M bids), each a bounded run of the release build on 1..N cores,
# timed from start to exit: wall time, records in (all tables) per second, peak RSS; best of $RUNS.
# Prints a markdown table for bench/RESULTS.md (and writes it to bench/results/nexmark-joins.md).
#   bench/nexmark-joins.sh                    # everything (~10 min on 2 cores)
#   QUERIES="q5 q7" RUNS=1 bench/nexmark-joins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
queries=${QUERIES:-"q3 q4 q5 q7 q8 q9 q9w q11 q19"}
max_cores=${MAX_CORES:-$(nproc)}
runs=${RUNS:-3}
cargo build --release --locked 2>&1 | tail -1
bin=target/release/shardflow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p bench/results
out=bench/results/nexmark-joins.md
{
  echo "| query | cores | records in | best wall s | records/s | median wall s | peak RSS MiB | rows out |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$out"
for q in $queries; do
  for cores in $(seq 1 "$max_cores"); do
    sed "s/^cores = .*/cores = $cores/" "bench/nexmark/$q.toml" > "$tmp/$q.toml"
    walls=() rss=0 records=0 rows_out=0
    for r in $(seq 1 "$runs"); do
      start=$(date +%s.%N)
      /usr/bin/time -f "%M" -o "$tmp/rss" "$bin" run -c "$tmp/$q.toml" > "$tmp/log" 2>&1
      end=$(date +%s.%N)
      walls+=("$(echo "$end - $start" | bc -l)")
      line=$(grep -E "^job $q: " "$tmp/log" | tail -1)
      records=$(echo "$line" | sed -E 's/^job [^:]+: ([0-9]+) records in.*/\1/')
      rows_out=$(echo "$line" | sed -E 's/.* ([0-9]+) out,.*/\1/')
      kb=$(tail -1 "$tmp/rss")
      rss=$(( kb > rss ? kb : rss ))
      echo "$q cores=$cores run=$r: ${walls[-1]} s, $records records, $rows_out out" >&2
    done
    sorted=$(printf '%s\n' "${walls[@]}" | sort -g)
    best=$(echo "$sorted" | head -1)
    median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
    rate=$(echo "$records / $best" | bc -l)
    printf "| %s | %d | %s | %.2f | %.2fM | %.2f | %d | %s |\n" "$q" "$cores" "$records" "$best" \
      "$(echo "$rate / 1000000" | bc -l)" "$median" $(( rss / 1024 )) "$rows_out" >> "$out"
  done
done
cat "$out"
