//! Exactly-once state on the real binary: jobs killed with SIGKILL at random moments (mid-checkpoint and
//! mid-commit included) and restarted until they complete must write exactly what an uninterrupted run
//! writes; a job stopped by SIGTERM resumes where it stopped; a checkpoint of another config is refused and a
//! damaged one is a clear, fatal error.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// SIGKILLs per crash test run (the issue asks for at least 30); `SHARDFLOW_CRASH_KILLS` raises it for long
/// local runs, with `SHARDFLOW_CRASH_RATE` (events/s) lowered so the job outlasts the kills.
const CRASH_KILLS: usize = 30;

/// The rate-limited nexmark stream's events/s in the crash test.
const CRASH_RATE: u64 = 100_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A killed run lives this long at least and at most: long enough to start and get through a few of the
/// 50 ms checkpoints, short enough that 30 kills land all over the run.
const LIFE_MIN_MS: u64 = 20;
const LIFE_MAX_MS: u64 = 300;

/// Longest a last, uninterrupted run may take to finish the job.
const FINISH_TIMEOUT: Duration = Duration::from_secs(240);

/// The tests of this file run the binary one at a time: each spreads its shards over every core.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small deterministic random generator (xorshift), seeded and reported so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed = std::env::var("SHARDFLOW_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        });
        eprintln!("crash test seed: {seed} (replay with SHARDFLOW_CRASH_SEED={seed})");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Waits for a child with a deadline; its exit code.
fn wait_for(child: &mut Child, timeout: Duration, log: &Path, dir: &TempDir) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for shardflow") {
            return status.code().unwrap_or(-1);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            dir.keep();
            panic!("shardflow did not finish in {timeout:?}; log: {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills runs of `config` with SIGKILL `kills` times at random moments, then lets one run finish. Returns
/// the number of runs that restored a checkpoint.
fn run_with_kills(config: &Path, kills: usize, dir: &TempDir) -> usize {
    run_with_kills_cycling(&[config], kills, dir)
}

/// As [`run_with_kills`], each run taking the next of `configs` in turn (the same job and state directory on
/// other core counts).
fn run_with_kills_cycling(configs: &[&Path], kills: usize, dir: &TempDir) -> usize {
    let log = dir.join("runs.log");
    let mut rng = Rng::from_time();
    let mut killed = 0;
    let config = |run: usize| configs[run % configs.len()];
    while killed < kills {
        let mut child = spawn_logged(config(killed), &log);
        std::thread::sleep(Duration::from_millis(rng.between(LIFE_MIN_MS, LIFE_MAX_MS)));
        if child.try_wait().expect("poll shardflow").is_some() {
            // It finished before the kill: start over from the checkpoints it left (a finished run).
            break;
        }
        child.kill().expect("SIGKILL shardflow");
        child.wait().expect("reap shardflow");
        killed += 1;
    }
    let mut child = spawn_logged(config(killed), &log);
    let code = wait_for(&mut child, FINISH_TIMEOUT, &log, dir);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if code != 0 {
        dir.keep();
        panic!("the last run exited {code}; log tail:\n{}", &text[text.len().saturating_sub(4000)..]);
    }
    eprintln!("{killed} kills, then a run to the end");
    assert!(killed >= kills.min(1), "no run was killed");
    text.matches("restored checkpoint").count()
}

/// Sorted canonical rows of a sink directory.
fn rows(dir: &Path) -> Vec<String> {
    let mut r: Vec<String> = read_output_rows(dir).iter().map(canonical_json).collect();
    r.sort();
    r
}

fn assert_same_output(label: &str, got: &Path, want: &Path, dir: &TempDir) {
    let (g, w) = (rows(got), rows(want));
    if g != w {
        dir.keep();
        let missing = w.iter().filter(|r| !g.contains(r)).count();
        let extra = g.len() + missing - w.len();
        panic!("{label}: {} rows, expected {} ({missing} missing, {extra} extra or duplicated)", g.len(), w.len());
    }
    assert!(!w.is_empty(), "{label}: the reference run wrote nothing");
    assert_eq!(hidden_output_files(got), Vec::<String>::new(), "{label}: uncommitted parts left behind");
}

/// Two windowed jobs on a rate-limited nexmark stream (so that a run lasts long enough to be killed 30
/// times), with file sinks, checkpointed every 50 ms.
fn nexmark_config(dir: &TempDir, name: &str, cores: usize, checkpoints: bool, rate: u64) -> PathBuf {
    let checkpoint = if checkpoints { "[checkpoint]\ninterval = \"50ms\"\n" } else { "" };
    let text = format!(
        r#"[runtime]
cores = {cores}
key_groups = 64
state_dir = "state"

{checkpoint}
[sources.bid]
connector = "nexmark"
table = "bid"
events = 800_000
rate = {rate}
event_rate = 10_000
key_space = 500
watermark = "dateTime - INTERVAL '4' SECOND"

[sinks.counts]
connector = "file"
path = "{name}/counts"

[sinks.hops]
connector = "file"
path = "{name}/hops"

[[jobs]]
name = "counts"
sql = """
INSERT INTO counts
SELECT bidder, COUNT(*) AS n, MAX(price) AS maxp, SUM(price) AS total, window_start, window_end
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end
"""

[[jobs]]
name = "hops"
sql = """
INSERT INTO hops
SELECT auction, COUNT(*) AS n, window_end
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end
"""
"#
    );
    let path = dir.join(format!("{name}.toml"));
    write_file(&path, text.as_bytes());
    path
}

/// The uninterrupted, checkpoint-free run of the nexmark jobs, into `reference/`.
fn nexmark_reference(dir: &TempDir) {
    let reference = nexmark_config(dir, "reference", 2, false, 0);
    shardflow_run(&reference).assert_code(0, dir);
}

/// Starts a run of `cfg`, sends it SIGTERM after `after`, and checks that it stops cleanly.
fn run_then_sigterm(cfg: &Path, after: Duration, dir: &TempDir) {
    let log = dir.join("runs.log");
    let mut child = spawn_logged(cfg, &log);
    std::thread::sleep(after);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(wait_for(&mut child, Duration::from_secs(30), &log, dir), 0, "SIGTERM must stop cleanly");
}

#[test]
fn killed_30_times_a_nexmark_job_writes_exactly_what_an_uninterrupted_run_writes() {
    let _serial = serial();
    let dir = TempDir::new("crash-nexmark");
    nexmark_reference(&dir);
    let crashed = nexmark_config(&dir, "crashed", 2, true, env_or("SHARDFLOW_CRASH_RATE", CRASH_RATE));
    let restores = run_with_kills(&crashed, env_or("SHARDFLOW_CRASH_KILLS", CRASH_KILLS), &dir);
    assert!(restores > 0, "no run restored a checkpoint");
    for sink in ["counts", "hops"] {
        assert_same_output(sink, &dir.join(format!("crashed/{sink}")), &dir.join(format!("reference/{sink}")), &dir);
    }
}

/// Restarts after SIGKILL alternate between 2 cores and 1: each restore replays logs of base and deltas
/// (with fired slices dropped) written by another shard layout, key groups moving between shards.
#[test]
fn killed_and_restarted_on_alternating_core_counts_the_output_is_exact() {
    let _serial = serial();
    let dir = TempDir::new("crash-rescale");
    nexmark_reference(&dir);
    let two = nexmark_config(&dir, "crashed", 2, true, CRASH_RATE);
    let one = dir.join("crashed-1.toml");
    let text = std::fs::read_to_string(&two).unwrap().replace("cores = 2", "cores = 1");
    write_file(&one, text.as_bytes());
    let restores = run_with_kills_cycling(&[&two, &one], 10, &dir);
    assert!(restores > 0, "no run restored a checkpoint");
    for sink in ["counts", "hops"] {
        assert_same_output(sink, &dir.join(format!("crashed/{sink}")), &dir.join(format!("reference/{sink}")), &dir);
    }
}

/// Three files of events with bounded disorder, so that an uninterrupted run has no late events.
fn write_event_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(7);
    for f in 0..3 {
        let mut text = String::new();
        for i in 0..60_000i64 {
            let ts = 1_767_225_600_000 + i * 7 + rng.between(0, 3_000) as i64;
            text.push_str(&format!(
                "{{\"k\":\"k{}\",\"v\":{},\"ts\":{ts}}}\n",
                rng.between(0, 300),
                rng.between(1, 100)
            ));
            if i % 9_999 == 0 {
                text.push_str("{not json\n");
            }
        }
        write_file(&dir.join(format!("events-{f}.jsonl")), text.as_bytes());
    }
}

fn file_config(dir: &TempDir, name: &str, cores: usize, checkpoints: bool) -> PathBuf {
    let checkpoint = if checkpoints { "[checkpoint]\ninterval = \"20ms\"\n" } else { "" };
    let text = format!(
        r#"[runtime]
cores = {cores}
state_dir = "state-{name}"

{checkpoint}
[sources.ev]
connector = "file"
path = "input"
format = "json"
schema = "{EVENT_SCHEMA}"
watermark = "{EVENT_WATERMARK}"
dead_letter = "bad"

[sinks.out]
connector = "file"
path = "{name}/out"

[sinks.bad]
connector = "file"
path = "{name}/bad"

[[jobs]]
name = "sessions"
sql = """
INSERT INTO out
SELECT k, SESSION_START(ts, INTERVAL '2' SECOND) AS s, SESSION_END(ts, INTERVAL '2' SECOND) AS e,
       COUNT(*) AS n, SUM(v) AS total, AVG(v) AS mean, COUNT(DISTINCT v) AS distinct_v
FROM ev GROUP BY k, SESSION(ts, INTERVAL '2' SECOND)
"""
"#
    );
    let path = dir.join(format!("{name}.toml"));
    write_file(&path, text.as_bytes());
    path
}

#[test]
fn killed_during_a_file_job_sessions_and_dead_letters_are_exactly_once() {
    let _serial = serial();
    let dir = TempDir::new("crash-file");
    write_event_files(&dir.join("input"));
    let reference = file_config(&dir, "reference", 2, false);
    shardflow_run(&reference).assert_code(0, &dir);
    let crashed = file_config(&dir, "crashed", 2, true);
    run_with_kills(&crashed, 8, &dir);
    for sink in ["out", "bad"] {
        assert_same_output(sink, &dir.join(format!("crashed/{sink}")), &dir.join(format!("reference/{sink}")), &dir);
    }
}

#[test]
fn sigterm_stops_with_a_final_checkpoint_and_the_next_run_resumes() {
    let _serial = serial();
    let dir = TempDir::new("sigterm");
    nexmark_reference(&dir);
    let cfg = nexmark_config(&dir, "stopped", 2, true, 200_000);
    let log = dir.join("runs.log");
    run_then_sigterm(&cfg, Duration::from_millis(1500), &dir);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("(final: stopped)"), "no final checkpoint:\n{text}");
    let partial = rows(&dir.join("stopped/counts")).len();
    assert!(partial < rows(&dir.join("reference/counts")).len(), "the job was not stopped before its end");
    assert_eq!(hidden_output_files(&dir.join("stopped/counts")), Vec::<String>::new());
    let mut child = spawn_logged(&cfg, &log);
    assert_eq!(wait_for(&mut child, FINISH_TIMEOUT, &log, &dir), 0);
    for sink in ["counts", "hops"] {
        assert_same_output(sink, &dir.join(format!("stopped/{sink}")), &dir.join(format!("reference/{sink}")), &dir);
    }
    // A finished job's state says so: running it again does nothing.
    let again = shardflow_run(&cfg);
    again.assert_code(0, &dir);
    assert!(again.stderr.contains("already ran to completion"), "{}", again.describe());
    assert_same_output("counts", &dir.join("stopped/counts"), &dir.join("reference/counts"), &dir);
}

/// A bounded job with checkpoints, stopped by SIGTERM at once, leaves a checkpoint to restore.
fn stopped_run(dir: &TempDir) -> PathBuf {
    let cfg = nexmark_config(dir, "job", 2, true, 100_000);
    run_then_sigterm(&cfg, Duration::from_millis(700), dir);
    cfg
}

#[test]
fn a_checkpoint_of_another_config_is_refused_naming_what_changed() {
    let _serial = serial();
    let dir = TempDir::new("binding");
    let cfg = stopped_run(&dir);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("key_groups = 64", "key_groups = 32");
    write_file(&cfg, text.as_bytes());
    let out = shardflow_run(&cfg);
    out.assert_code(2, &dir);
    assert!(out.stderr.contains("runtime.key_groups was 64 and is now 32"), "{}", out.describe());
}

/// State written in the first checkpoint format (one window operator per job, no operator ids in the log)
/// is refused with what to do, before anything is read of it; a v1 manifest's layout differs, so it is
/// recognized by its version alone.
#[test]
fn a_checkpoint_of_the_first_format_is_refused_with_what_to_do() {
    let _serial = serial();
    let dir = TempDir::new("format-v1");
    let cfg = stopped_run(&dir);
    let manifests = dir.join("state/checkpoints");
    let newest = std::fs::read_dir(&manifests).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    manifest["binding"]["format_version"] = serde_json::json!(1);
    // Version 1 kept one watermark per job: an array of integers.
    for shard in manifest["shards"].as_array_mut().unwrap() {
        shard["watermarks"] = serde_json::json!([i64::MIN]);
    }
    std::fs::write(&newest, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let out = shardflow_run(&cfg);
    out.assert_code(2, &dir);
    for want in ["checkpoint format version 1", "before jobs became operator graphs", "from an empty runtime.state_dir"]
    {
        assert!(out.stderr.contains(want), "lacks {want:?}: {}", out.describe());
    }
}

#[test]
fn a_damaged_checkpoint_is_a_fatal_error_naming_file_and_offset() {
    let _serial = serial();
    let dir = TempDir::new("damaged");
    let cfg = stopped_run(&dir);
    let manifests = dir.join("state/checkpoints");
    let newest = std::fs::read_dir(&manifests).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    let range = &manifest["shards"][0]["log"][0];
    let file = dir.join("state/log").join(range["file"].as_str().unwrap());
    let at = (range["from"].as_u64().unwrap() + 20) as usize;
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let out = shardflow_run(&cfg);
    out.assert_code(1, &dir);
    let name = range["file"].as_str().unwrap();
    assert!(out.stderr.contains(name) && out.stderr.contains("at byte"), "{}", out.describe());
    assert!(out.stderr.contains("is damaged"), "{}", out.describe());
}

/// Stops a 2-core (or 1-core) run with SIGTERM, saves a savepoint, and finishes the job from it on the other
/// core count, into a fresh state directory: the output equals an uninterrupted run's.
fn savepoint_rescale(from_cores: usize, to_cores: usize) {
    let _serial = serial();
    let dir = TempDir::new(&format!("savepoint-{from_cores}-{to_cores}"));
    nexmark_reference(&dir);
    let first = nexmark_config(&dir, "job", from_cores, true, 200_000);
    run_then_sigterm(&first, Duration::from_millis(1200), &dir);
    let savepoint = dir.join("savepoint");
    let out = run_shardflow(
        dir.path(),
        &["savepoint".as_ref(), "-c".as_ref(), first.as_os_str(), "--to".as_ref(), savepoint.as_os_str()],
    );
    out.assert_code(0, &dir);
    assert!(out.stderr.contains("savepoint of checkpoint"), "{}", out.describe());
    // The same job on another core count, with its own state directory, writing into the same sinks.
    let second = dir.join("second.toml");
    let text = std::fs::read_to_string(&first)
        .unwrap()
        .replace(&format!("cores = {from_cores}"), &format!("cores = {to_cores}"))
        .replace("state_dir = \"state\"", "state_dir = \"state-second\"");
    write_file(&second, text.as_bytes());
    let out = run_shardflow(
        dir.path(),
        &["run".as_ref(), "-c".as_ref(), second.as_os_str(), "--from-savepoint".as_ref(), savepoint.as_os_str()],
    );
    out.assert_code(0, &dir);
    assert!(out.stderr.contains("restored checkpoint"), "{}", out.describe());
    for sink in ["counts", "hops"] {
        assert_same_output(sink, &dir.join(format!("job/{sink}")), &dir.join(format!("reference/{sink}")), &dir);
    }
}

#[test]
fn a_savepoint_from_2_cores_finishes_on_1_core() {
    savepoint_rescale(2, 1);
}

#[test]
fn a_savepoint_from_1_core_finishes_on_2_cores() {
    savepoint_rescale(1, 2);
}

#[test]
fn a_savepoint_taken_while_the_job_runs_restores_exactly_its_checkpoint() {
    let _serial = serial();
    let dir = TempDir::new("savepoint-running");
    nexmark_reference(&dir);
    let first = nexmark_config(&dir, "first", 2, true, 150_000);
    let log = dir.join("runs.log");
    let mut child = spawn_logged(&first, &log);
    std::thread::sleep(Duration::from_millis(1500));
    let savepoint = dir.join("savepoint");
    let args = ["savepoint".as_ref(), "-c".as_ref(), first.as_os_str(), "--to".as_ref(), savepoint.as_os_str()];
    let out = run_shardflow(dir.path(), &args);
    out.assert_code(0, &dir);
    assert!(child.try_wait().unwrap().is_none(), "the job must still be running while the savepoint is taken");
    child.kill().unwrap();
    child.wait().unwrap();
    let epoch: u64 = out
        .stderr
        .split("savepoint of checkpoint ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {}", out.describe()));
    // A second run from the savepoint, into other sinks; with the first run's output of the epochs up to the
    // savepoint's, it must make exactly the uninterrupted output.
    let second = dir.join("second.toml");
    let text = std::fs::read_to_string(&first)
        .unwrap()
        .replace("\"first/", "\"second/")
        .replace("state_dir = \"state\"", "state_dir = \"state-second\"");
    write_file(&second, text.as_bytes());
    let args = ["run".as_ref(), "-c".as_ref(), second.as_os_str(), "--from-savepoint".as_ref(), savepoint.as_os_str()];
    run_shardflow(dir.path(), &args).assert_code(0, &dir);
    for sink in ["counts", "hops"] {
        let mut got = rows(&dir.join(format!("second/{sink}")));
        for file in visible_output_files(&dir.join(format!("first/{sink}"))) {
            if part_epoch(&file).is_some_and(|e| e <= epoch) {
                let text = std::fs::read_to_string(&file).unwrap();
                got.extend(text.lines().map(|l| canonical_json(&serde_json::from_str(l).unwrap())));
            }
        }
        got.sort();
        assert_eq!(got, rows(&dir.join(format!("reference/{sink}"))), "{sink}: savepoint {epoch}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Stateful SQL beyond windows: joins, Top-N, unbounded aggregation, with updating (debezium-json) results.

/// The sinks of [`sql_config`]'s jobs.
const SQL_SINKS: [&str; 3] = ["joined", "top", "totals"];

/// Three updating jobs on rate-limited nexmark tables (about 4 s of input at `bid_rate`), checkpointed every
/// 50 ms: a LEFT JOIN of auctions with their sellers (a null-padded row is retracted when its seller comes),
/// a Top-3 of prices per auction, and an unbounded GROUP BY with MIN, MAX and COUNT DISTINCT.
fn sql_config(dir: &TempDir, name: &str, cores: usize, checkpoints: bool, bid_rate: u64) -> PathBuf {
    let checkpoint = if checkpoints { "[checkpoint]\ninterval = \"50ms\"\n" } else { "" };
    // Persons and auctions keep pace with the bids: 1 and 3 per 46 bids.
    let (person_rate, auction_rate) = (bid_rate / 46, bid_rate * 3 / 46);
    let mut text = format!(
        r#"[runtime]
cores = {cores}
key_groups = 64
state_dir = "state"
state_ttl = "1h"

{checkpoint}
[sources.bid]
connector = "nexmark"
table = "bid"
events = 400_000
rate = {bid_rate}
event_rate = 10_000
key_space = 500
watermark = "dateTime - INTERVAL '4' SECOND"

[sources.person]
connector = "nexmark"
table = "person"
events = 8_600
rate = {person_rate}
event_rate = 10_000
watermark = "dateTime - INTERVAL '4' SECOND"

[sources.auction]
connector = "nexmark"
table = "auction"
events = 26_000
rate = {auction_rate}
event_rate = 10_000
watermark = "dateTime - INTERVAL '4' SECOND"

[[jobs]]
name = "joined"
sql = """
INSERT INTO joined
SELECT a.id, a.category, a.seller, p.name, p.state
FROM auction AS a LEFT JOIN person AS p ON a.seller = p.id
"""

[[jobs]]
name = "top"
sql = """
INSERT INTO top
SELECT auction, price, rn
FROM (SELECT auction, price, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid)
WHERE rn <= 3
"""

[[jobs]]
name = "totals"
sql = """
INSERT INTO totals
SELECT bidder % 50 AS b, COUNT(*) AS n, MIN(price) AS lo, MAX(price) AS hi, COUNT(DISTINCT auction) AS auctions
FROM bid GROUP BY bidder % 50
"""
"#
    );
    for sink in SQL_SINKS {
        text +=
            &format!("\n[sinks.{sink}]\nconnector = \"file\"\npath = \"{name}/{sink}\"\nformat = \"debezium-json\"\n");
    }
    let path = dir.join(format!("{name}.toml"));
    write_file(&path, text.as_bytes());
    path
}

/// The table a sink's changelog ends at (every update and delete must take away a row that is there).
fn final_table(label: &str, sink: &Path, dir: &TempDir) -> std::collections::BTreeMap<String, i64> {
    apply_changelog(&read_changelog(sink)).unwrap_or_else(|e| {
        dir.keep();
        panic!("{label}: {e}")
    })
}

/// After crashes, every SQL sink's changelog ends at the table of an uninterrupted, checkpoint-free run.
fn assert_same_tables(dir: &TempDir, crashed: &str) {
    for sink in SQL_SINKS {
        let want = final_table(&format!("reference {sink}"), &dir.join(format!("reference/{sink}")), dir);
        let got = final_table(&format!("{crashed} {sink}"), &dir.join(format!("{crashed}/{sink}")), dir);
        assert!(want.len() > 40, "{sink}: the reference table has only {} rows", want.len());
        if got != want {
            dir.keep();
            let missing = want.iter().filter(|(k, n)| got.get(*k) != Some(n)).count();
            let extra = got.iter().filter(|(k, n)| want.get(*k) != Some(n)).count();
            panic!(
                "{sink}: {} rows, expected {} ({missing} missing or miscounted, {extra} unexpected)",
                got.len(),
                want.len()
            );
        }
        assert_eq!(hidden_output_files(&dir.join(format!("{crashed}/{sink}"))), Vec::<String>::new());
    }
    // The left join did retract null-padded rows, so restores carried join state that changes output.
    let joined = read_changelog(&dir.join(format!("{crashed}/joined")));
    assert!(joined.iter().any(|c| c["op"] == "u" || c["op"] == "d"), "the left join never retracted a row");
}

#[test]
fn killed_sql_jobs_with_joins_top_n_and_group_by_end_at_the_tables_of_an_uninterrupted_run() {
    let _serial = serial();
    let dir = TempDir::new("crash-sql");
    let reference = sql_config(&dir, "reference", 2, false, 0);
    shardflow_run(&reference).assert_code(0, &dir);
    let crashed = sql_config(&dir, "crashed", 2, true, env_or("SHARDFLOW_CRASH_RATE", CRASH_RATE));
    let restores = run_with_kills(&crashed, env_or("SHARDFLOW_CRASH_KILLS", 15), &dir);
    assert!(restores > 0, "no run restored a checkpoint");
    assert_same_tables(&dir, "crashed");
}

/// Restarts alternate between 2 cores and 1: join, ranking and aggregation state moves between shards with
/// its key groups.
#[test]
fn killed_sql_jobs_restarted_on_alternating_core_counts_end_at_the_same_tables() {
    let _serial = serial();
    let dir = TempDir::new("crash-sql-rescale");
    let reference = sql_config(&dir, "reference", 2, false, 0);
    shardflow_run(&reference).assert_code(0, &dir);
    let two = sql_config(&dir, "crashed", 2, true, CRASH_RATE);
    let one = dir.join("crashed-1.toml");
    let text = std::fs::read_to_string(&two).unwrap().replace("cores = 2", "cores = 1");
    write_file(&one, text.as_bytes());
    let restores = run_with_kills_cycling(&[&two, &one], 10, &dir);
    assert!(restores > 0, "no run restored a checkpoint");
    assert_same_tables(&dir, "crashed");
}
