//! The command line and config contract (DESIGN.md 4.1-4.3), run on the real binary: exit codes, error
//! messages that name the key path or SQL position, the plan `check` prints, late events, dead letters,
//! and stateless SQL end to end.

mod common;
use common::*;

use serde_json::json;
use std::ffi::OsStr;
use std::path::Path;

const GOOD_SQL: &str = "INSERT INTO out\nSELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, COUNT(*) AS n\nFROM ev GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";

/// A config with one events source and one file sink, its text passed through `edit`.
fn config(dir: &TempDir, sql: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    write_file(&dir.join("in.jsonl"), b"{\"k\":\"a\",\"v\":1,\"ts\":1000}\n");
    let c = Config::single_job(
        1,
        FileSource::events("ev", dir.join("in.jsonl")),
        FileSink::new("out", dir.join("out")),
        sql,
    );
    let path = dir.join("job.toml");
    write_file(&path, edit(c.to_toml()).as_bytes());
    path
}

/// `shardflow check` exits with `code` and its stderr holds every one of `want`.
fn check_fails(dir: &TempDir, cfg: &Path, code: i32, want: &[&str]) {
    let out = shardflow_check(cfg);
    out.assert_code(code, dir);
    for w in want {
        assert!(out.stderr.contains(w), "stderr lacks {w:?}\n{}", out.describe());
    }
}

#[test]
fn misspelled_key_exits_2_naming_its_key_path() {
    let dir = TempDir::new("misspelled");
    let cfg = config(&dir, GOOD_SQL, |t| t.replacen("path = ", "pathh = ", 1));
    check_fails(&dir, &cfg, 2, &["job.toml: sources.ev.pathh: unknown key for a file source; did you mean `path`?"]);
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("key_groups", "key_grups"));
    check_fails(&dir, &cfg, 2, &["runtime.key_grups: unknown key", "did you mean `key_groups`?"]);
    // `run` validates the same way and starts nothing.
    let out = shardflow_run(&cfg);
    out.assert_code(2, &dir);
    assert!(!dir.join("out").exists(), "a bad config must not create output");
}

#[test]
fn broken_sql_exits_2_naming_the_line_and_column() {
    let dir = TempDir::new("broken-sql");
    let cfg = config(&dir, "INSERT INTO out\nSELECT k,, COUNT(*) FROM ev", |t| t);
    check_fails(&dir, &cfg, 2, &["jobs[0].sql (job `job`): line 2, column 10: syntax error"]);
    let cfg = config(&dir, "INSERT INTO out\nSELECT k, nope FROM ev", |t| t);
    check_fails(&dir, &cfg, 2, &["line 2, column 11: unknown column `nope` in table `ev`"]);
    let cfg = config(&dir, "INSERT INTO elsewhere SELECT k FROM ev", |t| t);
    check_fails(&dir, &cfg, 2, &["line 1, column 13: unknown sink `elsewhere`; defined sinks: out"]);
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("ts - INTERVAL '5' SECOND", "ts - INTERVAL 'x' SECOND"));
    check_fails(&dir, &cfg, 2, &["sources.ev.watermark: line 1, column 15: interval value 'x' is not a number"]);
}

/// A Kinesis sink's partition key is a SQL expression over the job's output: one naming an unknown column
/// stops `run` before anything starts (no AWS call is made).
#[test]
fn a_partition_key_over_unknown_columns_exits_2_naming_it() {
    let dir = TempDir::new("bad-partition-key");
    let to_kinesis = |t: String| {
        let (head, sink) = t.split_once("[sinks.out]").expect("the sink's section");
        let rest = &sink[sink.find("\n[").unwrap_or(sink.len())..];
        format!("{head}[sinks.out]\nconnector = \"kinesis\"\nstream = \"s\"\npartition_key = \"UPPER(kk)\"\n{rest}")
    };
    let cfg = config(&dir, GOOD_SQL, to_kinesis);
    let out = shardflow_run(&cfg);
    out.assert_code(2, &dir);
    let want = "sinks.out.partition_key: `UPPER(kk)`: line 1, column 7: unknown column `kk` in table `out`; its columns are: k, ws, n";
    assert!(out.stderr.contains(want), "{}", out.describe());
}

#[test]
fn bad_toml_and_bad_values_exit_2() {
    let dir = TempDir::new("bad-values");
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("cores = 1", "cores = \"one\""));
    check_fails(&dir, &cfg, 2, &["runtime.cores: must be a non-negative integer, not string"]);
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("[runtime]", "[runtime"));
    check_fails(&dir, &cfg, 2, &["line 1, column", "not valid TOML"]);
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("connector = \"file\"\npath", "connector = \"kafka\"\npath"));
    check_fails(&dir, &cfg, 2, &["sources.ev.connector: `kafka` is not a source connector"]);
    let out = shardflow_check(&dir.join("missing.toml"));
    out.assert_code(2, &dir);
    assert!(out.stderr.contains("cannot read the config file"), "{}", out.describe());
}

#[test]
fn missing_input_is_a_runtime_error_naming_the_path() {
    let dir = TempDir::new("missing-input");
    let cfg = config(&dir, GOOD_SQL, |t| t.replace("in.jsonl", "absent.jsonl"));
    let out = shardflow_run(&cfg);
    out.assert_code(1, &dir);
    assert!(out.stderr.contains("sources.ev.path") && out.stderr.contains("absent.jsonl"), "{}", out.describe());
}

#[test]
fn check_prints_the_physical_plan() {
    let dir = TempDir::new("plan");
    let cfg = config(&dir, GOOD_SQL, |t| t);
    let out = shardflow_check(&cfg);
    out.assert_code(0, &dir);
    for want in [
        "runtime: 1 shard(s)",
        "watermark ts - 5 s",
        "calc: select k, ts AS $rowtime",
        "window aggregate: TUMBLE(size 10 s), keys [k], aggregates [COUNT(*)]",
        "<- #1 by hash(k)",
        "exchange: 128 key groups over 1 shard(s)",
        "sink out: file",
    ] {
        assert!(out.stdout.contains(want), "plan lacks {want:?}\n{}", out.describe());
    }
    assert!(!dir.join("out").exists(), "check has no side effects");
}

/// Events whose windows have all fired are dropped and counted; the rest are aggregated.
#[test]
fn late_events_are_dropped_and_counted() {
    let dir = TempDir::new("late");
    let mut lines = String::new();
    // Window [0 s, 10 s): three events. Then enough events later in time that the watermark (max - 5 s)
    // passes 10 s and reaches the window operator (more lines than one source batch), then a late event.
    for t in [1_000, 2_000, 9_999] {
        lines += &format!("{{\"k\":\"a\",\"v\":1,\"ts\":{t}}}\n");
    }
    let n_filler = 9_000;
    for i in 0..n_filler {
        lines += &format!("{{\"k\":\"a\",\"v\":1,\"ts\":{}}}\n", 20_000 + i);
    }
    lines += "{\"k\":\"a\",\"v\":1,\"ts\":5000}\n";
    write_file(&dir.join("in.jsonl"), lines.as_bytes());
    let sql = "INSERT INTO out SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    let c = Config::single_job(
        1,
        FileSource::events("ev", dir.join("in.jsonl")),
        FileSink::new("out", dir.join("out")),
        sql,
    );
    let out = shardflow_run(&c.write(&dir.join("job.toml")));
    out.assert_code(0, &dir);
    let want =
        vec![json!({"window_start": format_ts(0), "n": 3}), json!({"window_start": format_ts(20_000), "n": n_filler})];
    assert_rows_match("late", &read_output_rows(&dir.join("out")), &want, &dir);
    assert!(
        out.stderr.contains(&format!("{} records in", n_filler + 4)) && out.stderr.contains("1 late"),
        "{}",
        out.describe()
    );
}

/// With `dead_letter` set, bad records go to that sink with their file, line and error.
#[test]
fn bad_records_go_to_the_dead_letter_sink() {
    let dir = TempDir::new("dead-letter");
    write_file(&dir.join("in.jsonl"), b"{\"k\":\"a\",\"v\":1,\"ts\":1000}\n{oops\n{\"k\":\"b\",\"v\":\"two\",\"ts\":1000}\n{\"k\":\"c\",\"v\":3,\"ts\":2000}\n");
    let sql = "INSERT INTO out SELECT k, v FROM ev";
    let c = Config::single_job(
        1,
        FileSource::events("ev", dir.join("in.jsonl")),
        FileSink::new("out", dir.join("out")),
        sql,
    );
    let toml = c.to_toml() + "dead_letter = \"dl\"\n\n[sinks.dl]\nconnector = \"file\"\npath = \"dl\"\n";
    // `dead_letter` must land in [sources.ev]: move it there.
    let toml = toml.replace("dead_letter = \"dl\"\n", "").replacen(
        "format = \"json\"\n",
        "format = \"json\"\ndead_letter = \"dl\"\n",
        1,
    );
    let cfg = dir.join("job.toml");
    write_file(&cfg, toml.as_bytes());
    let out = shardflow_run(&cfg);
    out.assert_code(0, &dir);
    assert_rows_match(
        "good rows",
        &read_output_rows(&dir.join("out")),
        &[json!({"k": "a", "v": 1}), json!({"k": "c", "v": 3})],
        &dir,
    );
    let dead = read_output_rows(&dir.join("dl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let mut lines: Vec<i64> = dead.iter().map(|r| r["line"].as_i64().unwrap()).collect();
    lines.sort();
    assert_eq!(lines, vec![2, 3]);
    for r in &dead {
        assert_eq!(r["source"], "ev");
        assert!(r["file"].as_str().unwrap().ends_with("in.jsonl"));
        assert!(!r["error"].as_str().unwrap().is_empty());
    }
    assert!(dead.iter().any(|r| r["record"] == "{oops"), "{dead:?}");
}

/// Scalar SQL end to end: filter, arithmetic, CASE, CAST, LIKE, IN, BETWEEN, IS NULL, string and math
/// functions, with NULL semantics.
#[test]
fn stateless_sql_computes_exact_rows() {
    let dir = TempDir::new("stateless");
    write_file(
        &dir.join("in.jsonl"),
        b"{\"k\":\"Apple\",\"v\":7,\"ts\":\"2026-01-01 00:00:00.250\"}\n{\"k\":\"banana\",\"v\":null,\"ts\":0}\n{\"k\":\"cherry\",\"v\":-3,\"ts\":1000}\n{\"k\":\"date\",\"v\":12,\"ts\":2000}\n",
    );
    let sql = "INSERT INTO out SELECT UPPER(k) AS u, v * 2 + 1 AS a, MOD(v, 5) AS m, v / 2 AS d, CAST(v AS DOUBLE) / 2 AS dd, \
               CASE WHEN v > 5 THEN 'big' WHEN v IS NULL THEN 'none' ELSE 'small' END AS c, k LIKE '%a%' AS l, \
               v IN (7, 12) AS i, v BETWEEN -5 AND 8 AS b, CHAR_LENGTH(k) AS n, SUBSTRING(k FROM 2 FOR 3) AS s, \
               ABS(v) AS av, CAST(ts AS VARCHAR) AS t, ts + INTERVAL '1' MINUTE AS t2, COALESCE(v, 0) AS z \
               FROM ev WHERE k <> 'date' OR v IS NULL";
    let c = Config::single_job(
        1,
        FileSource::events("ev", dir.join("in.jsonl")),
        FileSink::new("out", dir.join("out")),
        sql,
    );
    let out = shardflow_run(&c.write(&dir.join("job.toml")));
    out.assert_code(0, &dir);
    let want = vec![
        json!({"u":"APPLE","a":15,"m":2,"d":3,"dd":3.5,"c":"big","l":false,"i":true,"b":true,"n":5,"s":"ppl","av":7,
               "t":"2026-01-01 00:00:00.250","t2":"2026-01-01 00:01:00.250","z":7}),
        json!({"u":"BANANA","a":null,"m":null,"d":null,"dd":null,"c":"none","l":true,"i":null,"b":null,"n":6,"s":"ana","av":null,
               "t":"1970-01-01 00:00:00.000","t2":"1970-01-01 00:01:00.000","z":0}),
        json!({"u":"CHERRY","a":-5,"m":-3,"d":-1,"dd":-1.5,"c":"small","l":false,"i":false,"b":true,"n":6,"s":"her","av":3,
               "t":"1970-01-01 00:00:01.000","t2":"1970-01-01 00:01:01.000","z":-3}),
    ];
    assert_rows_match("stateless", &read_output_rows(&dir.join("out")), &want, &dir);
}

/// `tune --check` inspects this machine: one line per item of tuning/README.md and a summary; it exits 1
/// only when something is serious. Without --check it refuses (it never changes the machine).
#[test]
fn tune_check_reports_every_item_and_a_summary() {
    let dir = TempDir::new("tune");
    let out = run_shardflow(dir.path(), &[OsStr::new("tune"), OsStr::new("--check")]);
    let serious = out.stdout.contains(" SERIOUS: ");
    out.assert_code(if serious { 1 } else { 0 }, &dir);
    for item in
        ["isolated cores", "interrupts", "transparent huge pages", "locked memory", "io_uring", "virtual machine"]
    {
        assert!(out.stdout.lines().any(|l| l.starts_with(item)), "no {item} line\n{}", out.describe());
    }
    assert!(out.stdout.contains(" would hurt latency, "), "no summary\n{}", out.describe());
    let out = run_shardflow(dir.path(), &[OsStr::new("tune")]);
    out.assert_code(2, &dir);
    assert!(out.stderr.contains("needs --check"), "{}", out.describe());
}
