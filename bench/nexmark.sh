#!/usr/bin/env bash
# Runs the Nexmark suite (bench/nexmark/*.toml: q0 q1 q2 q5a q7a kwin) on 1..N cores with the release build,
# and rewrites bench/RESULTS.md with events/s per run, the command, and the ratio to Flink's figures measured on
# this kind of machine (the benchmark spec's table, parallelism 1 and 2).
#   bench/nexmark.sh            # all queries, 1 and 2 cores (or up to $MAX_CORES)
#   QUERIES="q0 q7a" bench/nexmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
queries=${QUERIES:-"q0 q1 q2 q5a q7a kwin"}
max_cores=${MAX_CORES:-$(nproc)}
runs=${RUNS:-3}
cargo build --release --locked 2>&1 | tail -1
bin=target/release/shardflow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Flink 2.3 events/s at parallelism 1 and 2 on this kind of machine (benchmark spec).
declare -A flink1=([q0]=4.35 [q1]=3.79 [q2]=5.88 [q5a]=0.58 [q7a]=3.11 [kwin]=0.64)
declare -A flink2=([q0]=7.75 [q1]=7.13 [q2]=9.32 [q5a]=0.72 [q7a]=4.87 [kwin]=0.76)
declare -A target=([q0]=5 [q1]=5 [q2]=5 [q5a]=10 [q7a]=5 [kwin]=10)

rows=""
declare -A best
for q in $queries; do
  for cores in $(seq 1 "$max_cores"); do
    sed "s/^cores = .*/cores = $cores/" "bench/nexmark/$q.toml" > "$tmp/$q-$cores.toml"
    top=0
    for r in $(seq 1 "$runs"); do
      line=$("$bin" run -c "$tmp/$q-$cores.toml" 2>&1 | grep -E "^job $q: " | tail -1)
      rate=$(echo "$line" | sed -E 's/.*: ([0-9.]+)M records\/s/\1/')
      echo "$q cores=$cores run=$r: $line" >&2
      top=$(echo "$rate $top" | awk '{print ($1 > $2) ? $1 : $2}')
    done
    best[$q-$cores]=$top
    f=${flink1[$q]}; [ "$cores" -ge 2 ] && f=${flink2[$q]}
    ratio=$(awk -v a="$top" -v b="$f" 'BEGIN{printf "%.1fx", a/b}')
    per_core=$(awk -v a="$top" -v b="${flink1[$q]}" 'BEGIN{printf "%.1fx", a/b}')
    scale="-"
    if [ "$cores" -gt 1 ]; then scale=$(awk -v a="$top" -v b="${best[$q-1]}" 'BEGIN{printf "%.2fx", a/b}'); fi
    rows+="| $q | $cores | $top M | $f M | $ratio | $per_core (target ${target[$q]}x) | $scale | \`sed 's/^cores = .*/cores = $cores/' bench/nexmark/$q.toml > /tmp/b.toml && $bin run -c /tmp/b.toml\` |"$'\n'
  done
done

notes=""
if [ -f bench/RESULTS.md ] && grep -q '^<!-- notes' bench/RESULTS.md; then
  notes=$(sed -n '/^<!-- notes/,$p' bench/RESULTS.md)
fi
commit=$(git rev-parse --short HEAD)$(git diff --quiet -- . ":!bench/RESULTS.md" || echo " (with uncommitted changes)")
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
cat > bench/RESULTS.md <<MD
# Benchmark results

Written by \`bench/nexmark.sh\` (best of $runs runs per row; events/s from the first record to the end of the job,
as the job summary prints it; generator in process; blackhole sink).

- machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)
- commit: $commit
- date: $(date -u +%Y-%m-%d)

## Nexmark throughput vs Flink (same generator, same SQL)

Flink: Flink 2.3, the benchmark spec's figures on this kind of machine. "vs Flink" compares like with like
(1 core with parallelism 1, 2 cores with parallelism 2); "vs Flink p=1" divides the row's rate by Flink's
parallelism-1 rate, the ratio the targets are stated in (per core: compare the 1-core rows); "vs 1 core" is
the scaling from 1 to N cores (target: 2 cores >= 1.8x).

| query | cores | shardflow events/s | Flink events/s | vs Flink | vs Flink p=1 | vs 1 core | command |
|---|---|---|---|---|---|---|---|
$rows
$notes
MD
echo "wrote bench/RESULTS.md" >&2
