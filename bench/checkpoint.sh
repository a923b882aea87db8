#!/usr/bin/env bash
# Checkpoint costs on the Nexmark suite: kwin and q5a throughput with 1 s checkpoints vs without (same run of
# this script, 2 cores, release build), checkpoint duration percentiles and bytes, and the time to restore
# kwin's state (1M keys) and of about 1 GB (bench/state-1g.toml) after a SIGTERM. Prints a Markdown section
# for bench/RESULTS.md.
#   bench/checkpoint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cores=${CORES:-$(nproc)}
cargo build --release --locked 2>&1 | tail -1
bin=$PWD/target/release/shardflow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

config() { # query, checkpoints on/off
  sed "s/^cores = .*/cores = $cores/" "bench/nexmark/$1.toml" > "$tmp/$1-$2.toml"
  if [ "$2" = on ]; then
    sed -i "s#^key_groups = .*#&\nstate_dir = \"$tmp/state-$1\"#" "$tmp/$1-$2.toml"
    printf '\n[checkpoint]\ninterval = "1s"\n' >> "$tmp/$1-$2.toml"
  fi
  echo "$tmp/$1-$2.toml"
}

echo "## Checkpoints (bench/checkpoint.sh)"
echo
echo "- machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; commit $(git rev-parse --short HEAD); $(date -u +%F)"
echo
echo "| query | checkpoints | events/s | vs without | checkpoint summary |"
echo "|---|---|---|---|---|"
for q in kwin q5a; do
  base=""
  for mode in off on; do
    rm -rf "$tmp/state-$q"
    cfg=$(config $q $mode)
    out=$("$bin" run -c "$cfg" 2>&1)
    rate=$(echo "$out" | grep -E "^job $q: " | sed -E 's/.*: ([0-9.]+)M records\/s/\1/')
    summary=$(echo "$out" | grep -E "^checkpoints: " || true)
    [ -z "$base" ] && base=$rate
    ratio=$(awk -v a="$rate" -v b="$base" 'BEGIN{printf "%+.1f%%", (a/b-1)*100}')
    echo "| $q | $mode | $rate M | $ratio | ${summary:--} |"
  done
done
echo
# Restore time: run `cfg` for `after` seconds, stop it with `signal`, restart, read the restore line, stop.
#   restore_after LABEL CONFIG SIGNAL AFTER_SECONDS
restore_after() {
  local label=$1 cfg=$2 signal=$3 after=$4 last restored pid
  "$bin" run -c "$cfg" > "$tmp/first.log" 2>&1 & pid=$!
  sleep "$after"; kill -"$signal" $pid; wait $pid 2>/dev/null || true
  last=$(grep -E "checkpoint [0-9]+ complete" "$tmp/first.log" | tail -1 | sed 's/.*INFO[^ ]* //')
  "$bin" run -c "$cfg" > "$tmp/second.log" 2>&1 & pid=$!
  for _ in $(seq 1 600); do grep -q "restored checkpoint" "$tmp/second.log" && break; sleep 0.1; done
  kill -TERM $pid; wait $pid || true
  restored=$(grep "restored checkpoint" "$tmp/second.log" | sed 's/.*INFO[^ ]* //')
  echo "$label restore after SIG$signal at $after s: last checkpoint: \`$last\`; restart: \`$restored\`"
  echo
}
stop=${STOP_AFTER_S:-6}
rm -rf "$tmp/state-kwin"
# kwin's state (1M keys) after SIGTERM: the final checkpoint is a base.
restore_after kwin "$(config kwin on)" TERM "$stop"
# The same after SIGKILL: the newest checkpoint is a base and any deltas written since.
rm -rf "$tmp/state-kwin"
restore_after kwin "$(config kwin on)" KILL "$stop.5"
# About 1 GB of state (bench/state-1g.toml: 16M keys, four aggregates each), stopped once it holds ~15M keys.
sed "s#^state_dir = .*#state_dir = \"$tmp/state-1g\"#" bench/state-1g.toml > "$tmp/state-1g.toml"
restore_after "~1 GB (bench/state-1g.toml)" "$tmp/state-1g.toml" TERM "${BIG_STOP_AFTER_S:-25}"
