//! Kinesis end to end: the real binary reads streams of a real local Kinesis server (kinesis-local, which
//! `.ci/run` installs and starts on 127.0.0.1) through the real AWS SDK, configured only by the environment
//! (`AWS_ENDPOINT_URL_KINESIS` and static test credentials), so the daemon has no test-only code.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use common::{canonical_json, format_ts, read_output_rows, spawn_logged, write_file, TempDir};
use serde_json::Value;

/// Records PutRecords takes per call (Kinesis' limit).
const PUT_BATCH_MAX: usize = 500;
/// How long a test waits for the output it expects before failing.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(90);
/// First event time of the generated streams: 2026-01-01 00:00:00 UTC.
const T0_MS: i64 = 1_767_225_600_000;

/// A stream to delete when the test's thread ends (a failed test included).
struct StreamGuard {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let _ = rt
                .block_on(self.client.delete_stream().stream_name(&self.stream).enforce_consumer_deletion(true).send());
        }
    }
}

thread_local! {
    static STREAMS: std::cell::RefCell<Vec<StreamGuard>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// The local Kinesis server's client; the server must be running (`.ci/run` starts it).
fn client(rt: &tokio::runtime::Runtime) -> aws_sdk_kinesis::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_KINESIS").is_some(),
        "AWS_ENDPOINT_URL_KINESIS is not set: run the tests through .ci/run, which starts a local Kinesis server"
    );
    let cfg = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    aws_sdk_kinesis::Client::new(&cfg)
}

/// A new stream with `shards` stream shards, ACTIVE; its name is unique to this run and `label`.
fn create_stream(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, label: &str, shards: i32) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("{label}-{}-{}", std::process::id(), nanos % 1_000_000_000);
    rt.block_on(c.create_stream().stream_name(&name).shard_count(shards).send()).expect("CreateStream");
    wait_active(rt, c, &name);
    // The server counts stream shards against a limit: delete the stream when the test ends, whatever happens.
    let (client, stream) = (c.clone(), name.clone());
    STREAMS.with(|s| s.borrow_mut().push(StreamGuard { client, stream }));
    name
}

/// Puts records in PutRecords calls of at most [`PUT_BATCH_MAX`]; every one must be stored.
fn put_entries(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: Vec<PutRecordsRequestEntry>,
) {
    rt.block_on(async {
        for chunk in entries.chunks(PUT_BATCH_MAX) {
            let out =
                c.put_records().stream_name(stream).set_records(Some(chunk.to_vec())).send().await.expect("PutRecords");
            assert_eq!(out.failed_record_count().unwrap_or(0), 0, "PutRecords failed some records");
        }
    });
}

fn entry(data: Vec<u8>, partition_key: &str) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder().data(Blob::new(data)).partition_key(partition_key).build().expect("a record")
}

/// Puts JSON records, each under its own partition key (spread over the stream shards).
fn put(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str, records: &[Value]) {
    let entries =
        records.iter().enumerate().map(|(i, r)| entry(r.to_string().into_bytes(), &format!("p{i}"))).collect();
    put_entries(rt, c, stream, entries);
}

/// Events `from..to`: five keys, 50 ms apart.
fn events(from: i64, to: i64) -> Vec<Value> {
    (from..to).map(|i| serde_json::json!({"k": format!("k{}", i % 5), "v": i, "ts": T0_MS + i * 50})).collect()
}

/// One record far ahead in event time, so that every window of `events` can fire once the source is idle.
fn flush_event() -> Value {
    serde_json::json!({"k": "end", "v": 0, "ts": T0_MS + 100_000})
}

/// The rows a 10 s tumbling COUNT/SUM per key must write for `events`, for windows the flush event's
/// watermark passes.
fn expected(events: &[Value]) -> Vec<String> {
    let mut groups: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for e in events {
        let ts = e["ts"].as_i64().unwrap();
        let start = ts - ts.rem_euclid(10_000);
        let g = groups.entry((e["k"].as_str().unwrap().to_string(), start)).or_default();
        g.0 += 1;
        g.1 += e["v"].as_i64().unwrap();
    }
    let mut rows: Vec<String> = groups
        .into_iter()
        .map(|((k, start), (n, total))| {
            canonical_json(&serde_json::json!({
                "k": k, "n": n, "total": total, "window_start": format_ts(start), "window_end": format_ts(start + 10_000)
            }))
        })
        .collect();
    rows.sort();
    rows
}

const FILE_SINK: &str = "connector = \"file\"\npath = \"out\"";

fn config(dir: &TempDir, stream: &str, checkpoints: bool) -> PathBuf {
    config_with_sink(dir, stream, checkpoints, FILE_SINK)
}

/// The job's config; `sink` is the body of `[sinks.out]`.
fn config_with_sink(dir: &TempDir, stream: &str, checkpoints: bool, sink: &str) -> PathBuf {
    let checkpoint = if checkpoints { "[checkpoint]\ninterval = \"100ms\"\n" } else { "" };
    let text = format!(
        r#"[runtime]
cores = 2
state_dir = "state"

{checkpoint}
[sources.ev]
connector = "kinesis"
stream = "{stream}"
start = "TRIM_HORIZON"
schema = "k VARCHAR, v BIGINT, ts TIMESTAMP(3)"
watermark = "ts - INTERVAL '1' SECOND"
idle_timeout = "1s"

[sinks.out]
{sink}

[[jobs]]
name = "counts"
sql = """
INSERT INTO out
SELECT k, COUNT(*) AS n, SUM(v) AS total, window_start, window_end
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end
"""
"#
    );
    let path = dir.join("job.toml");
    write_file(&path, text.as_bytes());
    path
}

/// Sorted canonical rows of the sink's committed output.
fn rows(dir: &Path) -> Vec<String> {
    let mut r: Vec<String> = read_output_rows(dir).iter().map(canonical_json).collect();
    r.sort();
    r
}

/// Waits until the committed output holds `want` rows (or more), or fails with the run log.
fn wait_for_rows(out: &Path, want: usize, child: &mut Child, log: &Path, dir: &TempDir) {
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    while rows(out).len() < want {
        if let Some(status) = child.try_wait().unwrap() {
            dir.keep();
            panic!("shardflow exited ({status}) early; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            dir.keep();
            panic!(
                "{} of {want} rows after {OUTPUT_TIMEOUT:?}; log:\n{}",
                rows(out).len(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm_and_wait(child: &mut Child) -> i32 {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    child.wait().expect("reap shardflow").code().unwrap_or(-1)
}

#[test]
fn windows_over_a_kinesis_stream_are_written_to_a_file_sink() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "windows", 2);
    let input = events(0, 1000);
    put(&rt, &c, &stream, &input);
    put(&rt, &c, &stream, &[flush_event()]);
    run_to_expected("kinesis-windows", &stream, &input);
}

/// Runs the windowed job on `stream` into a file sink until it wrote the windows of `input`, stops it, and
/// checks its output is exactly those; returns the run's log.
fn run_to_expected(label: &str, stream: &str, input: &[Value]) -> String {
    let dir = TempDir::new(label);
    let cfg = config(&dir, stream, true);
    let log = dir.join("run.log");
    let want = expected(input);
    let mut child = spawn_logged(&cfg, &log);
    wait_for_rows(&dir.join("out"), want.len(), &mut child, &log, &dir);
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_eq!(rows(&dir.join("out")), want);
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// SIGKILL mid-stream, more records, a restart: the run resumes after the last sequence number each stream
/// shard's consumer had checkpointed, and the file sink's output is exactly the expected windows.
#[test]
fn killed_and_restarted_a_kinesis_job_writes_every_window_once() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "restart", 2);
    let first = events(0, 600);
    put(&rt, &c, &stream, &first);
    let dir = TempDir::new("kinesis-restart");
    let cfg = config(&dir, &stream, true);
    let log = dir.join("run.log");
    let mut child = spawn_logged(&cfg, &log);
    // Windows of the first 600 events fire once the source goes idle: wait for some output, then kill.
    wait_for_rows(&dir.join("out"), 5, &mut child, &log, &dir);
    child.kill().expect("SIGKILL shardflow");
    child.wait().expect("reap shardflow");
    let second = events(600, 1000);
    put(&rt, &c, &stream, &second);
    put(&rt, &c, &stream, &[flush_event()]);
    let all: Vec<Value> = first.into_iter().chain(second).collect();
    let want = expected(&all);
    let mut child = spawn_logged(&cfg, &log);
    wait_for_rows(&dir.join("out"), want.len(), &mut child, &log, &dir);
    assert_eq!(sigterm_and_wait(&mut child), 0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("restored checkpoint"), "the restart restored no checkpoint:\n{text}");
    assert_eq!(rows(&dir.join("out")), want);
}

/// Every record of a stream so far, from every stream shard's TRIM_HORIZON, as JSON.
fn read_all(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Value> {
    read_all_keyed(rt, c, stream).into_iter().map(|(_, v)| v).collect()
}

/// Every record of a stream so far, from every stream shard's TRIM_HORIZON: its partition key and its JSON.
fn read_all_keyed(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, Value)> {
    rt.block_on(async {
        let mut out = Vec::new();
        let shards = c.list_shards().stream_name(stream).send().await.expect("ListShards");
        for shard in shards.shards() {
            let it = c
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator");
            let mut it = it.shard_iterator().map(str::to_string);
            while let Some(i) = it {
                let page = c.get_records().shard_iterator(i).send().await.expect("GetRecords");
                for r in page.records() {
                    let value = serde_json::from_slice(r.data().as_ref()).expect("a JSON record");
                    out.push((r.partition_key().unwrap_or_default().to_string(), value));
                }
                if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
        out
    })
}

/// Waits until the stream holds `want` records (or more); returns them as sorted canonical rows.
fn wait_for_records(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    want: usize,
    child: &mut Child,
    log: &Path,
    dir: &TempDir,
) -> Vec<String> {
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let mut got: Vec<String> = read_all(rt, c, stream).iter().map(canonical_json).collect();
        if got.len() >= want {
            got.sort();
            return got;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            dir.keep();
            panic!("{} of {want} records; log:\n{}", got.len(), std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kinesis_sink(stream: &str) -> String {
    format!("connector = \"kinesis\"\nstream = \"{stream}\"\npartition_key = \"k\"")
}

#[test]
fn windows_over_a_kinesis_stream_are_written_to_a_kinesis_stream() {
    let rt = runtime();
    let c = client(&rt);
    let input_stream = create_stream(&rt, &c, "in", 2);
    let output_stream = create_stream(&rt, &c, "out", 2);
    let input = events(0, 1000);
    put(&rt, &c, &input_stream, &input);
    put(&rt, &c, &input_stream, &[flush_event()]);
    let dir = TempDir::new("kinesis-to-kinesis");
    // The partition key as a SQL expression over the output row.
    let sink = kinesis_sink(&output_stream).replace("partition_key = \"k\"", "partition_key = \"UPPER(k) || '-x'\"");
    let cfg = config_with_sink(&dir, &input_stream, true, &sink);
    let log = dir.join("run.log");
    let want = expected(&input);
    let mut child = spawn_logged(&cfg, &log);
    let got = wait_for_records(&rt, &c, &output_stream, want.len(), &mut child, &log, &dir);
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_eq!(got, want);
    for (key, row) in read_all_keyed(&rt, &c, &output_stream) {
        assert_eq!(key, format!("{}-x", row["k"].as_str().unwrap().to_uppercase()), "partition key of {row}");
    }
}

/// SIGKILL and restart with a Kinesis sink: at least once. Every expected window is in the output stream;
/// a window written before the kill but after the last completed checkpoint may be written again.
#[test]
fn killed_and_restarted_a_kinesis_sink_loses_nothing() {
    let rt = runtime();
    let c = client(&rt);
    let input_stream = create_stream(&rt, &c, "in-kill", 2);
    let output_stream = create_stream(&rt, &c, "out-kill", 1);
    let first = events(0, 600);
    put(&rt, &c, &input_stream, &first);
    let dir = TempDir::new("kinesis-sink-restart");
    let cfg = config_with_sink(&dir, &input_stream, true, &kinesis_sink(&output_stream));
    let log = dir.join("run.log");
    let mut child = spawn_logged(&cfg, &log);
    wait_for_records(&rt, &c, &output_stream, 5, &mut child, &log, &dir);
    child.kill().expect("SIGKILL shardflow");
    child.wait().expect("reap shardflow");
    let second = events(600, 1000);
    put(&rt, &c, &input_stream, &second);
    put(&rt, &c, &input_stream, &[flush_event()]);
    let all: Vec<Value> = first.into_iter().chain(second).collect();
    let want = expected(&all);
    let mut child = spawn_logged(&cfg, &log);
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    let mut got;
    loop {
        got = read_all(&rt, &c, &output_stream).iter().map(canonical_json).collect::<Vec<_>>();
        let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
        if distinct.len() >= want.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sigterm_and_wait(&mut child), 0);
    let distinct: std::collections::BTreeSet<String> = got.iter().cloned().collect();
    let want_set: std::collections::BTreeSet<String> = want.iter().cloned().collect();
    assert_eq!(distinct, want_set, "the output stream must hold every expected window, and nothing else");
    eprintln!(
        "at least once: {} records for {} windows ({} duplicates)",
        got.len(),
        want.len(),
        got.len() - want.len()
    );
}

/// Puts records with their key as partition key, so that each key lives in one stream shard at a time.
fn put_keyed(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str, records: &[Value]) {
    let entries = records.iter().map(|r| entry(r.to_string().into_bytes(), r["k"].as_str().unwrap())).collect();
    put_entries(rt, c, stream, entries);
}

fn wait_active(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) {
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = c.describe_stream_summary().stream_name(stream).send().await.expect("DescribeStreamSummary");
            if d.stream_description_summary().map(|s| s.stream_status()) == Some(&StreamStatus::Active) {
                return;
            }
            assert!(Instant::now() < deadline, "stream {stream} did not become ACTIVE");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Records `from..to` of 20 keys, each key's `seq` counting up.
fn keyed_events(from: i64, to: i64) -> Vec<Value> {
    (from..to).map(|i| serde_json::json!({"k": format!("key{}", i % 20), "seq": i, "ts": T0_MS + i})).collect()
}

/// The committed part files of a sink directory in write order: by shard, then epoch, then sequence.
fn parts_in_order(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut parts: Vec<((u64, u64, u64), PathBuf)> = std::fs::read_dir(dir)
        .expect("the sink directory")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            // part-<writer>-<shard>-e<epoch>-<seq>.json
            let stem = name.strip_prefix("part-")?.strip_suffix(".json")?;
            let mut fields = stem.rsplitn(4, '-');
            let seq = fields.next()?.parse().ok()?;
            let epoch = fields.next()?.strip_prefix('e')?.parse().ok()?;
            let shard = fields.next()?.parse().ok()?;
            Some(((shard, epoch, seq), e.path()))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|((shard, _, _), p)| (shard, p)).collect()
}

/// A job copying `k` and `seq` of every record of `stream` to a file sink, checkpointing every 100 ms;
/// `source_extra` adds lines to the source's section.
fn copy_job(dir: &TempDir, stream: &str, source_extra: &str) -> PathBuf {
    let text = format!(
        r#"[runtime]
cores = 2
state_dir = "state"

[checkpoint]
interval = "100ms"

[sources.ev]
connector = "kinesis"
stream = "{stream}"
start = "TRIM_HORIZON"
schema = "k VARCHAR, seq BIGINT, ts TIMESTAMP(3)"
{source_extra}

[sinks.out]
connector = "file"
path = "out"

[[jobs]]
name = "copy"
sql = "INSERT INTO out SELECT k, seq FROM ev"
"#
    );
    let cfg = dir.join("job.toml");
    write_file(&cfg, text.as_bytes());
    cfg
}

/// The copy job's output holds every `seq` of `0..n` once, each key's rows came from one shard, in put order.
fn assert_each_key_once_and_in_order(out: &Path, n: i64) {
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for r in read_output_rows(out) {
        *times.entry(r["seq"].as_i64().unwrap()).or_default() += 1;
    }
    let missing: Vec<i64> = (0..n).filter(|s| !times.contains_key(s)).collect();
    let twice: Vec<(&i64, &usize)> = times.iter().filter(|(_, t)| **t > 1).collect();
    let strays: Vec<&i64> = times.keys().filter(|s| !(0..n).contains(*s)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && strays.is_empty(),
        "every record once: {} missing (first {:?}), {} more than once (first {:?}), {} unknown",
        missing.len(),
        &missing[..missing.len().min(20)],
        twice.len(),
        &twice[..twice.len().min(20)],
        strays.len()
    );
    let mut last: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    let mut checked = 0;
    for (shard, part) in parts_in_order(out) {
        for line in std::fs::read_to_string(&part).unwrap().lines() {
            checked += 1;
            let row: Value = serde_json::from_str(line).unwrap();
            let (k, seq) = (row["k"].as_str().unwrap().to_string(), row["seq"].as_i64().unwrap());
            if let Some((s, prev)) = last.get(&k) {
                assert_eq!(*s, shard, "key {k} was read on two shards");
                assert!(seq > *prev, "key {k}: seq {seq} after {prev} ({})", part.display());
            }
            last.insert(k, (shard, seq));
        }
    }
    assert_eq!(checked, n, "every row's order was checked");
}

/// Splits the first stream shard of `stream` at the middle of its hash key range and waits until the stream
/// is ACTIVE again; returns the split stream shard's id.
fn split_first(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) -> String {
    let (first, start, end) = rt.block_on(async {
        let shards = c.list_shards().stream_name(stream).send().await.expect("ListShards");
        let s = &shards.shards()[0];
        let r = s.hash_key_range().expect("a hash key range");
        (
            s.shard_id().to_string(),
            r.starting_hash_key().parse::<u128>().unwrap(),
            r.ending_hash_key().parse::<u128>().unwrap(),
        )
    });
    let middle = start + (end - start) / 2;
    rt.block_on(
        c.split_shard().stream_name(stream).shard_to_split(&first).new_starting_hash_key(middle.to_string()).send(),
    )
    .expect("SplitShard");
    wait_active(rt, c, stream);
    first
}

/// A stream shard split and then merged while the job runs: no record lost or duplicated, and each key's
/// records come out in the order they were put (children are read after their parents, on their shard).
#[test]
fn a_split_and_a_merge_while_running_lose_nothing_and_keep_each_keys_order() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "reshard", 2);
    let dir = TempDir::new("kinesis-reshard");
    let cfg = copy_job(&dir, &stream, "");
    let log = dir.join("run.log");
    let mut child = spawn_logged(&cfg, &log);
    put_keyed(&rt, &c, &stream, &keyed_events(0, 300));
    wait_for_rows(&dir.join("out"), 300, &mut child, &log, &dir);
    let first = split_first(&rt, &c, &stream);
    put_keyed(&rt, &c, &stream, &keyed_events(300, 600));
    wait_for_rows(&dir.join("out"), 600, &mut child, &log, &dir);
    // Merge the two children back.
    let children: Vec<String> = rt.block_on(async {
        let shards = c.list_shards().stream_name(&stream).send().await.expect("ListShards");
        shards
            .shards()
            .iter()
            .filter(|s| s.parent_shard_id() == Some(first.as_str()))
            .map(|s| s.shard_id().to_string())
            .collect()
    });
    assert_eq!(children.len(), 2, "the split made two children: {children:?}");
    rt.block_on(
        c.merge_shards().stream_name(&stream).shard_to_merge(&children[0]).adjacent_shard_to_merge(&children[1]).send(),
    )
    .expect("MergeShards");
    wait_active(&rt, &c, &stream);
    put_keyed(&rt, &c, &stream, &keyed_events(600, 900));
    wait_for_rows(&dir.join("out"), 900, &mut child, &log, &dir);
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_each_key_once_and_in_order(&dir.join("out"), 900);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.matches("reading stream shard").count() >= 5, "children were not read:\n{text}");
}

/// Records the KPL aggregated are unpacked: every user record counts; a damaged aggregate is bad input,
/// counted, and the job goes on.
#[test]
fn kpl_aggregated_records_are_deaggregated() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "kpl", 1);
    let input = events(0, 1000);
    let texts: Vec<Vec<u8>> = input.iter().map(|e| e.to_string().into_bytes()).collect();
    let mut damaged = shardflow::source::kinesis::kpl::aggregate("pk", &[b"{}"]);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let mut entries: Vec<PutRecordsRequestEntry> = texts
        .chunks(100)
        .map(|chunk| {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            entry(shardflow::source::kinesis::kpl::aggregate("pk", &refs), "pk")
        })
        .collect();
    entries.push(entry(damaged, "pk"));
    put_entries(&rt, &c, &stream, entries);
    put(&rt, &c, &stream, &[flush_event()]);
    let text = run_to_expected("kinesis-kpl", &stream, &input);
    assert!(text.contains("MD5 checksum does not match"), "the damaged aggregate was not reported:\n{text}");
    assert!(text.contains("1001 records in, 25 out, 1 bad"), "counts:\n{text}");
}

/// When the server stored each record of `stream` (its ApproximateArrivalTimestamp, in epoch milliseconds),
/// by the record's `v`, read back from every stream shard: the server's own clock, which may differ from ours.
fn arrivals(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) -> BTreeMap<i64, i64> {
    rt.block_on(async {
        let mut out = BTreeMap::new();
        let shards = c.list_shards().stream_name(stream).send().await.expect("ListShards");
        for shard in shards.shards() {
            let it = c
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator");
            let mut it = it.shard_iterator().map(str::to_string);
            while let Some(i) = it {
                let got = c.get_records().shard_iterator(i).send().await.expect("GetRecords");
                for r in got.records() {
                    let v: Value = serde_json::from_slice(r.data().as_ref()).expect("a JSON record");
                    let at = r.approximate_arrival_timestamp().expect("an arrival time").to_millis().unwrap();
                    out.insert(v["v"].as_i64().unwrap(), at);
                }
                if got.records().is_empty() && got.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                it = got.next_shard_iterator().map(str::to_string);
            }
        }
        out
    })
}

/// The arrival times of records `vs` of `stream`, as the server stored them.
fn arrivals_of(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str, vs: &[Value]) -> Vec<i64> {
    let all = arrivals(rt, c, stream);
    vs.iter().map(|v| *all.get(&v["v"].as_i64().unwrap()).expect("the record was stored")).collect()
}

/// The first whole second after `ms`: start times on a whole second, because the local server compares a
/// start with arrival times to the second.
fn whole_second_after(ms: i64) -> i64 {
    (ms / 1000 + 1) * 1000
}

/// A config reading `stream` from `start_ms` on (`start = "AT_TIMESTAMP"`).
fn at_timestamp_config(dir: &TempDir, stream: &str, start_ms: i64) -> PathBuf {
    let cfg = config(dir, stream, true);
    let stamp = format_ts(start_ms);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("start = \"TRIM_HORIZON\"", &format!("start = \"AT_TIMESTAMP\"\nstart_timestamp = \"{stamp}\""));
    write_file(&cfg, text.as_bytes());
    cfg
}

/// `start = "AT_TIMESTAMP"` reads only what arrived from that time on. The boundary is taken from the
/// server's own arrival times, so the test holds whatever the two clocks say.
#[test]
fn at_timestamp_starts_at_the_records_that_arrived_from_then_on() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "at-ts", 2);
    let earlier = events(0, 500);
    put(&rt, &c, &stream, &earlier);
    let last_earlier = arrivals_of(&rt, &c, &stream, &earlier).into_iter().max().unwrap();
    let start_ms = whole_second_after(last_earlier);
    // The later records arrive from the start on (the server's clock runs at the speed of ours).
    std::thread::sleep(Duration::from_millis((start_ms - last_earlier + 50) as u64));
    let later = events(500, 1000);
    put(&rt, &c, &stream, &later);
    put(&rt, &c, &stream, &[flush_event()]);
    let first_later = arrivals_of(&rt, &c, &stream, &later).into_iter().min().unwrap();
    assert!(first_later >= start_ms, "the server stored a later record at {first_later}, before {start_ms}");
    let dir = TempDir::new("kinesis-at-timestamp");
    let cfg = at_timestamp_config(&dir, &stream, start_ms);
    let log = dir.join("run.log");
    let want = expected(&later);
    let mut child = spawn_logged(&cfg, &log);
    wait_for_rows(&dir.join("out"), want.len(), &mut child, &log, &dir);
    // Give the earlier records time to show up, were they (wrongly) read.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_eq!(rows(&dir.join("out")), want);
}

/// A start a few seconds ahead of the server's clock (clock skew) is not fatal: Kinesis refuses it as in the
/// future, the reader logs it and asks again until the server's clock passes it, then reads exactly the
/// records stored from then on — not those stored while it waited.
#[test]
fn an_at_timestamp_start_a_few_seconds_in_the_future_reads_the_records_from_then_on() {
    const AHEAD_MS: i64 = 6_000;
    let rt = runtime();
    let c = client(&rt);
    // One stream shard: the records arrive while the job runs, and with two a quiet one would go idle and let
    // the other's flush event fire the windows before its own records were read.
    let stream = create_stream(&rt, &c, "at-ts-ahead", 1);
    let before = events(0, 200);
    put(&rt, &c, &stream, &before);
    let start_ms = whole_second_after(arrivals_of(&rt, &c, &stream, &before).into_iter().max().unwrap()) + AHEAD_MS;
    let dir = TempDir::new("kinesis-at-timestamp-ahead");
    let cfg = at_timestamp_config(&dir, &stream, start_ms);
    let log = dir.join("run.log");
    let mut child = spawn_logged(&cfg, &log);
    let refused = "as in the future";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains(refused) {
        if let Some(status) = child.try_wait().unwrap() {
            dir.keep();
            panic!("shardflow exited ({status}); log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "no refusal logged; log:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stored while the reader waits: before the start, so never read.
    let waiting = events(200, 400);
    put(&rt, &c, &stream, &waiting);
    let last_waiting = arrivals_of(&rt, &c, &stream, &waiting).into_iter().max().unwrap();
    assert!(last_waiting < start_ms, "the server stored a record at {last_waiting}, not before {start_ms}");
    // Past the start on the server's clock (ours runs at the same speed), then the records to read.
    std::thread::sleep(Duration::from_millis((start_ms - last_waiting + 300) as u64));
    let after = events(400, 700);
    put(&rt, &c, &stream, &after);
    put(&rt, &c, &stream, &[flush_event()]);
    let first_after = arrivals_of(&rt, &c, &stream, &after).into_iter().min().unwrap();
    assert!(first_after >= start_ms, "the server stored a record at {first_after}, before {start_ms}");
    let want = expected(&after);
    wait_for_rows(&dir.join("out"), want.len(), &mut child, &log, &dir);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_eq!(rows(&dir.join("out")), want);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches(refused).count(), 1, "the refusal is logged once per source:\n{text}");
}

/// A start further in the future than a clock could be off stops the job with a message that says what to do.
#[test]
fn an_at_timestamp_start_far_in_the_future_stops_the_job_with_a_clear_message() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "at-ts-far", 1);
    let probe = events(0, 1);
    put(&rt, &c, &stream, &probe);
    let now_ms = arrivals_of(&rt, &c, &stream, &probe)[0];
    let dir = TempDir::new("kinesis-at-timestamp-far");
    let cfg = at_timestamp_config(&dir, &stream, now_ms + 3_600_000);
    let log = dir.join("run.log");
    let mut child = spawn_logged(&cfg, &log);
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop on a start an hour ahead");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "exit status; log:\n{text}");
    assert!(text.contains("ahead of Kinesis' clock") && text.contains("use start = \"LATEST\""), "log:\n{text}");
}

/// The largest subscription count the run log reports for `stream_shard` (the metrics line, every 5 s).
fn subscriptions_reported(log: &Path, stream_shard: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tag = format!("stream shard {stream_shard}: ");
    text.lines()
        .filter_map(|l| l.split_once(&tag)?.1.strip_suffix(" subscriptions")?.rsplit(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Enhanced fan-out: the source registers its consumer and reads through SubscribeToShard, subscribing again
/// every `resubscribe_after` after the last sequence number it delivered. Across resubscriptions, a SIGKILL
/// and restart (which finds the consumer registered), and a split (the closed stream shard's end confirmed by
/// polling, its children read through their own subscriptions), every record is read once and each key in
/// order.
#[test]
fn enhanced_fan_out_reads_every_record_once_across_resubscriptions_a_restart_and_a_split() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "efo", 2);
    let dir = TempDir::new("kinesis-efo");
    let cfg = copy_job(&dir, &stream, "consumer = \"shardflow-e2e\"\nresubscribe_after = \"5s\"");
    let (log, out) = (dir.join("run.log"), dir.join("out"));
    let mut child = spawn_logged(&cfg, &log);
    put_keyed(&rt, &c, &stream, &keyed_events(0, 300));
    wait_for_rows(&out, 300, &mut child, &log, &dir);
    // Past the first renewal: these arrive through the second subscriptions.
    std::thread::sleep(Duration::from_secs(6));
    put_keyed(&rt, &c, &stream, &keyed_events(300, 600));
    wait_for_rows(&out, 600, &mut child, &log, &dir);
    child.kill().expect("SIGKILL shardflow");
    child.wait().expect("reap shardflow");
    put_keyed(&rt, &c, &stream, &keyed_events(600, 700));
    let mut child = spawn_logged(&cfg, &log);
    wait_for_rows(&out, 700, &mut child, &log, &dir);
    split_first(&rt, &c, &stream);
    put_keyed(&rt, &c, &stream, &keyed_events(700, 1000));
    wait_for_rows(&out, 1000, &mut child, &log, &dir);
    // The stream shard never split is read through subscriptions only: wait for its metrics to show a renewal.
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscriptions_reported(&log, "shardId-000000000001") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sigterm_and_wait(&mut child), 0);
    assert_each_key_once_and_in_order(&out, 1000);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("registered enhanced fan-out consumer shardflow-e2e"), "no registration:\n{text}");
    assert!(text.contains("consumer shardflow-e2e of stream") && text.contains("is registered: using it"));
    assert!(text.contains(": subscription 2 (renewed), after sequence number"), "no resubscription:\n{text}");
    assert!(subscriptions_reported(&log, "shardId-000000000001") >= 2, "no renewal in the metrics:\n{text}");
    assert!(text.contains("restored checkpoint"), "the restart restored no checkpoint:\n{text}");
    assert!(text.matches("reading stream shard").count() >= 6, "the split's children were not read:\n{text}");
}

/// A checkpointed position the stream no longer holds stops the job with an error naming the stream shard
/// and sequence number, and the stream shard's metrics say so: the records after it are never skipped
/// silently. (A local server cannot age records past retention; deleting the stream and creating it again
/// under the same name loses the position the same way.)
#[test]
fn a_position_the_stream_no_longer_holds_stops_the_job_and_is_reported() {
    let rt = runtime();
    let c = client(&rt);
    let stream = create_stream(&rt, &c, "lost", 1);
    let dir = TempDir::new("kinesis-lost-position");
    let cfg = copy_job(&dir, &stream, "");
    let (log, out) = (dir.join("run.log"), dir.join("out"));
    let mut child = spawn_logged(&cfg, &log);
    put_keyed(&rt, &c, &stream, &keyed_events(0, 100));
    wait_for_rows(&out, 100, &mut child, &log, &dir);
    assert_eq!(sigterm_and_wait(&mut child), 0);
    rt.block_on(async {
        c.delete_stream().stream_name(&stream).send().await.expect("DeleteStream");
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.describe_stream_summary().stream_name(&stream).send().await.is_ok() {
            assert!(Instant::now() < deadline, "stream {stream} was not deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.create_stream().stream_name(&stream).shard_count(1).send().await.expect("CreateStream");
    });
    wait_active(&rt, &c, &stream);
    put_keyed(&rt, &c, &stream, &keyed_events(100, 110));
    let mut child = spawn_logged(&cfg, &log);
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop on the lost position");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "exit status; log:\n{text}");
    let error = format!("cannot resume stream shard shardId-000000000000 of {stream} after sequence number ");
    assert!(text.contains(&error), "no error naming the position:\n{text}");
    assert!(text.contains("shardId-000000000000: 0 records read, 0 ms behind latest, position past retention"));
    assert_eq!(read_output_rows(&out).len(), 100, "nothing was read past the lost position");
}

/// An updating result (an unbounded GROUP BY) into Kinesis: as a debezium-json changelog, which applied in
/// each stream shard's order ends at the computed table; and as upserts keyed by the primary key, whose last
/// record per key is that key's final row.
#[test]
fn an_updating_result_goes_to_kinesis_as_a_changelog_and_as_upserts() {
    let rt = runtime();
    let c = client(&rt);
    let changes = create_stream(&rt, &c, "changes", 2);
    let upserts = create_stream(&rt, &c, "upserts", 2);
    let dir = TempDir::new("kinesis-changelog");
    // More rows than one batch, so that results change from batch to batch.
    let rows: Vec<Value> = (0..20_000).map(|i| serde_json::json!({"k": format!("k{}", i % 13), "v": i % 97})).collect();
    let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
    write_file(&dir.join("in.jsonl"), text.as_bytes());
    let sql = "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev GROUP BY k";
    let toml = format!(
        r#"[runtime]
cores = 2

[sources.ev]
connector = "file"
path = "in.jsonl"
schema = "k VARCHAR, v BIGINT"

[sinks.changes]
connector = "kinesis"
stream = "{changes}"
partition_key = "k"
format = "debezium-json"

[sinks.upserts]
connector = "kinesis"
stream = "{upserts}"
partition_key = "k"
primary_key = "k"

[[jobs]]
name = "changes"
sql = "INSERT INTO changes {sql}"

[[jobs]]
name = "upserts"
sql = "INSERT INTO upserts {sql}"
"#
    );
    let cfg = dir.join("job.toml");
    write_file(&cfg, toml.as_bytes());
    common::shardflow_run(&cfg).assert_code(0, &dir);
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &rows {
        let e = want.entry(r["k"].as_str().unwrap().to_string()).or_default();
        e.0 += 1;
        e.1 += r["v"].as_i64().unwrap();
    }
    let want_rows: BTreeMap<String, i64> =
        want.iter().map(|(k, (n, s))| (canonical_json(&serde_json::json!({"k": k, "n": n, "s": s})), 1)).collect();
    let log = read_all(&rt, &c, &changes);
    assert!(log.iter().any(|r| r["op"] == "u"), "the changelog holds no update");
    let table = common::apply_changelog(&log).unwrap_or_else(|e| panic!("the Kinesis changelog: {e}"));
    assert_eq!(table, want_rows);
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for (key, row) in read_all_keyed(&rt, &c, &upserts) {
        assert_eq!(key, row["k"].as_str().unwrap(), "partition key of {row}");
        latest.insert(key, row);
    }
    let latest: BTreeMap<String, i64> = latest.values().map(|r| (canonical_json(r), 1)).collect();
    assert_eq!(latest, want_rows);
}
