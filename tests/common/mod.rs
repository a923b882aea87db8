//! Shared helpers for the end-to-end tests, which run the real `shardflow` binary on real files.
//!
//! - [`TempDir`]: a fresh directory under `std::env::temp_dir()`, removed on drop unless a test failed
//!   or asked to keep it.
//! - [`Config`], [`FileSource`], [`FileSink`], [`Job`]: write a shardflow TOML config (DESIGN.md 4.2).
//! - [`shardflow_run`], [`shardflow_check`], [`run_shardflow`]: run the binary with a deadline, capture its
//!   output ([`RunOutput`]).
//! - [`read_output_rows`]: every JSON line of every visible file of a file sink's output directory.
//! - [`assert_rows_match`], [`diff_rows`]: compare rows as multisets and print a readable diff.
//! - [`EventGen`], [`generate_events`], [`write_input`]: deterministic out-of-order input that is never late.
//! - [`WindowSpec`], [`group_into_windows`], [`Agg`], [`brute_force_rows`]: expected results computed by
//!   brute force from the definitions of Flink's windows, independently of shardflow's code.
//!
//! Only `std` and `serde_json` are used, so that every test file can include this module with `mod common;`.
#![allow(dead_code)]

use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------------------
// Limits and the standard event table.

/// How long one run of the binary may take before the test kills it and fails. A few thousand events take
/// far less; the limit only turns a hang into a failure. Override with `SHARDFLOW_E2E_TIMEOUT_SECS`.
pub const RUN_TIMEOUT_DEFAULT_SECS: u64 = 300;
/// How often the runner polls a child for its exit while waiting for it with a deadline.
pub const RUN_POLL_INTERVAL_MS: u64 = 10;
/// At most this many rows of each kind are printed in a diff; the counts are always printed.
pub const DIFF_ROWS_SHOWN_MAX: usize = 40;
/// A row longer than this is cut short in a diff (a bad-input test may make a row of megabytes).
pub const DIFF_ROW_SHOWN_MAX_CHARS: usize = 400;
/// At most this many bytes of a child's stderr/stdout are quoted in a failure message (the tail).
pub const OUTPUT_QUOTED_MAX_BYTES: usize = 8 * 1024;

/// The schema of the standard event table `ev`.
pub const EVENT_SCHEMA: &str = "k VARCHAR, v BIGINT, ts TIMESTAMP(3)";
/// The watermark of the standard event table: 5 s of out-of-orderness.
pub const EVENT_WATERMARK: &str = "ts - INTERVAL '5' SECOND";
pub const WATERMARK_DELAY_MS: i64 = 5_000;
/// The generator never puts an event this far (or farther) behind the largest event time before it.
/// It is kept a full second below the watermark delay so that no event is late, whatever the exact firing
/// rule (watermark >= end or >= end - 1), and so that no event can touch an already fired session window.
pub const EVENT_LAG_MAX_MS: i64 = 4_000;
const _: () = assert!(EVENT_LAG_MAX_MS + 1_000 <= WATERMARK_DELAY_MS);

// ---------------------------------------------------------------------------------------------------------
// Temp dirs.

/// A fresh directory `shardflow-e2e-LABEL-PID-COUNTER-NANOS` under `std::env::temp_dir()`. Removed on drop,
/// unless [`TempDir::keep`] was called or the thread is panicking (a failed assertion): then its path is
/// printed so it can be inspected.
pub struct TempDir {
    path: PathBuf,
    keep: Cell<bool>,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let label: String =
            label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let name = format!("shardflow-e2e-{label}-{}-{counter}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path, keep: Cell::new(false) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }

    /// Keep the directory after the test, for inspection.
    pub fn keep(&self) {
        self.keep.set(true);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep.get() || std::thread::panicking() {
            eprintln!("kept temp dir for inspection: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Config files (DESIGN.md 4.2).

/// A `connector = "file"`, `format = "json"` source.
#[derive(Clone, Debug)]
pub struct FileSource {
    pub name: String,
    /// A file, or a directory of files read in name order.
    pub path: PathBuf,
    pub schema: String,
    pub watermark: String,
}

impl FileSource {
    /// The standard event table: [`EVENT_SCHEMA`], [`EVENT_WATERMARK`].
    pub fn events(name: &str, path: impl Into<PathBuf>) -> FileSource {
        FileSource {
            name: name.to_string(),
            path: path.into(),
            schema: EVENT_SCHEMA.to_string(),
            watermark: EVENT_WATERMARK.to_string(),
        }
    }
}

/// A `connector = "file"`, `format = "json"` sink writing part files into a directory.
#[derive(Clone, Debug)]
pub struct FileSink {
    pub name: String,
    pub path: PathBuf,
}

impl FileSink {
    pub fn new(name: &str, path: impl Into<PathBuf>) -> FileSink {
        FileSink { name: name.to_string(), path: path.into() }
    }
}

#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub sql: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub cores: u32,
    pub key_groups: u32,
    pub sources: Vec<FileSource>,
    pub sinks: Vec<FileSink>,
    pub jobs: Vec<Job>,
}

impl Config {
    /// One source, one sink, one job named "job", 128 key groups.
    pub fn single_job(cores: u32, source: FileSource, sink: FileSink, sql: &str) -> Config {
        Config {
            cores,
            key_groups: 128,
            sources: vec![source],
            sinks: vec![sink],
            jobs: vec![Job { name: "job".to_string(), sql: sql.to_string() }],
        }
    }

    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        writeln!(t, "[runtime]\ncores = {}\nkey_groups = {}", self.cores, self.key_groups).unwrap();
        for s in &self.sources {
            writeln!(t, "\n[sources.{}]", s.name).unwrap();
            writeln!(t, "connector = \"file\"").unwrap();
            writeln!(t, "path = {}", toml_string(&path_str(&s.path))).unwrap();
            writeln!(t, "format = \"json\"").unwrap();
            writeln!(t, "schema = {}", toml_string(&s.schema)).unwrap();
            writeln!(t, "watermark = {}", toml_string(&s.watermark)).unwrap();
        }
        for s in &self.sinks {
            writeln!(t, "\n[sinks.{}]", s.name).unwrap();
            writeln!(t, "connector = \"file\"").unwrap();
            writeln!(t, "path = {}", toml_string(&path_str(&s.path))).unwrap();
            writeln!(t, "format = \"json\"").unwrap();
        }
        for j in &self.jobs {
            writeln!(t, "\n[[jobs]]").unwrap();
            writeln!(t, "name = {}", toml_string(&j.name)).unwrap();
            writeln!(t, "sql = {}", toml_string(&j.sql)).unwrap();
        }
        t
    }

    /// Writes the config to `path` and returns that path.
    pub fn write(&self, path: &Path) -> PathBuf {
        write_file(path, self.to_toml().as_bytes());
        path.to_path_buf()
    }
}

/// A TOML basic string (double quotes, escapes), valid for any text including newlines and quotes.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(out, "\\u{:04X}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap_or_else(|| panic!("test paths must be UTF-8: {}", path.display())).to_string()
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------------------
// Running the binary.

pub fn shardflow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardflow"))
}

/// Starts `shardflow run -c config` in the config's directory, its stdout and stderr appended to `log`.
pub fn spawn_logged(config: &Path, log: &Path) -> std::process::Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the run log");
    let err = out.try_clone().expect("clone the run log");
    std::process::Command::new(shardflow_bin())
        .args(["run", "-c"])
        .arg(config)
        .current_dir(config.parent().unwrap_or(Path::new(".")))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start shardflow")
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct RunOutput {
    pub args: Vec<OsString>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The command, its exit status and the tails of its stdout and stderr, for failure messages.
    pub fn describe(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        format!(
            "shardflow {} -> {} after {:.1?}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            args.join(" "),
            self.status,
            self.elapsed,
            tail(&self.stdout, OUTPUT_QUOTED_MAX_BYTES),
            tail(&self.stderr, OUTPUT_QUOTED_MAX_BYTES),
        )
    }

    /// Panics (keeping `dir`) unless the process exited with `code`.
    pub fn assert_code(&self, code: i32, dir: &TempDir) {
        if self.code() != Some(code) {
            dir.keep();
            panic!("expected exit code {code}, got {}\n{}", self.status, self.describe());
        }
    }
}

fn tail(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut start = s.len() - max_bytes;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs of the binary are serialized within one test process: parallel runs, each with its own executors
/// pinned to the same few cores, would only slow each other down and make timing-based behaviour (idle
/// splits, lingering batches) differ from a normal run.
static RUN_LOCK: Mutex<()> = Mutex::new(());

fn run_timeout() -> Duration {
    let secs = std::env::var("SHARDFLOW_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(RUN_TIMEOUT_DEFAULT_SECS);
    Duration::from_secs(secs)
}

/// Runs `shardflow ARGS` in `cwd` with stdin closed, waits for it with a deadline (killing it and panicking
/// when the deadline passes), and captures its output. The output is also saved in `cwd` as
/// `shardflow-SUBCOMMAND.stdout.log` / `.stderr.log` for inspection.
pub fn run_shardflow(cwd: &Path, args: &[&OsStr]) -> RunOutput {
    let _serialized = RUN_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let bin = shardflow_bin();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = started + run_timeout();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("cannot wait for {}: {e}", bin.display()),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait for killed child");
            let out = RunOutput {
                args: args.iter().map(|a| a.to_os_string()).collect(),
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
                elapsed: started.elapsed(),
            };
            panic!(
                "shardflow did not exit within {:?} (set SHARDFLOW_E2E_TIMEOUT_SECS to change); killed it\n{}",
                run_timeout(),
                out.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(RUN_POLL_INTERVAL_MS));
    };
    let out = RunOutput {
        args: args.iter().map(|a| a.to_os_string()).collect(),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    };
    let subcommand = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let _ = std::fs::write(cwd.join(format!("shardflow-{subcommand}.stdout.log")), &out.stdout);
    let _ = std::fs::write(cwd.join(format!("shardflow-{subcommand}.stderr.log")), &out.stderr);
    out
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `shardflow run -c CONFIG`, in the config's directory.
pub fn shardflow_run(config: &Path) -> RunOutput {
    let cwd = config.parent().expect("config path has a parent");
    run_shardflow(cwd, &[OsStr::new("run"), OsStr::new("-c"), config.as_os_str()])
}

/// `shardflow check -c CONFIG`, in the config's directory.
pub fn shardflow_check(config: &Path) -> RunOutput {
    let cwd = config.parent().expect("config path has a parent");
    run_shardflow(cwd, &[OsStr::new("check"), OsStr::new("-c"), config.as_os_str()])
}

// ---------------------------------------------------------------------------------------------------------
// Reading a file sink's output.

/// The visible files (names not starting with '.') under `dir`, recursively, sorted. Hidden files are
/// in-progress part files and are not output yet. A missing directory has no files.
pub fn visible_output_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_visible(dir, &mut files);
    files.sort();
    files
}

fn collect_visible(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_visible(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// The hidden files (names starting with '.') directly in `dir`: in-progress part files, not output.
pub fn hidden_output_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Every row written to a file sink directory: each non-blank line of each visible file, parsed as JSON.
/// Panics, naming the file and line, on a line that is not valid JSON.
pub fn read_output_rows(dir: &Path) -> Vec<Value> {
    if !dir.exists() {
        eprintln!("note: output directory {} does not exist; reading it as empty", dir.display());
    }
    let mut rows = Vec::new();
    for file in visible_output_files(dir) {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", file.display()));
        for (line_idx, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}:{}: output line is not JSON ({e}): {}", file.display(), line_idx + 1, tail(line, 200))
            });
            rows.push(row);
        }
    }
    rows
}

/// The epoch in a checkpointed part file's name (`part-<job>-<shard>-e<epoch>-<seq>.json`).
pub fn part_epoch(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let at = name.rfind("-e")?;
    name[at + 2..].split('-').next()?.parse().ok()
}

/// The rows of a file sink in an order that keeps each key's changes in the order they were made: by
/// checkpoint epoch, then by shard and sequence. (A key is changed by one shard per run and a run's epochs
/// follow the previous run's, so this holds across restarts on other core counts too.)
pub fn read_changelog(dir: &Path) -> Vec<Value> {
    let mut files = visible_output_files(dir);
    files.sort_by_key(|f| (part_epoch(f).unwrap_or(0), f.clone()));
    let mut rows = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let row: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}:{}: output line is not JSON ({e}): {}", file.display(), i + 1, tail(line, 200))
            });
            rows.push(row);
        }
    }
    rows
}

/// Applies a debezium-json changelog to an empty table (a multiset of canonical rows → count); fails on an
/// update or delete of a row that is not there.
pub fn apply_changelog(changes: &[Value]) -> Result<BTreeMap<String, i64>, String> {
    let mut table: BTreeMap<String, i64> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        let (before, after) = (&c["before"], &c["after"]);
        match c["op"].as_str() {
            Some("c") if before.is_null() && !after.is_null() => {}
            Some("u") if !before.is_null() && !after.is_null() => {}
            Some("d") if !before.is_null() && after.is_null() => {}
            _ => return Err(format!("change {i} is not a debezium change: {c}")),
        }
        if !before.is_null() {
            let k = canonical_json(before);
            match table.get_mut(&k) {
                Some(n) if *n > 0 => *n -= 1,
                _ => return Err(format!("change {i} takes away {k}, which is not in the table: {c}")),
            }
            if table[&k] == 0 {
                table.remove(&k);
            }
        }
        if !after.is_null() {
            *table.entry(canonical_json(after)).or_default() += 1;
        }
    }
    Ok(table)
}

// ---------------------------------------------------------------------------------------------------------
// Comparing rows.

/// JSON text with object keys sorted at every level, so equal rows have equal text whatever the key order
/// of the writer and whatever serde_json features are enabled.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The rows that identify a group: an object's string-valued fields (key, window bounds), used to pair a
/// missing row with the unexpected row that has the same group but other aggregate values.
fn group_identity(row: &Value) -> Option<String> {
    let map = row.as_object()?;
    let ident: Map<String, Value> =
        map.iter().filter(|(_, v)| v.is_string()).map(|(k, v)| (k.clone(), v.clone())).collect();
    Some(canonical_json(&Value::Object(ident)))
}

/// `None` when `actual` and `expected` are equal as multisets; otherwise a readable report: counts, rows
/// of the same group with different values, rows missing from the output, and unexpected rows.
pub fn diff_rows(actual: &[Value], expected: &[Value]) -> Option<String> {
    let mut balance: BTreeMap<String, i64> = BTreeMap::new();
    for row in expected {
        *balance.entry(canonical_json(row)).or_default() += 1;
    }
    for row in actual {
        *balance.entry(canonical_json(row)).or_default() -= 1;
    }
    let mut missing: Vec<String> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    for (row, n) in &balance {
        for _ in 0..n.unsigned_abs() {
            if *n > 0 {
                missing.push(row.clone())
            } else {
                unexpected.push(row.clone())
            }
        }
    }
    if missing.is_empty() && unexpected.is_empty() {
        return None;
    }

    // Pair rows of the same group (same strings) so a wrong aggregate reads as one change, not two rows.
    let mut unexpected_by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &unexpected {
        let ident = group_identity(&serde_json::from_str(row).unwrap()).unwrap_or_default();
        unexpected_by_group.entry(ident).or_default().push(row.clone());
    }
    let mut changed: Vec<(String, String)> = Vec::new();
    let mut only_missing: Vec<String> = Vec::new();
    for row in &missing {
        let ident = group_identity(&serde_json::from_str(row).unwrap()).unwrap_or_default();
        match unexpected_by_group.get_mut(&ident).and_then(|rows| rows.pop()) {
            Some(got) => changed.push((row.clone(), got)),
            None => only_missing.push(row.clone()),
        }
    }
    let only_unexpected: Vec<String> = unexpected_by_group.into_values().flatten().collect();

    let mut report = String::new();
    writeln!(
        report,
        "output differs from the brute-force expectation: {} rows expected, {} rows written; \
         {} rows with wrong values, {} rows missing, {} unexpected rows",
        expected.len(),
        actual.len(),
        changed.len(),
        only_missing.len(),
        only_unexpected.len()
    )
    .unwrap();
    if !changed.is_empty() {
        writeln!(report, "\n== same group, different values (expected / got) ==").unwrap();
        for (want, got) in changed.iter().take(DIFF_ROWS_SHOWN_MAX) {
            writeln!(report, "  - {}\n  + {}", shorten(want), shorten(got)).unwrap();
        }
        more(&mut report, changed.len());
    }
    if !only_missing.is_empty() {
        writeln!(report, "\n== missing from the output ==").unwrap();
        for row in only_missing.iter().take(DIFF_ROWS_SHOWN_MAX) {
            writeln!(report, "  - {}", shorten(row)).unwrap();
        }
        more(&mut report, only_missing.len());
    }
    if !only_unexpected.is_empty() {
        writeln!(report, "\n== unexpected in the output ==").unwrap();
        for row in only_unexpected.iter().take(DIFF_ROWS_SHOWN_MAX) {
            writeln!(report, "  + {}", shorten(row)).unwrap();
        }
        more(&mut report, only_unexpected.len());
    }
    Some(report)
}

/// A row as printed in a diff: at most [`DIFF_ROW_SHOWN_MAX_CHARS`] characters.
fn shorten(row: &str) -> String {
    match row.char_indices().nth(DIFF_ROW_SHOWN_MAX_CHARS) {
        None => row.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &row[..cut], row.len()),
    }
}

fn more(report: &mut String, n: usize) {
    if n > DIFF_ROWS_SHOWN_MAX {
        writeln!(report, "  ... and {} more", n - DIFF_ROWS_SHOWN_MAX).unwrap();
    }
}

/// Panics with a diff, keeping `dir` for inspection, unless `actual` equals `expected` as a multiset.
/// The expected rows are also saved in `dir` as `expected.jsonl`.
pub fn assert_rows_match(label: &str, actual: &[Value], expected: &[Value], dir: &TempDir) {
    if let Some(report) = diff_rows(actual, expected) {
        dir.keep();
        let mut sorted: Vec<String> = expected.iter().map(canonical_json).collect();
        sorted.sort();
        let _ = std::fs::write(dir.join("expected.jsonl"), sorted.join("\n") + "\n");
        panic!("{label}: {report}\n(temp dir kept: {}; expected rows in expected.jsonl)", dir.path().display());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Time: proleptic Gregorian calendar in UTC (Howard Hinnant's days_from_civil / civil_from_days).

pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_DAY: i64 = 86_400_000;

pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// Epoch milliseconds of a UTC date and time.
pub fn epoch_ms(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32, milli: u32) -> i64 {
    days_from_civil(year, month, day) * MS_PER_DAY
        + ((hour as i64 * 60 + minute as i64) * 60 + second as i64) * MS_PER_SECOND
        + milli as i64
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC: how shardflow writes TIMESTAMP(3) (Flink's JSON default).
pub fn format_ts(ms: i64) -> String {
    format_ts_with(ms, ' ', true)
}

/// `yyyy-MM-dd{sep}HH:mm:ss[.SSS]` in UTC.
pub fn format_ts_with(ms: i64, sep: char, with_millis: bool) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (h, mi, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1_000 % 60, ms_of_day % 1_000);
    let mut out = format!("{year:04}-{month:02}-{day:02}{sep}{h:02}:{mi:02}:{s:02}");
    if with_millis {
        write!(out, ".{milli:03}").unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Deterministic pseudo-random numbers (SplitMix64).

#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1_000) < per_mille
    }
}

// ---------------------------------------------------------------------------------------------------------
// Events: generation and encoding.

/// A row of the standard event table `ev(k VARCHAR, v BIGINT, ts TIMESTAMP(3))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub k: String,
    pub v: Option<i64>,
    pub ts_ms: i64,
}

/// How to generate events. Event times walk forward from `start_ms` over about `span_ms`; each event either
/// moves the maximum forward or falls back less than `lag_max_ms` behind it (out of order, never late).
#[derive(Clone, Debug)]
pub struct EventGen {
    pub seed: u64,
    pub n_events: usize,
    pub start_ms: i64,
    pub span_ms: i64,
    pub n_keys: usize,
    pub v_min: i64,
    pub v_max: i64,
    /// Chance that `v` is NULL (written as `null` or left out).
    pub null_v_per_mille: u64,
    pub lag_max_ms: i64,
    /// Chance that an event time is moved onto a multiple of `snap_ms` (or one millisecond before it), so
    /// that window boundaries are exercised.
    pub snap_per_mille: u64,
    pub snap_ms: i64,
    /// Chance that an event comes exactly `repeat_after_ms` after the previous event of its key (when that
    /// keeps the lag bound): with a session gap there, session windows that only touch must merge.
    pub repeat_per_mille: u64,
    pub repeat_after_ms: i64,
}

/// 2024-02-29 23:58:01.250 UTC: five minutes from here cross a minute, an hour, a day and a month boundary in
/// a leap year, and the start is not aligned to any window.
pub fn default_start_ms() -> i64 {
    epoch_ms(2024, 2, 29, 23, 58, 1, 250)
}

impl Default for EventGen {
    fn default() -> EventGen {
        EventGen {
            seed: 1,
            n_events: 3_000,
            start_ms: default_start_ms(),
            span_ms: 300_000,
            n_keys: 20,
            v_min: -60,
            v_max: 99,
            null_v_per_mille: 0,
            lag_max_ms: EVENT_LAG_MAX_MS,
            snap_per_mille: 30,
            snap_ms: 5_000,
            repeat_per_mille: 0,
            repeat_after_ms: 0,
        }
    }
}

/// The name of key `idx`. A few names need escaping or are not ASCII, so that JSON string handling is
/// exercised in and out.
pub fn key_name(idx: usize) -> String {
    match idx {
        5 => "ünï-κλειδί-5".to_string(),
        7 => "with space 7".to_string(),
        11 => "quote\"back\\slash-11".to_string(),
        _ => format!("key-{idx:02}"),
    }
}

/// The events in the order they are written. Deterministic for a given `EventGen`.
pub fn generate_events(g: &EventGen) -> Vec<Event> {
    assert!(g.n_events > 0 && g.n_keys > 0 && g.span_ms > 0 && g.lag_max_ms > 0);
    let mut rng = SplitMix64::new(g.seed);
    // 60% of events move the maximum forward by 0..advance_max ms: about span_ms in total.
    let advance_max_ms = (g.span_ms * 10 / (3 * g.n_events as i64)).max(1);
    let mut max_ms = g.start_ms;
    let mut events = Vec::with_capacity(g.n_events);
    let mut last_ts_of_key: BTreeMap<usize, i64> = BTreeMap::new();
    for idx in 0..g.n_events {
        // Skewed keys: low indexes are frequent, high ones sparse (more, shorter sessions).
        let key_idx = rng.below(g.n_keys as u64).min(rng.below(g.n_keys as u64)) as usize;
        let lowest_ms = (max_ms - g.lag_max_ms + 1).max(g.start_ms);
        let mut ts_ms = if idx == 0 {
            g.start_ms
        } else if rng.chance(600) {
            max_ms + rng.range_i64(0, advance_max_ms)
        } else {
            max_ms - rng.range_i64(0, g.lag_max_ms - 1)
        };
        if rng.chance(g.snap_per_mille) {
            let snapped = ts_ms.div_euclid(g.snap_ms) * g.snap_ms - rng.range_i64(0, 1);
            if snapped >= lowest_ms {
                ts_ms = snapped;
            }
        }
        if rng.chance(g.repeat_per_mille) {
            if let Some(&last_ms) = last_ts_of_key.get(&key_idx) {
                if last_ms + g.repeat_after_ms >= lowest_ms {
                    ts_ms = last_ms + g.repeat_after_ms;
                }
            }
        }
        let ts_ms = ts_ms.max(lowest_ms);
        max_ms = max_ms.max(ts_ms);
        last_ts_of_key.insert(key_idx, ts_ms);
        let v = if rng.chance(g.null_v_per_mille) { None } else { Some(rng.range_i64(g.v_min, g.v_max)) };
        events.push(Event { k: key_name(key_idx), v, ts_ms });
    }
    events
}

/// Panics unless every event is less than `lag_max_ms` behind the largest event time before it: then no
/// event is late for a watermark delay of at least `lag_max_ms`.
pub fn assert_lag_bound(events: &[Event], lag_max_ms: i64) {
    let mut max_ms = i64::MIN;
    for (idx, e) in events.iter().enumerate() {
        assert!(
            max_ms == i64::MIN || e.ts_ms > max_ms - lag_max_ms,
            "generator bug: event {idx} at {} is {} ms behind the maximum",
            e.ts_ms,
            max_ms - e.ts_ms
        );
        max_ms = max_ms.max(e.ts_ms);
    }
}

/// Which timestamp encodings the input uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsFormats {
    /// Epoch milliseconds (JSON integer) and `"yyyy-MM-dd HH:mm:ss.SSS"`.
    MillisAndSpaced,
    /// Also `"yyyy-MM-ddTHH:mm:ss.SSS"` and, for whole seconds, `"yyyy-MM-dd HH:mm:ss"` and
    /// `"yyyy-MM-ddTHH:mm:ss"` (DESIGN.md 4.3).
    All,
}

/// One JSON line (without the newline) for `e`. Field order, spacing, timestamp encoding and the encoding
/// of a NULL `v` (explicit `null` or a missing field) vary with `rng`.
pub fn encode_event(e: &Event, formats: TsFormats, rng: &mut SplitMix64) -> String {
    let ts = match (formats, rng.below(10)) {
        (_, 0..=4) => Value::from(e.ts_ms),
        (TsFormats::MillisAndSpaced, _) | (TsFormats::All, 5..=6) => Value::from(format_ts(e.ts_ms)),
        (TsFormats::All, n) => {
            let whole_second = e.ts_ms.rem_euclid(MS_PER_SECOND) == 0;
            let sep = if n % 2 == 0 { 'T' } else { ' ' };
            Value::from(format_ts_with(e.ts_ms, sep, !(whole_second && n >= 8)))
        }
    };
    let mut fields: Vec<(&str, Value)> = vec![("k", Value::from(e.k.as_str())), ("ts", ts)];
    match e.v {
        Some(v) => fields.push(("v", Value::from(v))),
        None if rng.chance(500) => fields.push(("v", Value::Null)),
        None => {}
    }
    let rotate = rng.below(fields.len() as u64) as usize;
    fields.rotate_left(rotate);
    let (colon, comma) = if rng.chance(300) { (": ", ", ") } else { (":", ",") };
    let body: Vec<String> = fields.iter().map(|(name, value)| format!("\"{name}\"{colon}{value}")).collect();
    format!("{{{}}}", body.join(comma))
}

/// Writes `events` as JSON lines, in order, to `path`.
pub fn write_events_file(path: &Path, events: &[Event], formats: TsFormats, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut text = String::new();
    for e in events {
        text.push_str(&encode_event(e, formats, &mut rng));
        text.push('\n');
    }
    write_file(path, text.as_bytes());
}

/// Writes the input of a file source under `dir` and returns the path to configure: with `n_files == 1`
/// the file `dir/events.jsonl`; otherwise the directory `dir/input` holding `events-0.jsonl`, ... : the
/// events cut into `n_files` consecutive runs, so the files are in event-time order by name. Then each file
/// alone, and each sequence of files read in name order, keeps the lag bound, whichever way the files are
/// spread over readers.
pub fn write_input(dir: &Path, events: &[Event], n_files: usize, formats: TsFormats, seed: u64) -> PathBuf {
    assert!(n_files >= 1);
    if n_files == 1 {
        let path = dir.join("events.jsonl");
        write_events_file(&path, events, formats, seed);
        return path;
    }
    let input = dir.join("input");
    let per_file = events.len().div_ceil(n_files);
    for (file_idx, chunk) in events.chunks(per_file).enumerate() {
        assert_lag_bound(chunk, EVENT_LAG_MAX_MS);
        write_events_file(&input.join(format!("events-{file_idx}.jsonl")), chunk, formats, seed + file_idx as u64);
    }
    input
}

// ---------------------------------------------------------------------------------------------------------
// Brute-force windows and aggregates, from the definitions (Flink's semantics, epoch-aligned in UTC).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// `[floor(t/size)*size, +size)`.
    Tumble { size_ms: i64 },
    /// Every `[s, s+size)` with `s` a multiple of `slide` and `s <= t < s+size`.
    Hop { slide_ms: i64, size_ms: i64 },
    /// `[start, start+k*step)` for k = 1..=size/step, `start = floor(t/size)*size`, containing t.
    Cumulate { step_ms: i64, size_ms: i64 },
    /// Per group, each event makes `[t, t+gap)`; windows that overlap or touch are merged.
    Session { gap_ms: i64 },
}

/// The windows `[start, end)` that contain an event at `ts_ms`, straight from the definitions. Not for
/// sessions, which depend on the other events.
pub fn windows_of(spec: WindowSpec, ts_ms: i64) -> Vec<(i64, i64)> {
    let floor = |t: i64, unit: i64| t.div_euclid(unit) * unit;
    let mut windows = Vec::new();
    match spec {
        WindowSpec::Tumble { size_ms } => {
            let start = floor(ts_ms, size_ms);
            windows.push((start, start + size_ms));
        }
        WindowSpec::Hop { slide_ms, size_ms } => {
            let mut start = floor(ts_ms, slide_ms);
            while start + size_ms > ts_ms {
                windows.push((start, start + size_ms));
                start -= slide_ms;
            }
        }
        WindowSpec::Cumulate { step_ms, size_ms } => {
            assert_eq!(size_ms % step_ms, 0, "CUMULATE size must be a multiple of step");
            let start = floor(ts_ms, size_ms);
            for k in 1..=size_ms / step_ms {
                let end = start + k * step_ms;
                if ts_ms < end {
                    windows.push((start, end));
                }
            }
        }
        WindowSpec::Session { .. } => {
            panic!("session windows depend on other events: use group_into_windows")
        }
    }
    for &(start, end) in &windows {
        assert!(start <= ts_ms && ts_ms < end);
    }
    windows
}

/// A group of a windowed aggregation: the key (None when the query groups only by the window) and the
/// window `[start_ms, end_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowGroup {
    pub key: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Every non-empty window group and its events.
pub fn group_into_windows<'a>(
    spec: WindowSpec,
    events: impl IntoIterator<Item = &'a Event>,
    keyed: bool,
) -> BTreeMap<WindowGroup, Vec<&'a Event>> {
    let mut groups: BTreeMap<WindowGroup, Vec<&'a Event>> = BTreeMap::new();
    let key_of = |e: &Event| if keyed { Some(e.k.clone()) } else { None };
    match spec {
        WindowSpec::Session { gap_ms } => {
            let mut by_key: BTreeMap<Option<String>, Vec<&'a Event>> = BTreeMap::new();
            for e in events {
                by_key.entry(key_of(e)).or_default().push(e);
            }
            for (key, mut evs) in by_key {
                evs.sort_by_key(|e| e.ts_ms);
                let mut current: Option<(i64, i64, Vec<&'a Event>)> = None;
                for e in evs {
                    let (start, end) = (e.ts_ms, e.ts_ms + gap_ms);
                    current = match current {
                        // Sorted by start, so overlap-or-touch is `start <= current end`.
                        Some((s, en, mut members)) if start <= en => {
                            members.push(e);
                            Some((s, en.max(end), members))
                        }
                        Some((s, en, members)) => {
                            groups.insert(WindowGroup { key: key.clone(), start_ms: s, end_ms: en }, members);
                            Some((start, end, vec![e]))
                        }
                        None => Some((start, end, vec![e])),
                    };
                }
                if let Some((s, en, members)) = current {
                    groups.insert(WindowGroup { key: key.clone(), start_ms: s, end_ms: en }, members);
                }
            }
        }
        _ => {
            for e in events {
                for (start_ms, end_ms) in windows_of(spec, e.ts_ms) {
                    groups.entry(WindowGroup { key: key_of(e), start_ms, end_ms }).or_default().push(e);
                }
            }
        }
    }
    groups
}

/// Every aggregate the tests use, over one group's events, with SQL's NULL rules: COUNT(*) counts rows,
/// the others ignore NULL `v`, and SUM/MIN/MAX/AVG of no non-NULL value is NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agg {
    /// COUNT(*)
    pub count: i64,
    /// COUNT(v)
    pub count_v: i64,
    /// COUNT(DISTINCT v)
    pub count_distinct_v: i64,
    pub sum: Option<i64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// AVG(v) of a BIGINT is a BIGINT: Java long division, truncating toward zero (Rust's i64 `/`).
    pub avg: Option<i64>,
}

impl Agg {
    pub fn of(events: &[&Event]) -> Agg {
        let values: Vec<i64> = events.iter().filter_map(|e| e.v).collect();
        let distinct: BTreeSet<i64> = values.iter().copied().collect();
        let sum = if values.is_empty() { None } else { Some(values.iter().sum::<i64>()) };
        Agg {
            count: events.len() as i64,
            count_v: values.len() as i64,
            count_distinct_v: distinct.len() as i64,
            sum,
            min: values.iter().copied().min(),
            max: values.iter().copied().max(),
            avg: sum.map(|s| s / values.len() as i64),
        }
    }
}

/// Builds the output row of one group, or None when HAVING drops it.
pub type RowFn = fn(&WindowGroup, &Agg) -> Option<Value>;

/// The rows a windowed aggregation must write: `filter` is the WHERE clause, `row` the SELECT list and
/// HAVING clause.
pub fn brute_force_rows(
    spec: WindowSpec,
    events: &[Event],
    keyed: bool,
    filter: fn(&Event) -> bool,
    row: RowFn,
) -> Vec<Value> {
    group_into_windows(spec, events.iter().filter(|e| filter(e)), keyed)
        .iter()
        .filter_map(|(group, members)| row(group, &Agg::of(members)))
        .collect()
}

/// A JSON object from `(alias, value)` pairs, with `"k"` first when the group has a key.
pub fn row_of(group: &WindowGroup, fields: Vec<(&str, Value)>) -> Value {
    let mut map = Map::new();
    if let Some(key) = &group.key {
        map.insert("k".to_string(), Value::from(key.as_str()));
    }
    for (alias, value) in fields {
        map.insert(alias.to_string(), value);
    }
    Value::Object(map)
}

/// A TIMESTAMP(3) as shardflow writes it.
pub fn ts_value(ms: i64) -> Value {
    Value::from(format_ts(ms))
}

/// A nullable BIGINT.
pub fn opt_value(v: Option<i64>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------------------
// Self-checks of the helpers (they run in every test binary that includes this module; they are cheap).

#[test]
fn common_helpers_self_check() {
    // Calendar: known instants, and a round trip over four centuries of days.
    assert_eq!(epoch_ms(1970, 1, 1, 0, 0, 0, 0), 0);
    assert_eq!(epoch_ms(2024, 3, 1, 0, 0, 0, 0), 1_709_251_200_000);
    assert_eq!(format_ts(1_709_251_199_999), "2024-02-29 23:59:59.999");
    assert_eq!(format_ts(-1), "1969-12-31 23:59:59.999");
    assert_eq!(format_ts_with(1_709_251_200_000, 'T', false), "2024-03-01T00:00:00");
    for days in (-146_097..146_097 * 2).step_by(7) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    // Windows.
    assert_eq!(windows_of(WindowSpec::Tumble { size_ms: 10 }, 10), vec![(10, 20)]);
    assert_eq!(windows_of(WindowSpec::Tumble { size_ms: 10 }, 9), vec![(0, 10)]);
    assert_eq!(windows_of(WindowSpec::Hop { slide_ms: 5, size_ms: 15 }, 10), vec![(10, 25), (5, 20), (0, 15)]);
    assert_eq!(windows_of(WindowSpec::Hop { slide_ms: 5, size_ms: 15 }, 9), vec![(5, 20), (0, 15), (-5, 10)]);
    assert_eq!(windows_of(WindowSpec::Cumulate { step_ms: 10, size_ms: 30 }, 15), vec![(0, 20), (0, 30)]);
    assert_eq!(windows_of(WindowSpec::Cumulate { step_ms: 10, size_ms: 30 }, 30), vec![(30, 40), (30, 50), (30, 60)]);
    let ev = |k: &str, ts_ms: i64| Event { k: k.to_string(), v: Some(1), ts_ms };
    let events = vec![ev("a", 0), ev("a", 13), ev("b", 5), ev("a", 10), ev("a", 30), ev("a", 20)];
    let sessions: Vec<(Option<String>, i64, i64, usize)> =
        group_into_windows(WindowSpec::Session { gap_ms: 10 }, &events, true)
            .into_iter()
            .map(|(g, m)| (g.key, g.start_ms, g.end_ms, m.len()))
            .collect();
    // a: [0,10) touches [10,20) -> [0,23) with 13; [20,30) touches it -> [0,30); [30,40) touches -> [0,40).
    assert_eq!(sessions, vec![(Some("a".into()), 0, 40, 5), (Some("b".into()), 5, 15, 1)]);
    // Aggregates, with NULLs and truncation toward zero.
    let mk = |v: Option<i64>| Event { k: "a".into(), v, ts_ms: 0 };
    let (e1, e2, e3, e4) = (mk(Some(-3)), mk(Some(-4)), mk(None), mk(Some(-3)));
    let agg = Agg::of(&[&e1, &e2, &e3, &e4]);
    assert_eq!((agg.count, agg.count_v, agg.count_distinct_v), (4, 3, 2));
    assert_eq!((agg.sum, agg.min, agg.max, agg.avg), (Some(-10), Some(-4), Some(-3), Some(-3)));
    let nulls = Agg::of(&[&e3]);
    assert_eq!((nulls.count, nulls.count_v, nulls.sum, nulls.avg, nulls.min), (1, 0, None, None, None));
    // Generator: deterministic and never late.
    let g = EventGen::default();
    let events = generate_events(&g);
    assert_eq!(events, generate_events(&g));
    assert_lag_bound(&events, EVENT_LAG_MAX_MS);
    // Encoding round trip through serde_json.
    let mut rng = SplitMix64::new(7);
    for e in events.iter().take(200) {
        let line = encode_event(e, TsFormats::All, &mut rng);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["k"], Value::from(e.k.as_str()));
    }
    // Diffs.
    let a = serde_json::json!({"k": "x", "n": 1});
    let b = serde_json::json!({"n": 1, "k": "x"});
    assert!(diff_rows(std::slice::from_ref(&a), &[b]).is_none());
    let report = diff_rows(std::slice::from_ref(&a), &[serde_json::json!({"k": "x", "n": 2})]).unwrap();
    assert!(report.contains("1 rows with wrong values"), "{report}");
    assert!(diff_rows(&[a.clone(), a.clone()], &[a]).is_some());
    // TOML strings.
    assert_eq!(toml_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
}
