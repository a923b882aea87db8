//! The S3 mirror end to end: the real binary mirrors its checkpoints to a real local S3 server (moto, which
//! `.ci/run` installs and starts on 127.0.0.1) through the real AWS SDK, configured only by the environment
//! (`AWS_ENDPOINT_URL_S3` and static test credentials), so the daemon has no test-only code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{assert_rows_match, read_output_rows, spawn_logged, write_file, TempDir};
use serde_json::Value;

/// How long a test waits for a run or a log line before failing.
const WAIT: Duration = Duration::from_secs(120);

/// One test at a time: one of them pauses the S3 server, which would stall the others.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// The local S3 server's client; the server must be running (`.ci/run` starts it).
fn client(rt: &tokio::runtime::Runtime) -> aws_sdk_s3::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_S3").is_some(),
        "AWS_ENDPOINT_URL_S3 is not set: run the tests through .ci/run, which starts a local S3 server"
    );
    let cfg = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    aws_sdk_s3::Client::new(&cfg)
}

/// A new bucket, unique to this test run.
fn bucket(rt: &tokio::runtime::Runtime, c: &aws_sdk_s3::Client, label: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("{label}-{}-{}", std::process::id(), nanos % 1_000_000_000);
    rt.block_on(c.create_bucket().bucket(&name).send()).expect("CreateBucket");
    name
}

/// A bounded nexmark job (1 s tumbling windows per bidder) into a file sink, checkpointing every 200 ms;
/// `mirror` is the `[mirror]` section's body, if any.
fn job(dir: &Path, events: u64, rate: u64, mirror: Option<&str>) -> PathBuf {
    let mirror = mirror.map_or(String::new(), |m| format!("[mirror]\n{m}\n"));
    let events = if events == 0 { String::new() } else { format!("events = {events}") };
    let text = format!(
        r#"[runtime]
cores = 2
state_dir = "state"

[checkpoint]
interval = "200ms"

{mirror}
[sources.bid]
connector = "nexmark"
{events}
rate = {rate}
watermark = "dateTime - INTERVAL '4' SECOND"

[sinks.out]
connector = "file"
path = "out"

[[jobs]]
name = "kwin"
sql = """
INSERT INTO out
SELECT bidder, COUNT(*) AS n, SUM(price) AS total, window_start, window_end
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '1' SECOND))
GROUP BY bidder, window_start, window_end
"""
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("job.toml");
    write_file(&path, text.as_bytes());
    path
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `child` exits; its exit code.
fn wait_exit(child: &mut Child, log: &Path, dir: &TempDir) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            dir.keep();
            panic!("shardflow did not exit within {WAIT:?}; log:\n{}", log_text(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest mirrored checkpoint the log reports, waiting until it is at least `epoch`.
fn wait_mirrored(log: &Path, epoch: u64, child: &mut Child, dir: &TempDir) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let newest = log_text(log)
            .lines()
            .filter_map(|l| l.split_once("newest mirrored checkpoint ")?.1.split(' ').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        if newest >= epoch {
            return newest;
        }
        if let Some(status) = child.try_wait().unwrap() {
            dir.keep();
            panic!("shardflow exited ({status}) early; log:\n{}", log_text(log));
        }
        assert!(Instant::now() < deadline, "checkpoint {epoch} was not mirrored; log:\n{}", log_text(log));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The output of an uninterrupted run of [`job`] over `events` bids, without a mirror (as fast as it goes:
/// the generator's event times do not depend on the wall clock, so neither does the output).
fn reference_rows(dir: &TempDir, events: u64) -> Vec<Value> {
    let reference = job(&dir.join("reference"), events, 0, None);
    let log = dir.join("reference.log");
    let mut child = spawn_logged(&reference, &log);
    assert_eq!(wait_exit(&mut child, &log, dir), 0, "the uninterrupted run; log:\n{}", log_text(&log));
    let rows = sorted_rows(&dir.join("reference/out"));
    assert!(rows.len() > 1000, "the reference run wrote {} rows", rows.len());
    rows
}

fn sorted_rows(out: &Path) -> Vec<Value> {
    let mut rows = read_output_rows(out);
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Runs [`job`] mirrored by `mirror` (the section's body) in `dir/mirrored`, SIGKILLs it once 5 checkpoints
/// are mirrored, deletes its state directory (the machine's disk lost), runs it again to the end (exit 0);
/// returns the log of both runs.
fn kill_lose_the_disk_and_resume(dir: &TempDir, events: u64, rate: u64, mirror: &str) -> String {
    let cfg = job(&dir.join("mirrored"), events, rate, Some(mirror));
    let log = dir.join("mirrored.log");
    let mut child = spawn_logged(&cfg, &log);
    wait_mirrored(&log, 5, &mut child, dir);
    child.kill().expect("SIGKILL shardflow");
    child.wait().expect("reap shardflow");
    std::fs::remove_dir_all(dir.join("mirrored/state")).expect("delete the state directory");
    let mut child = spawn_logged(&cfg, &log);
    assert_eq!(wait_exit(&mut child, &log, dir), 0, "the resumed run; log:\n{}", log_text(&log));
    log_text(&log)
}

/// SIGKILL mid-run, the state directory deleted (the machine's disk lost), a start again: the run resumes
/// from the newest mirrored checkpoint, and its output equals an uninterrupted run's exactly.
#[test]
fn killed_and_its_state_dir_deleted_a_job_resumes_from_s3_with_exact_output() {
    let _serial = serial();
    let rt = runtime();
    let c = client(&rt);
    let bucket = bucket(&rt, &c, "resume");
    let dir = TempDir::new("mirror-resume");
    let (events, rate) = (4_000_000, 400_000);

    let want = reference_rows(&dir, events);

    let text = kill_lose_the_disk_and_resume(&dir, events, rate, &format!("url = \"s3://{bucket}/jobs/kwin\""));
    assert!(text.contains(&format!("from mirror s3://{bucket}/jobs/kwin")), "no resume from the mirror:\n{text}");
    assert!(text.contains("generation 2 claimed"), "the restart claimed no new generation:\n{text}");
    assert_rows_match("resumed from S3", &sorted_rows(&dir.join("mirrored/out")), &want, &dir);
    // Retention (keep = 3): at most 3 chain entries are left; every chunk they name is there, and no other.
    let objects = list_objects(&rt, &c, &bucket, "jobs/kwin/");
    let entries: Vec<Value> = objects
        .iter()
        .filter(|(k, _)| k.starts_with("jobs/kwin/chain/"))
        .map(|(_, v)| serde_json::from_slice(v).expect("a chain entry"))
        .collect();
    assert!((1..=3).contains(&entries.len()), "{} chain entries are left", entries.len());
    let named: std::collections::BTreeSet<String> = entries
        .iter()
        .flat_map(|e| e["checkpoint"]["chunks"].as_array().cloned().unwrap_or_default())
        .map(|c| format!("jobs/kwin/{}", c["key"].as_str().unwrap()))
        .collect();
    let chunks: std::collections::BTreeSet<String> =
        objects.iter().map(|(k, _)| k.clone()).filter(|k| k.starts_with("jobs/kwin/log/")).collect();
    assert_eq!(chunks, named, "the chunks in the mirror are exactly those the retained entries name");
}

/// Every object under `prefix`: key and bytes.
fn list_objects(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    rt.block_on(async {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = c
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("ListObjectsV2");
            for o in page.contents() {
                let key = o.key().unwrap().to_string();
                let got = c.get_object().bucket(bucket).key(&key).send().await.expect("GetObject");
                out.push((key, got.body.collect().await.expect("the body").into_bytes().to_vec()));
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return out,
            }
        }
    })
}

/// A second instance started on the same prefix (another machine: its own, empty state directory) takes
/// the mirror over; the first one stops publishing at once and exits with a clear error. Every chain entry
/// after the takeover is the second instance's.
#[test]
fn a_second_instance_fences_the_first() {
    let _serial = serial();
    let rt = runtime();
    let c = client(&rt);
    let bucket = bucket(&rt, &c, "fence");
    let dir = TempDir::new("mirror-fence");
    // Every entry kept, to check the whole chain afterwards.
    let mirror = format!("url = \"s3://{bucket}/kwin\"\nkeep = 1000");
    let first = job(&dir.join("a"), 0, 100_000, Some(&mirror));
    let second = job(&dir.join("b"), 0, 100_000, Some(&mirror));
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let mut a = spawn_logged(&first, &log_a);
    wait_mirrored(&log_a, 3, &mut a, &dir);
    let mut b = spawn_logged(&second, &log_b);
    wait_mirrored(&log_b, 1, &mut b, &dir);
    assert_eq!(wait_exit(&mut a, &log_a, &dir), 1, "the fenced instance; log:\n{}", log_text(&log_a));
    let text = log_text(&log_a);
    assert!(text.contains("another instance took this mirror prefix over"), "no clear error:\n{text}");
    // B keeps publishing after A is gone.
    let after = wait_mirrored(&log_b, 1, &mut b, &dir);
    wait_mirrored(&log_b, after + 3, &mut b, &dir);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(b.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(wait_exit(&mut b, &log_b, &dir), 0, "the second instance; log:\n{}", log_text(&log_b));
    // The chain: generation 1 (A), then B's claim (generation 2) and only B's entries after it.
    let entries: Vec<Value> = list_objects(&rt, &c, &bucket, "kwin/chain/")
        .iter()
        .map(|(_, v)| serde_json::from_slice(v).expect("a chain entry"))
        .collect();
    let claim = entries.iter().position(|e| e["kind"] == "claim" && e["generation"] == 2).expect("B's claim");
    assert!(entries[claim..].iter().all(|e| e["generation"] == 2), "an entry after B's claim is not B's");
    assert!(entries.len() - claim > 3, "B published after its claim");
}

/// Sends `signal` to the S3 server (`.ci/run` passes its process id).
fn signal_s3(signal: i32) {
    let pid: i32 = std::env::var("SHARDFLOW_TEST_S3_PID")
        .expect("SHARDFLOW_TEST_S3_PID is not set: run the tests through .ci/run")
        .parse()
        .expect("a process id");
    // SAFETY: signalling the S3 server process .ci/run started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal the S3 server");
}

/// The S3 server stops answering for 30 s mid-run: the job keeps running and checkpointing locally until
/// the not yet mirrored bytes pass `[mirror] backlog`, then its sources pause (checkpoints go on); the mirror
/// retries, catches up once the server is back, the sources resume, and the output is exact.
#[test]
fn an_s3_outage_of_30_s_mid_run_loses_nothing() {
    let _serial = serial();
    let rt = runtime();
    let c = client(&rt);
    let bucket = bucket(&rt, &c, "outage");
    let dir = TempDir::new("mirror-outage");
    let events = 12_000_000;
    let want = reference_rows(&dir, events);
    // A small backlog limit: the outage fills it, and the sources pause until the mirror catches up.
    let mirror = format!("url = \"s3://{bucket}/kwin\"\nbacklog = \"4MB\"");
    let cfg = job(&dir.join("mirrored"), events, 250_000, Some(&mirror));
    let log = dir.join("mirrored.log");
    let mut child = spawn_logged(&cfg, &log);
    let before = wait_mirrored(&log, 3, &mut child, &dir);
    signal_s3(libc::SIGSTOP);
    let paused = Instant::now();
    let completed = |text: &str| text.matches(" complete in ").count();
    let at_pause = completed(&log_text(&log));
    std::thread::sleep(Duration::from_secs(30));
    let during = completed(&log_text(&log)) - at_pause;
    let running = child.try_wait().unwrap().is_none();
    signal_s3(libc::SIGCONT);
    assert!(running, "the job stopped during the outage; log:\n{}", log_text(&log));
    assert!(during >= 10, "{during} local checkpoints in {:?} of outage", paused.elapsed());
    assert_eq!(wait_exit(&mut child, &log, &dir), 0, "the run; log:\n{}", log_text(&log));
    let text = log_text(&log);
    let retries: u64 =
        text.lines().filter_map(|l| l.split_once(" retries")?.0.rsplit(' ').next()?.parse().ok()).max().unwrap_or(0);
    assert!(retries > 0, "the mirror reported no retries:\n{text}");
    let paused = text.find("the sources are paused until the mirror catches up").expect("no backpressure");
    assert!(text[paused..].contains("the sources are resumed"), "the sources were not resumed:\n{text}");
    assert!(wait_mirrored(&log, before + 1, &mut child, &dir) > before);
    assert_rows_match("through an S3 outage", &sorted_rows(&dir.join("mirrored/out")), &want, &dir);
}

/// A `file://` mirror (a directory, e.g. a mounted network volume) works the same way: killed, state
/// directory deleted, resumed from the mirror with exact output.
#[test]
fn a_directory_mirror_resumes_a_killed_job_with_exact_output() {
    let dir = TempDir::new("mirror-directory");
    let events = 3_000_000;
    let want = reference_rows(&dir, events);
    let url = format!("url = \"file://{}\"", dir.join("mirror").display());
    let text = kill_lose_the_disk_and_resume(&dir, events, 400_000, &url);
    assert!(text.contains("from mirror file://"), "no resume from the mirror:\n{text}");
    assert_rows_match("resumed from a directory", &sorted_rows(&dir.join("mirrored/out")), &want, &dir);
    let entries = std::fs::read_dir(dir.join("mirror/chain")).expect("the chain directory").count();
    assert!((1..=3).contains(&entries), "{entries} chain entries are left (keep = 3)");
}
