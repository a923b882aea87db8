//! Stateful SQL beyond windows, end to end: the real binary runs each operator (unbounded aggregation with
//! retraction, deduplication, Top-N, window Top-N, interval, window and regular joins, UNION ALL with CTEs
//! and views) on real files, and the output is checked against results computed here, independently.
//!
//! Updating results are written as debezium-json and checked as changelogs: applied in order (per shard,
//! which is where each key's changes are made) to an empty table, every update and delete must remove a row
//! that is there, and the table at the end must equal the result computed directly.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{
    apply_changelog, canonical_json, format_ts, read_changelog, shardflow_check, shardflow_run, write_file, SplitMix64,
    TempDir,
};
use serde_json::{json, Value};

/// Event times start at 2026-01-01 00:00:00 UTC.
const T0: i64 = 1_767_225_600_000;
/// Watermarks of the generated sources trail by this; generated rows are out of order by less.
const DELAY_MS: i64 = 2_000;
const LAG_MAX_MS: i64 = 1_500;

/// A file source of a test: its rows as JSON.
struct Src {
    name: &'static str,
    schema: &'static str,
    rows: Vec<Value>,
}

/// Runs `sql` over `sources` (each in one file, with a watermark on `ts`) on `cores` shards, writing to a file
/// sink whose section ends with `sink_extra`; returns the sink's lines, in order per shard.
fn run_sql(label: &str, sources: &[Src], sql: &str, sink_extra: &str, cores: u32) -> (TempDir, Vec<Value>) {
    let (dir, rows, _) = run_sql_with(label, "", sources, sql, sink_extra, cores);
    (dir, rows)
}

/// As [`run_sql`], with `runtime_extra` in the `[runtime]` section; also returns the run's output.
fn run_sql_with(
    label: &str,
    runtime_extra: &str,
    sources: &[Src],
    sql: &str,
    sink_extra: &str,
    cores: u32,
) -> (TempDir, Vec<Value>, common::RunOutput) {
    let dir = TempDir::new(label);
    let mut toml = format!("[runtime]\ncores = {cores}\nkey_groups = 32\nstate_ttl = \"1h\"\n{runtime_extra}\n");
    for s in sources {
        let path = dir.join(format!("{}.jsonl", s.name));
        let text: String = s.rows.iter().map(|r| r.to_string() + "\n").collect();
        write_file(&path, text.as_bytes());
        toml += &format!(
            "\n[sources.{}]\nconnector = \"file\"\npath = \"{}\"\nschema = \"{}\"\nwatermark = \"ts - INTERVAL '{}' SECOND\"\n",
            s.name,
            path.display(),
            s.schema,
            DELAY_MS / 1000
        );
    }
    toml += &format!("\n[sinks.out]\nconnector = \"file\"\npath = \"{}\"\n{sink_extra}\n", dir.join("out").display());
    toml += &format!("\n[[jobs]]\nname = \"job\"\nsql = \"\"\"\n{sql}\n\"\"\"\n");
    let cfg = dir.join("job.toml");
    write_file(&cfg, toml.as_bytes());
    let out = shardflow_run(&cfg);
    out.assert_code(0, &dir);
    let rows = read_changelog(&dir.join("out"));
    (dir, rows, out)
}

const DEBEZIUM: &str = "format = \"debezium-json\"";

/// Rows as a multiset.
fn table(rows: impl IntoIterator<Item = Value>) -> BTreeMap<String, i64> {
    let mut t = BTreeMap::new();
    for r in rows {
        *t.entry(canonical_json(&r)).or_default() += 1;
    }
    t
}

/// Checks a changelog: it applies cleanly, holds only inserts if `append_only`, and ends as `want`.
fn check_changelog(label: &str, dir: &TempDir, changes: &[Value], want: BTreeMap<String, i64>, append_only: bool) {
    let got = apply_changelog(changes).unwrap_or_else(|e| {
        dir.keep();
        panic!("{label}: {e}")
    });
    if append_only {
        let other = changes.iter().find(|c| c["op"] != "c");
        assert!(other.is_none(), "{label}: an append-only result has a change: {other:?}");
    }
    if got != want {
        dir.keep();
        let missing: Vec<_> = want.iter().filter(|(k, n)| got.get(*k) != Some(n)).take(10).collect();
        let extra: Vec<_> = got.iter().filter(|(k, n)| want.get(*k) != Some(n)).take(10).collect();
        panic!(
            "{label}: the changelog's table differs ({} rows, want {}):\nmissing or miscounted: {missing:#?}\nunexpected: {extra:#?}",
            got.values().sum::<i64>(),
            want.values().sum::<i64>()
        );
    }
}

/// Events `(k, v, ts)`: `n` of them over `keys` keys, event time moving forward about `step_ms` per event and
/// out of order by less than [`LAG_MAX_MS`].
fn events(seed: u64, n: usize, keys: u64, step_ms: i64) -> Vec<(String, i64, i64)> {
    let mut rng = SplitMix64::new(seed);
    let mut max = T0;
    (0..n)
        .map(|_| {
            let ts = if rng.chance(600) {
                max += rng.range_i64(0, 2 * step_ms);
                max
            } else {
                (max - rng.range_i64(0, LAG_MAX_MS - 1)).max(T0)
            };
            (format!("k{}", rng.below(keys)), rng.range_i64(0, 1000), ts)
        })
        .collect()
}

fn as_rows(ev: &[(String, i64, i64)]) -> Vec<Value> {
    ev.iter().map(|(k, v, ts)| json!({"k": k, "v": v, "ts": ts})).collect()
}

const EV_SCHEMA: &str = "k VARCHAR, v BIGINT, ts TIMESTAMP(3)";

/// An unbounded GROUP BY over an unbounded GROUP BY: the inner one's updates are retracted from the outer
/// one's accumulators, MIN and MAX included (their extremes move as counts grow).
#[test]
fn an_unbounded_group_by_over_an_updating_input_retracts_exactly() {
    let ev = events(1, 6_000, 40, 5);
    let sql = "INSERT INTO out
        SELECT b, COUNT(*) AS n, SUM(c) AS s, MIN(c) AS mn, MAX(c) AS mx, AVG(c) AS av, COUNT(DISTINCT c) AS d
        FROM (SELECT k, COUNT(*) AS c, MOD(CHAR_LENGTH(k), 3) AS b FROM ev GROUP BY k)
        GROUP BY b";
    let (dir, out) =
        run_sql("group-by", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (k, _, _) in &ev {
        *counts.entry(k.clone()).or_default() += 1;
    }
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (k, c) in &counts {
        groups.entry(k.chars().count() as i64 % 3).or_default().push(*c);
    }
    let want = table(groups.iter().map(|(b, cs)| {
        let distinct: std::collections::BTreeSet<i64> = cs.iter().copied().collect();
        let sum: i64 = cs.iter().sum();
        json!({"b": b, "n": cs.len(), "s": sum, "mn": cs.iter().min(), "mx": cs.iter().max(),
               "av": sum / cs.len() as i64, "d": distinct.len()})
    }));
    check_changelog("group by", &dir, &out, want, false);
    assert!(out.iter().any(|c| c["op"] == "u"), "the result was never updated");
}

/// Deduplication keeping the first row per key on event time: append-only, the earliest row (first written
/// among equal times) even when it arrives after later ones; rows far behind the watermark are late.
#[test]
fn keep_first_deduplication_on_event_time_is_append_only_and_takes_the_earliest_row() {
    let mut ev = events(2, 10_000, 300, 2);
    // Late: far behind everything, after two source batches moved the watermark on.
    ev.extend((0..5).map(|i| (format!("late{i}"), i, T0 - 3_600_000)));
    let sql = "INSERT INTO out SELECT k, v, ts FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ASC) AS rn FROM ev) WHERE rn = 1";
    let (dir, out) =
        run_sql("dedup-first", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut first: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in ev.iter().filter(|e| !e.0.starts_with("late")) {
        let e = first.entry(k).or_insert((*v, *ts));
        if *ts < e.1 {
            *e = (*v, *ts);
        }
    }
    let want = table(first.iter().map(|(k, (v, ts))| json!({"k": k, "v": v, "ts": format_ts(*ts)})));
    check_changelog("keep first", &dir, &out, want, true);
}

/// Deduplication keeping the last row per key on event time: updating, ends at each key's latest row.
#[test]
fn keep_last_deduplication_on_event_time_updates_to_the_latest_row() {
    let ev = events(3, 8_000, 100, 2);
    let sql = "INSERT INTO out SELECT k, v, ts FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM ev) WHERE rn = 1";
    let (dir, out) =
        run_sql("dedup-last", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut last: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in &ev {
        let e = last.entry(k).or_insert((*v, *ts));
        if *ts >= e.1 {
            *e = (*v, *ts);
        }
    }
    let want = table(last.iter().map(|(k, (v, ts))| json!({"k": k, "v": v, "ts": format_ts(*ts)})));
    check_changelog("keep last", &dir, &out, want, false);
}

/// Processing-time deduplication (ORDER BY PROCTIME()): the first row to arrive per key, append-only.
#[test]
fn keep_first_deduplication_on_processing_time_takes_the_first_arrival() {
    let ev = events(4, 5_000, 50, 2);
    let sql = "INSERT INTO out SELECT k, v FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY PROCTIME()) AS rn FROM ev) WHERE rn = 1";
    let (dir, out) =
        run_sql("dedup-proc", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for (k, v, _) in &ev {
        first.entry(k).or_insert(*v);
    }
    let want = table(first.iter().map(|(k, v)| json!({"k": k, "v": v})));
    check_changelog("proctime keep first", &dir, &out, want, true);
}

/// Top-3 per key by value with the row number: updates move rows between ranks; the final table holds
/// each key's three largest values (ties in arrival order) with their ranks.
#[test]
fn top_n_with_row_numbers_ends_at_each_keys_first_rows() {
    let ev = events(5, 6_000, 30, 2);
    let sql = "INSERT INTO out SELECT k, v, rn FROM (
        SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM ev) WHERE rn <= 3";
    let (dir, out) = run_sql("top-n", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut by_key: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (k, v, _) in &ev {
        by_key.entry(k).or_default().push(*v);
    }
    let mut rows = Vec::new();
    for (k, mut vs) in by_key {
        vs.sort_by(|a, b| b.cmp(a));
        for (i, v) in vs.iter().take(3).enumerate() {
            rows.push(json!({"k": k, "v": v, "rn": i + 1}));
        }
    }
    check_changelog("top-n", &dir, &out, table(rows), false);
}

/// The two largest values per 10 s window and key, emitted once per window (append-only).
#[test]
fn window_top_n_emits_each_windows_first_rows_once() {
    let ev = events(6, 6_000, 8, 10);
    let sql = "INSERT INTO out SELECT k, v, window_start, rn FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC) AS rn
        FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))) WHERE rn <= 2";
    let (dir, out) =
        run_sql("window-top-n", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, DEBEZIUM, 2);
    let mut groups: BTreeMap<(i64, &str), Vec<i64>> = BTreeMap::new();
    for (k, v, ts) in &ev {
        groups.entry((ts - ts.rem_euclid(10_000), k)).or_default().push(*v);
    }
    let mut rows = Vec::new();
    for ((start, k), mut vs) in groups {
        vs.sort_by(|a, b| b.cmp(a));
        for (i, v) in vs.iter().take(2).enumerate() {
            rows.push(json!({"k": k, "v": v, "window_start": format_ts(start), "rn": i + 1}));
        }
    }
    check_changelog("window top-n", &dir, &out, table(rows), true);
}

/// (key, value, event time) rows of one input.
type Events = Vec<(String, i64, i64)>;

fn two_streams(seed: u64) -> (Events, Events) {
    (events(seed, 3_000, 60, 10), events(seed + 100, 2_000, 60, 15))
}

fn pair_rows(ev: &[(String, i64, i64)]) -> Vec<Value> {
    ev.iter().map(|(k, v, ts)| json!({"k": k, "w": v, "ts": ts})).collect()
}

const PAY_SCHEMA: &str = "k VARCHAR, w BIGINT, ts TIMESTAMP(3)";

/// Interval joins, inner and left outer: every pair of rows of a key within the bounds; left rows without a
/// match come with NULLs once the watermark passes them. Append-only.
#[test]
fn interval_joins_match_every_pair_within_the_bounds() {
    let (a, b) = two_streams(7);
    for (kind, outer) in [("JOIN", false), ("LEFT JOIN", true)] {
        let sql = format!(
            "INSERT INTO out SELECT a.k, a.v, b.w, a.ts FROM ev a {kind} pay b
             ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '2' SECOND"
        );
        let sources = [
            Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&a) },
            Src { name: "pay", schema: PAY_SCHEMA, rows: pair_rows(&b) },
        ];
        let (dir, out) = run_sql("interval-join", &sources, &sql, DEBEZIUM, 2);
        let mut rows = Vec::new();
        for (k, v, ta) in &a {
            let matches: Vec<&i64> = b
                .iter()
                .filter(|(k2, _, tb)| k2 == k && (-1_000..=2_000).contains(&(ta - tb)))
                .map(|(_, w, _)| w)
                .collect();
            for w in &matches {
                rows.push(json!({"k": k, "v": v, "w": w, "ts": format_ts(*ta)}));
            }
            if outer && matches.is_empty() {
                rows.push(json!({"k": k, "v": v, "w": null, "ts": format_ts(*ta)}));
            }
        }
        check_changelog(kind, &dir, &out, table(rows), true);
        let plan = shardflow_check(&dir.join("job.toml"));
        assert!(plan.stdout.contains("interval join"), "not planned as an interval join:\n{}", plan.stdout);
    }
}

/// Window joins of two tumbling window TVFs on their bounds and key, inner and full outer: rows of a key in
/// the same window, joined when the window fires (append-only).
#[test]
fn window_joins_join_the_rows_of_each_window() {
    let (a, b) = two_streams(8);
    for (kind, full) in [("JOIN", false), ("FULL JOIN", true)] {
        let sql = format!(
            "INSERT INTO out SELECT L.k AS lk, R.k AS rk, L.v, R.w, COALESCE(L.window_start, R.window_start) AS ws
             FROM (SELECT * FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '5' SECOND))) L
             {kind} (SELECT * FROM TABLE(TUMBLE(TABLE pay, DESCRIPTOR(ts), INTERVAL '5' SECOND))) R
             ON L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end"
        );
        let sources = [
            Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&a) },
            Src { name: "pay", schema: PAY_SCHEMA, rows: pair_rows(&b) },
        ];
        let (dir, out) = run_sql("window-join", &sources, &sql, DEBEZIUM, 2);
        let win = |ts: i64| ts - ts.rem_euclid(5_000);
        let mut rows = Vec::new();
        for (k, v, ta) in &a {
            let m: Vec<&i64> =
                b.iter().filter(|(k2, _, tb)| k2 == k && win(*tb) == win(*ta)).map(|(_, w, _)| w).collect();
            for w in &m {
                rows.push(json!({"lk": k, "rk": k, "v": v, "w": w, "ws": format_ts(win(*ta))}));
            }
            if full && m.is_empty() {
                rows.push(json!({"lk": k, "rk": null, "v": v, "w": null, "ws": format_ts(win(*ta))}));
            }
        }
        if full {
            for (k, w, tb) in &b {
                if !a.iter().any(|(k2, _, ta)| k2 == k && win(*ta) == win(*tb)) {
                    rows.push(json!({"lk": null, "rk": k, "v": null, "w": w, "ws": format_ts(win(*tb))}));
                }
            }
        }
        check_changelog(kind, &dir, &out, table(rows), true);
        let plan = shardflow_check(&dir.join("job.toml"));
        assert!(plan.stdout.contains("window join"), "not planned as a window join:\n{}", plan.stdout);
    }
}

/// Regular joins, inner, left, right and full, on append-only inputs: the outer joins retract a row's
/// NULL-padded version when its first match arrives; each changelog ends at the SQL result.
#[test]
fn regular_joins_end_at_the_sql_result_of_every_kind() {
    let a: Vec<(String, i64, i64)> = events(9, 800, 120, 10);
    let b: Vec<(String, i64, i64)> = events(10, 500, 160, 10);
    for kind in ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"] {
        let sql = format!(
            "INSERT INTO out SELECT a.k AS ak, b.k AS bk, a.v, b.w FROM ev a {kind} pay b ON a.k = b.k AND a.v < b.w"
        );
        let sources = [
            Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&a) },
            Src { name: "pay", schema: PAY_SCHEMA, rows: pair_rows(&b) },
        ];
        let (dir, out) = run_sql("regular-join", &sources, &sql, DEBEZIUM, 2);
        let matches = |(k, v): (&String, i64), (k2, w): (&String, i64)| k == k2 && v < w;
        let mut rows = Vec::new();
        for (k, v, _) in &a {
            let m: Vec<_> = b.iter().filter(|(k2, w, _)| matches((k, *v), (k2, *w))).collect();
            for (k2, w, _) in &m {
                rows.push(json!({"ak": k, "bk": k2, "v": v, "w": w}));
            }
            if m.is_empty() && (kind == "LEFT JOIN" || kind == "FULL JOIN") {
                rows.push(json!({"ak": k, "bk": null, "v": v, "w": null}));
            }
        }
        if kind == "RIGHT JOIN" || kind == "FULL JOIN" {
            for (k2, w, _) in &b {
                if !a.iter().any(|(k, v, _)| matches((k, *v), (k2, *w))) {
                    rows.push(json!({"ak": null, "bk": k2, "v": null, "w": w}));
                }
            }
        }
        check_changelog(kind, &dir, &out, table(rows), kind == "JOIN");
    }
}

/// UNION ALL of a view and a CTE over a subquery: every row of both, once.
#[test]
fn union_all_of_a_view_and_a_cte_has_every_row_of_both() {
    let (a, b) = two_streams(11);
    let dir = TempDir::new("union");
    let mut toml = "[runtime]\ncores = 2\n".to_string();
    for (name, schema, rows) in [("ev", EV_SCHEMA, as_rows(&a)), ("pay", PAY_SCHEMA, pair_rows(&b))] {
        let path = dir.join(format!("{name}.jsonl"));
        write_file(&path, rows.iter().map(|r| r.to_string() + "\n").collect::<String>().as_bytes());
        toml += &format!(
            "\n[sources.{name}]\nconnector = \"file\"\npath = \"{}\"\nschema = \"{schema}\"\n",
            path.display()
        );
    }
    toml += &format!("\n[sinks.out]\nconnector = \"file\"\npath = \"{}\"\n", dir.join("out").display());
    toml += "\n[[views]]\nname = \"big_ev\"\nsql = \"SELECT k, v AS x FROM ev WHERE v >= 500\"\n";
    toml += "\n[[jobs]]\nname = \"job\"\nsql = \"\"\"\nINSERT INTO out\nWITH small_pay AS (SELECT k, x FROM (SELECT k, w AS x FROM pay) WHERE x < 100)\nSELECT k, x FROM big_ev UNION ALL SELECT k, x FROM small_pay\n\"\"\"\n";
    let cfg = dir.join("job.toml");
    write_file(&cfg, toml.as_bytes());
    shardflow_run(&cfg).assert_code(0, &dir);
    let got = table(read_changelog(&dir.join("out")));
    let want = table(
        a.iter()
            .filter(|(_, v, _)| *v >= 500)
            .map(|(k, v, _)| json!({"k": k, "x": v}))
            .chain(b.iter().filter(|(_, w, _)| *w < 100).map(|(k, w, _)| json!({"k": k, "x": w}))),
    );
    assert_eq!(got, want);
}

/// `check` refuses what cannot run, with the SQL position and what to do; it warns of a regular join without
/// a state TTL, as Flink does.
#[test]
fn bad_queries_are_refused_with_their_position_and_what_to_do() {
    let dir = TempDir::new("sql-errors");
    let ev = dir.join("ev.jsonl");
    write_file(&ev, b"{\"k\":\"a\",\"v\":1,\"ts\":1}\n");
    let config = |sql: &str, format: &str, ttl: bool| -> PathBuf {
        let path = dir.join("job.toml");
        let ttl = if ttl { "state_ttl = \"10m\"\n" } else { "" };
        let text = format!(
            "[runtime]\ncores = 1\n{ttl}\n[sources.ev]\nconnector = \"file\"\npath = \"{0}\"\nschema = \"{EV_SCHEMA}\"\nwatermark = \"ts - INTERVAL '1' SECOND\"\n\n[sources.pay]\nconnector = \"file\"\npath = \"{0}\"\nschema = \"{PAY_SCHEMA}\"\n\n[sinks.out]\nconnector = \"file\"\npath = \"out\"\n{format}\n\n[[jobs]]\nname = \"job\"\nsql = \"\"\"\n{sql}\n\"\"\"\n",
            ev.display()
        );
        write_file(&path, text.as_bytes());
        path
    };
    let refused = |sql: &str, format: &str, want: &[&str]| {
        let out = shardflow_check(&config(sql, format, true));
        out.assert_code(2, &dir);
        for w in want {
            assert!(out.stderr.contains(w), "lacks {w:?}:\n{}", out.describe());
        }
    };
    // A join key of the wrong type.
    refused(
        "INSERT INTO out SELECT a.k FROM ev a JOIN pay b ON a.k = b.w",
        DEBEZIUM,
        &["line 1, column 52", "cannot compare VARCHAR with BIGINT; CAST one side"],
    );
    // ORDER BY on a non-time column of a streaming result.
    refused(
        "INSERT INTO out SELECT k, v FROM ev\nORDER BY v",
        "",
        &["line 2, column 1", "Sort on a non-time-attribute field is not supported"],
    );
    // An updating result into an append-only sink.
    refused(
        "INSERT INTO out SELECT k, COUNT(*) AS n FROM ev GROUP BY k",
        "",
        &[
            "sinks.out.format",
            "the GROUP BY without a window (line 1, column 17)",
            "format = \"debezium-json\"",
            "primary_key",
        ],
    );
    // ROW_NUMBER() without a filter on it.
    refused(
        "INSERT INTO out SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM ev",
        DEBEZIUM,
        &["line 1, column 27", "Top-N or deduplication only", "rn <= 10"],
    );
    // A regular join without a state TTL runs, with a warning naming where it is.
    let out = shardflow_check(&config("INSERT INTO out SELECT a.k FROM ev a\nJOIN pay b ON a.k = b.k", "", false));
    out.assert_code(0, &dir);
    assert!(
        out.stdout.contains("warning: job `job`: the regular join (line 2, column 6) keeps every row")
            && out.stdout.contains("state_ttl"),
        "no warning:\n{}",
        out.describe()
    );
    // The same with a TTL: no warning; an upsert sink takes the updating result.
    let out = shardflow_check(&config(
        "INSERT INTO out SELECT k, COUNT(*) AS n FROM ev GROUP BY k",
        "primary_key = \"k\"",
        true,
    ));
    out.assert_code(0, &dir);
    assert!(!out.stdout.contains("warning"), "{}", out.describe());
}

/// An upsert sink (json with a primary key): the last line per key is its final row, deletes say so.
#[test]
fn an_upsert_sink_writes_the_latest_row_per_key() {
    let ev = events(12, 3_000, 25, 2);
    let sql = "INSERT INTO out SELECT k, COUNT(*) AS n, MAX(v) AS mx FROM ev GROUP BY k";
    let (dir, out) =
        run_sql("upsert", &[Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }], sql, "primary_key = \"k\"", 2);
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for row in &out {
        assert!(row.get("__deleted").is_none(), "nothing is deleted here: {row}");
        latest.insert(row["k"].as_str().unwrap().to_string(), row.clone());
    }
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (k, v, _) in &ev {
        let e = want.entry(k.clone()).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(*v);
    }
    let want: BTreeMap<String, Value> =
        want.into_iter().map(|(k, (n, mx))| (k.clone(), json!({"k": k, "n": n, "mx": mx}))).collect();
    if latest != want {
        dir.keep();
        panic!("upsert rows differ");
    }
}

/// Two-phase aggregation (`agg_phase_strategy = "two-phase"`): keyed window and unbounded aggregations folded
/// per batch on the reading shard and merged on the key's owner give exactly the computed results, and late
/// rows are counted as rows (not as the partials that carry them).
#[test]
fn two_phase_aggregations_equal_the_computed_results_and_count_late_rows() {
    let mut ev = events(11, 8_000, 30, 5);
    let last = ev.iter().map(|e| e.2).max().unwrap();
    // Rows far behind the watermark: late for every window they are in.
    let late: Vec<(String, i64, i64)> = (0..50).map(|i| (format!("k{}", i % 7), i, T0 + i)).collect();
    let at = ev.len() - 10;
    ev.splice(at..at, late.iter().cloned());
    let window_sql = "INSERT INTO out
        SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS mn, MAX(v) AS mx, AVG(v) AS av, window_start, window_end
        FROM TABLE(HOP(TABLE ev, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
        GROUP BY k, window_start, window_end";
    let two_phase = "agg_phase_strategy = \"two-phase\"";
    let src = || vec![Src { name: "ev", schema: EV_SCHEMA, rows: as_rows(&ev) }];
    let (dir, out, run) = run_sql_with("two-phase-window", two_phase, &src(), window_sql, DEBEZIUM, 2);
    assert!(last - T0 > 15_000, "the events span several windows");
    let mut windows: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for (k, v, ts) in &ev[..at].iter().chain(&ev[at + late.len()..]).cloned().collect::<Vec<_>>() {
        let mut end = ts - ts.rem_euclid(2_000) + 2_000;
        while end <= ts + 6_000 {
            windows.entry((k.clone(), end)).or_default().push(*v);
            end += 2_000;
        }
    }
    let want = table(windows.iter().map(|((k, end), vs)| {
        let sum: i64 = vs.iter().sum();
        json!({"k": k, "n": vs.len(), "s": sum, "mn": vs.iter().min(), "mx": vs.iter().max(),
               "av": sum / vs.len() as i64, "window_start": format_ts(end - 6_000), "window_end": format_ts(*end)})
    }));
    check_changelog("two-phase window aggregation", &dir, &out, want, true);
    assert!(run.stderr.contains(&format!("{} late", late.len())), "{}", run.describe());
    let plan = shardflow_check(&dir.join("job.toml"));
    assert!(plan.stdout.contains("local aggregate"), "{}", plan.describe());

    let group_sql =
        "INSERT INTO out SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS mn, MAX(v) AS mx FROM ev GROUP BY k";
    let (dir, out, _) = run_sql_with("two-phase-group", two_phase, &src(), group_sql, DEBEZIUM, 2);
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (k, v, _) in &ev {
        groups.entry(k.clone()).or_default().push(*v);
    }
    let want = table(groups.iter().map(|(k, vs)| {
        json!({"k": k, "n": vs.len(), "s": vs.iter().sum::<i64>(), "mn": vs.iter().min(), "mx": vs.iter().max()})
    }));
    check_changelog("two-phase group aggregation", &dir, &out, want, false);
}
