#!/usr/bin/env bash
# The S3 mirror's costs: kwin and q5a throughput with 1 s checkpoints, without and with a mirror (same run
# of this script, 2 cores, release build), and the time to resume about 1 GB of state (bench/state-1g.toml)
# from the mirror into an empty state directory. The store is moto's S3 server on 127.0.0.1 (installed into
# target/test-services as .ci/run does): it measures the engine's side, not a network. Prints a Markdown
# section for bench/RESULTS.md.
#   bench/mirror.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cores=${CORES:-$(nproc)}
cargo build --release --locked 2>&1 | tail -1
bin=$PWD/target/release/shardflow
services=$PWD/target/test-services
if [ ! -x "$services/venv/bin/moto_server" ]; then
  mkdir -p "$services"
  { python3 -m venv "$services/venv" && "$services/venv/bin/pip" install --quiet 'moto[server]==5.2.5'; } \
    > "$services/pip.log" 2>&1 || { cat "$services/pip.log"; exit 1; }
fi
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$services/venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$tmp/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
curl -sf -X PUT "$AWS_ENDPOINT_URL_S3/bench" > /dev/null

config() { # query, mirror on/off
  sed "s/^cores = .*/cores = $cores/" "bench/nexmark/$1.toml" > "$tmp/$1-$2.toml"
  sed -i "s#^key_groups = .*#&\nstate_dir = \"$tmp/state-$1-$2\"#" "$tmp/$1-$2.toml"
  printf '\n[checkpoint]\ninterval = "1s"\n' >> "$tmp/$1-$2.toml"
  if [ "$2" = on ]; then
    printf '\n[mirror]\nurl = "s3://bench/%s"\n' "$1" >> "$tmp/$1-$2.toml"
  fi
  echo "$tmp/$1-$2.toml"
}

echo "## S3 mirror (bench/mirror.sh)"
echo
echo "- machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; commit $(git rev-parse --short HEAD); $(date -u +%F); store: moto $("$services/venv/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p') on 127.0.0.1"
echo
echo "| query | mirror | events/s | vs without | mirror at the end |"
echo "|---|---|---|---|---|"
for q in kwin q5a; do
  base=""
  for mode in off on; do
    out=$("$bin" run -c "$(config $q $mode)" 2>&1)
    rate=$(echo "$out" | grep -E "^job $q: " | sed -E 's/.*: ([0-9.]+)M records\/s/\1/')
    summary=$(echo "$out" | grep -E "^mirror " | sed 's/^mirror [^:]*: //' || true)
    [ -z "$base" ] && base=$rate
    ratio=$(awk -v a="$rate" -v b="$base" 'BEGIN{printf "%+.1f%%", (a/b-1)*100}')
    echo "| $q | $mode | $rate M | $ratio | ${summary:--} |"
  done
done
echo
# About 1 GB of state: run until it holds ~15M keys, SIGTERM (the final checkpoint is mirrored before the
# process exits), delete the state directory, start again: the resume line says how long the download took,
# the restore line how long until every shard held its state.
cfg="$tmp/state-1g.toml"
sed "s#^state_dir = .*#state_dir = \"$tmp/state-1g\"#" bench/state-1g.toml > "$cfg"
printf '\n[mirror]\nurl = "s3://bench/state-1g"\n' >> "$cfg"
"$bin" run -c "$cfg" > "$tmp/first.log" 2>&1 & pid=$!
sleep "${BIG_STOP_AFTER_S:-25}"; kill -TERM $pid; wait $pid || true
last=$(grep -E "checkpoint [0-9]+ complete" "$tmp/first.log" | tail -1 | sed 's/.*INFO[^ ]* //')
mirrored=$(grep -E "^mirror " "$tmp/first.log" | tail -1)
rm -rf "$tmp/state-1g"
started=$(date +%s.%N)
"$bin" run -c "$cfg" > "$tmp/second.log" 2>&1 & pid=$!
for _ in $(seq 1 3000); do grep -q "restored checkpoint" "$tmp/second.log" && break; sleep 0.1; done
ended=$(date +%s.%N)
kill -TERM $pid; wait $pid || true
resumed=$(grep "from mirror" "$tmp/second.log" | head -1 | sed 's/.*INFO[^ ]* //')
restored=$(grep "restored checkpoint" "$tmp/second.log" | sed 's/.*INFO[^ ]* //')
echo "~1 GB (bench/state-1g.toml) resumed from S3 into an empty state_dir: last checkpoint: \`$last\`; \`$mirrored\`"
echo
echo "restart: \`$resumed\`; \`$restored\`; process start to state restored: $(awk -v a="$started" -v b="$ended" 'BEGIN{printf "%.1f", b-a}') s"
echo
