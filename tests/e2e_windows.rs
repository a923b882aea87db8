//! End-to-end: windowed aggregations run by the real binary on bounded JSON files, compared exactly with a
//! brute-force computation from the definitions of Flink's windows (DESIGN.md 4.1–4.4).
//!
//! Every test goes through [`check`]: generate deterministic out-of-order events (never late), write them
//! as one file (cores = 1) or as three files in a directory (cores = 2), run `shardflow run`, and compare
//! the visible output files with the brute-force rows as a multiset. On a mismatch the diff is printed and
//! the temp dir is kept.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const SECOND_MS: i64 = 1_000;
const TUMBLE: WindowSpec = WindowSpec::Tumble { size_ms: 10 * SECOND_MS };
const HOP: WindowSpec = WindowSpec::Hop { slide_ms: 5 * SECOND_MS, size_ms: 15 * SECOND_MS };
const CUMULATE: WindowSpec = WindowSpec::Cumulate { step_ms: 10 * SECOND_MS, size_ms: 60 * SECOND_MS };
const SESSION_GAP_MS: i64 = 3 * SECOND_MS;
const SESSION: WindowSpec = WindowSpec::Session { gap_ms: SESSION_GAP_MS };

/// Events for session windows of `gap_ms`: some come exactly one gap after the previous event of their
/// key, so that windows which only touch must be merged.
fn session_gen(seed: u64, gap_ms: i64) -> EventGen {
    EventGen { seed, repeat_per_mille: 40, repeat_after_ms: gap_ms, ..EventGen::default() }
}

// ---------------------------------------------------------------------------------------------------------
// The queries. Named so that `check_accepts_every_window_query` validates each of them too.

const TUMBLE_GROUP_SQL: &str = "INSERT INTO out
SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, TUMBLE_END(ts, INTERVAL '10' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";

const TUMBLE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end";

const HOP_GROUP_SQL: &str = "INSERT INTO out
SELECT k, HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS ws,
       HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY k, HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND)";

const HOP_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(HOP(TABLE ev, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND))
GROUP BY k, window_start, window_end";

const CUMULATE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(CUMULATE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE))
GROUP BY k, window_start, window_end";

const SESSION_GROUP_SQL: &str = "INSERT INTO out
SELECT k, SESSION_START(ts, INTERVAL '3' SECOND) AS ws, SESSION_END(ts, INTERVAL '3' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY k, SESSION(ts, INTERVAL '3' SECOND)";

const KEYLESS_TUMBLE_TVF_SQL: &str = "INSERT INTO out
SELECT window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end";

const KEYLESS_HOP_GROUP_SQL: &str = "INSERT INTO out
SELECT HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS ws,
       HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND)";

const KEYLESS_SESSION_GROUP_SQL: &str = "INSERT INTO out
SELECT SESSION_START(ts, INTERVAL '1' SECOND) AS ws, SESSION_END(ts, INTERVAL '1' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY SESSION(ts, INTERVAL '1' SECOND)";

const AGGREGATES_TUMBLE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end,
       COUNT(*) AS n, COUNT(v) AS nv, COUNT(DISTINCT v) AS nd,
       MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS av, SUM(v) AS s
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '30' SECOND))
GROUP BY k, window_start, window_end";

const AGGREGATES_HOP_GROUP_SQL: &str = "INSERT INTO out
SELECT k, HOP_START(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND) AS ws,
       HOP_END(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND) AS we,
       COUNT(*) AS n, COUNT(v) AS nv, COUNT(DISTINCT v) AS nd,
       MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS av, SUM(v) AS s
FROM ev
GROUP BY k, HOP(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND)";

const AGGREGATES_SESSION_GROUP_SQL: &str = "INSERT INTO out
SELECT k, SESSION_START(ts, INTERVAL '3' SECOND) AS ws, SESSION_END(ts, INTERVAL '3' SECOND) AS we,
       COUNT(*) AS n, COUNT(v) AS nv, COUNT(DISTINCT v) AS nd,
       MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS av, SUM(v) AS s
FROM ev
GROUP BY k, SESSION(ts, INTERVAL '3' SECOND)";

const AGGREGATES_CUMULATE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end,
       COUNT(*) AS n, COUNT(v) AS nv, COUNT(DISTINCT v) AS nd,
       MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS av, SUM(v) AS s
FROM TABLE(CUMULATE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE))
GROUP BY k, window_start, window_end";

const HAVING_TUMBLE_GROUP_SQL: &str = "INSERT INTO out
SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, TUMBLE_END(ts, INTERVAL '10' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)
HAVING COUNT(*) > 2";

const HAVING_CUMULATE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(CUMULATE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE))
GROUP BY k, window_start, window_end
HAVING SUM(v) > 100 AND COUNT(*) > 2";

const WHERE_TUMBLE_TVF_SQL: &str = "INSERT INTO out
SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))
WHERE v > 0 AND k <> 'key-03'
GROUP BY k, window_start, window_end";

const WHERE_SESSION_GROUP_SQL: &str = "INSERT INTO out
SELECT k, SESSION_START(ts, INTERVAL '3' SECOND) AS ws, SESSION_END(ts, INTERVAL '3' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
WHERE v >= 0
GROUP BY k, SESSION(ts, INTERVAL '3' SECOND)";

const ALL_QUERIES: &[(&str, &str)] = &[
    ("tumble group window", TUMBLE_GROUP_SQL),
    ("tumble TVF", TUMBLE_TVF_SQL),
    ("hop group window", HOP_GROUP_SQL),
    ("hop TVF", HOP_TVF_SQL),
    ("cumulate TVF", CUMULATE_TVF_SQL),
    ("session group window", SESSION_GROUP_SQL),
    ("keyless tumble TVF", KEYLESS_TUMBLE_TVF_SQL),
    ("keyless hop group window", KEYLESS_HOP_GROUP_SQL),
    ("keyless session group window", KEYLESS_SESSION_GROUP_SQL),
    ("aggregates tumble TVF", AGGREGATES_TUMBLE_TVF_SQL),
    ("aggregates hop group window", AGGREGATES_HOP_GROUP_SQL),
    ("aggregates session group window", AGGREGATES_SESSION_GROUP_SQL),
    ("aggregates cumulate TVF", AGGREGATES_CUMULATE_TVF_SQL),
    ("having tumble group window", HAVING_TUMBLE_GROUP_SQL),
    ("having cumulate TVF", HAVING_CUMULATE_TVF_SQL),
    ("where tumble TVF", WHERE_TUMBLE_TVF_SQL),
    ("where session group window", WHERE_SESSION_GROUP_SQL),
];

// ---------------------------------------------------------------------------------------------------------
// Expected rows: the SELECT list (and HAVING) of each query shape.

/// `k, ws, we, n, s` (group window functions).
fn count_sum_group_row(g: &WindowGroup, a: &Agg) -> Option<Value> {
    Some(row_of(
        g,
        vec![("ws", ts_value(g.start_ms)), ("we", ts_value(g.end_ms)), ("n", a.count.into()), ("s", opt_value(a.sum))],
    ))
}

/// `k, window_start, window_end, n, s` (window TVFs).
fn count_sum_tvf_row(g: &WindowGroup, a: &Agg) -> Option<Value> {
    Some(row_of(
        g,
        vec![
            ("window_start", ts_value(g.start_ms)),
            ("window_end", ts_value(g.end_ms)),
            ("n", a.count.into()),
            ("s", opt_value(a.sum)),
        ],
    ))
}

fn aggregate_fields(a: &Agg) -> Vec<(&'static str, Value)> {
    vec![
        ("n", a.count.into()),
        ("nv", a.count_v.into()),
        ("nd", a.count_distinct_v.into()),
        ("lo", opt_value(a.min)),
        ("hi", opt_value(a.max)),
        ("av", opt_value(a.avg)),
        ("s", opt_value(a.sum)),
    ]
}

/// `k, ws, we, n, nv, nd, lo, hi, av, s` (group window functions).
fn aggregates_group_row(g: &WindowGroup, a: &Agg) -> Option<Value> {
    let mut fields = vec![("ws", ts_value(g.start_ms)), ("we", ts_value(g.end_ms))];
    fields.extend(aggregate_fields(a));
    Some(row_of(g, fields))
}

/// `k, window_start, window_end, n, nv, nd, lo, hi, av, s` (window TVFs).
fn aggregates_tvf_row(g: &WindowGroup, a: &Agg) -> Option<Value> {
    let mut fields = vec![("window_start", ts_value(g.start_ms)), ("window_end", ts_value(g.end_ms))];
    fields.extend(aggregate_fields(a));
    Some(row_of(g, fields))
}

fn all_events(_: &Event) -> bool {
    true
}

// ---------------------------------------------------------------------------------------------------------
// The one helper every test goes through.

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// One input file, `cores = 1`.
    OneFileOneCore,
    /// Three input files in a directory (one split each), `cores = 2`.
    ThreeFilesTwoCores,
}

struct Case {
    /// Names the temp dir and the failure message.
    label: &'static str,
    sql: &'static str,
    window: WindowSpec,
    /// Whether the query groups by `k` as well as by the window.
    keyed: bool,
    layout: Layout,
    input: EventGen,
    formats: TsFormats,
    /// The WHERE clause.
    filter: fn(&Event) -> bool,
    /// The SELECT list and HAVING clause.
    row: RowFn,
    /// The data must make at least this many groups, or the test proves little.
    groups_min: usize,
}

impl Case {
    fn new(label: &'static str, sql: &'static str, window: WindowSpec, layout: Layout, row: RowFn) -> Case {
        Case {
            label,
            sql,
            window,
            keyed: true,
            layout,
            input: EventGen::default(),
            formats: TsFormats::MillisAndSpaced,
            filter: all_events,
            row,
            groups_min: 100,
        }
    }
}

fn check(case: Case) {
    let dir = TempDir::new(case.label);
    let events = generate_events(&case.input);
    assert_lag_bound(&events, EVENT_LAG_MAX_MS);
    let (n_files, cores) = match case.layout {
        Layout::OneFileOneCore => (1, 1),
        Layout::ThreeFilesTwoCores => (3, 2),
    };
    let input = write_input(dir.path(), &events, n_files, case.formats, case.input.seed ^ 0xE2E);
    let output = dir.join("output");
    let config = Config::single_job(cores, FileSource::events("ev", &input), FileSink::new("out", &output), case.sql)
        .write(&dir.join("shardflow.toml"));

    let expected = brute_force_rows(case.window, &events, case.keyed, case.filter, case.row);
    assert!(
        expected.len() >= case.groups_min,
        "{}: the generated data makes only {} result rows (want >= {}): fix the generator settings",
        case.label,
        expected.len(),
        case.groups_min
    );

    let run = shardflow_run(&config);
    run.assert_code(0, &dir);
    let actual = read_output_rows(&output);
    assert_rows_match(&output_label(case.label, &output), &actual, &expected, &dir);
}

/// The label of a comparison, naming any hidden (in-progress, not yet committed) files still in the output
/// directory: rows in those were not committed, which explains rows missing after a run that exited 0.
fn output_label(label: &str, output: &Path) -> String {
    let hidden = hidden_output_files(output);
    if hidden.is_empty() {
        label.to_string()
    } else {
        format!("{label} (uncommitted hidden files in the output: {hidden:?})")
    }
}

// ---------------------------------------------------------------------------------------------------------
// TUMBLE

#[test]
fn tumble_group_window_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 101, ..EventGen::default() },
        ..Case::new("tumble_group", TUMBLE_GROUP_SQL, TUMBLE, Layout::OneFileOneCore, count_sum_group_row)
    });
}

#[test]
fn tumble_tvf_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 102, ..EventGen::default() },
        ..Case::new("tumble_tvf", TUMBLE_TVF_SQL, TUMBLE, Layout::ThreeFilesTwoCores, count_sum_tvf_row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// HOP (Flink's argument order: slide, then size)

#[test]
fn hop_group_window_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 201, ..EventGen::default() },
        ..Case::new("hop_group", HOP_GROUP_SQL, HOP, Layout::ThreeFilesTwoCores, count_sum_group_row)
    });
}

#[test]
fn hop_tvf_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 202, ..EventGen::default() },
        ..Case::new("hop_tvf", HOP_TVF_SQL, HOP, Layout::OneFileOneCore, count_sum_tvf_row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// CUMULATE (TVF only)

#[test]
fn cumulate_tvf_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 301, ..EventGen::default() },
        ..Case::new("cumulate_tvf", CUMULATE_TVF_SQL, CUMULATE, Layout::ThreeFilesTwoCores, count_sum_tvf_row)
    });
}

#[test]
fn cumulate_tvf_one_file_one_core_matches_brute_force() {
    check(Case {
        input: EventGen { seed: 302, ..EventGen::default() },
        ..Case::new("cumulate_tvf_one_file", CUMULATE_TVF_SQL, CUMULATE, Layout::OneFileOneCore, count_sum_tvf_row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// SESSION (group window function only; Flink has no SESSION TVF here)

#[test]
fn session_group_window_matches_brute_force() {
    check(Case {
        input: session_gen(401, SESSION_GAP_MS),
        ..Case::new("session_group", SESSION_GROUP_SQL, SESSION, Layout::OneFileOneCore, count_sum_group_row)
    });
}

#[test]
fn session_group_window_three_files_two_cores_matches_brute_force() {
    check(Case {
        input: session_gen(402, SESSION_GAP_MS),
        ..Case::new("session_group_3files", SESSION_GROUP_SQL, SESSION, Layout::ThreeFilesTwoCores, count_sum_group_row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// Windows without a key: GROUP BY only the window.

#[test]
fn keyless_tumble_tvf_matches_brute_force() {
    check(Case {
        keyed: false,
        input: EventGen { seed: 501, ..EventGen::default() },
        groups_min: 25,
        ..Case::new("keyless_tumble_tvf", KEYLESS_TUMBLE_TVF_SQL, TUMBLE, Layout::ThreeFilesTwoCores, count_sum_tvf_row)
    });
}

#[test]
fn keyless_hop_group_window_matches_brute_force() {
    check(Case {
        keyed: false,
        input: EventGen { seed: 502, ..EventGen::default() },
        groups_min: 50,
        ..Case::new("keyless_hop_group", KEYLESS_HOP_GROUP_SQL, HOP, Layout::OneFileOneCore, count_sum_group_row)
    });
}

#[test]
fn keyless_session_group_window_matches_brute_force() {
    // Sparse events (one every ~0.75 s on average) so that a 1 s gap splits the stream into many sessions.
    check(Case {
        keyed: false,
        input: EventGen { n_events: 400, ..session_gen(503, SECOND_MS) },
        groups_min: 10,
        ..Case::new(
            "keyless_session_group",
            KEYLESS_SESSION_GROUP_SQL,
            WindowSpec::Session { gap_ms: SECOND_MS },
            Layout::OneFileOneCore,
            count_sum_group_row,
        )
    });
}

// ---------------------------------------------------------------------------------------------------------
// COUNT(v), COUNT(DISTINCT v), MIN, MAX, AVG, SUM with NULL values of v (explicit null and missing field).
// Values in a small range make duplicates (for DISTINCT) and negative averages (truncation toward zero).

fn aggregates_gen(seed: u64) -> EventGen {
    EventGen { seed, v_min: -9, v_max: 9, null_v_per_mille: 120, ..session_gen(seed, SESSION_GAP_MS) }
}

#[test]
fn aggregates_tumble_tvf_match_brute_force() {
    check(Case {
        input: aggregates_gen(601),
        groups_min: 150,
        ..Case::new(
            "aggregates_tumble_tvf",
            AGGREGATES_TUMBLE_TVF_SQL,
            WindowSpec::Tumble { size_ms: 30 * SECOND_MS },
            Layout::ThreeFilesTwoCores,
            aggregates_tvf_row,
        )
    });
}

#[test]
fn aggregates_hop_group_window_match_brute_force() {
    check(Case {
        input: aggregates_gen(602),
        ..Case::new(
            "aggregates_hop_group",
            AGGREGATES_HOP_GROUP_SQL,
            WindowSpec::Hop { slide_ms: 10 * SECOND_MS, size_ms: 30 * SECOND_MS },
            Layout::OneFileOneCore,
            aggregates_group_row,
        )
    });
}

#[test]
fn aggregates_session_group_window_match_brute_force() {
    // Merging sessions must merge MIN/MAX/DISTINCT state, not just counts.
    check(Case {
        input: aggregates_gen(603),
        ..Case::new(
            "aggregates_session_group",
            AGGREGATES_SESSION_GROUP_SQL,
            SESSION,
            Layout::ThreeFilesTwoCores,
            aggregates_group_row,
        )
    });
}

#[test]
fn aggregates_cumulate_tvf_match_brute_force() {
    check(Case {
        input: aggregates_gen(604),
        ..Case::new(
            "aggregates_cumulate_tvf",
            AGGREGATES_CUMULATE_TVF_SQL,
            CUMULATE,
            Layout::OneFileOneCore,
            aggregates_tvf_row,
        )
    });
}

// ---------------------------------------------------------------------------------------------------------
// HAVING

#[test]
fn having_tumble_group_window_matches_brute_force() {
    fn row(g: &WindowGroup, a: &Agg) -> Option<Value> {
        if a.count > 2 {
            count_sum_group_row(g, a)
        } else {
            None
        }
    }
    check(Case {
        input: EventGen { seed: 701, ..EventGen::default() },
        ..Case::new("having_tumble_group", HAVING_TUMBLE_GROUP_SQL, TUMBLE, Layout::OneFileOneCore, row)
    });
}

#[test]
fn having_cumulate_tvf_matches_brute_force() {
    fn row(g: &WindowGroup, a: &Agg) -> Option<Value> {
        // SUM(v) > 100 is unknown (so false) when SUM is NULL.
        if a.sum.is_some_and(|s| s > 100) && a.count > 2 {
            count_sum_tvf_row(g, a)
        } else {
            None
        }
    }
    check(Case {
        input: EventGen { seed: 702, ..EventGen::default() },
        ..Case::new("having_cumulate_tvf", HAVING_CUMULATE_TVF_SQL, CUMULATE, Layout::ThreeFilesTwoCores, row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// WHERE before the aggregation

#[test]
fn where_filter_tumble_tvf_matches_brute_force() {
    fn keep(e: &Event) -> bool {
        e.v.is_some_and(|v| v > 0) && e.k != "key-03"
    }
    check(Case {
        input: EventGen { seed: 801, null_v_per_mille: 50, ..EventGen::default() },
        filter: keep,
        ..Case::new("where_tumble_tvf", WHERE_TUMBLE_TVF_SQL, TUMBLE, Layout::ThreeFilesTwoCores, count_sum_tvf_row)
    });
}

#[test]
fn where_filter_session_group_window_matches_brute_force() {
    // Filtered events must not extend or bridge sessions.
    fn keep(e: &Event) -> bool {
        e.v.is_some_and(|v| v >= 0)
    }
    check(Case {
        input: session_gen(802, SESSION_GAP_MS),
        filter: keep,
        ..Case::new(
            "where_session_group",
            WHERE_SESSION_GROUP_SQL,
            SESSION,
            Layout::OneFileOneCore,
            count_sum_group_row,
        )
    });
}

// ---------------------------------------------------------------------------------------------------------
// Input timestamp encodings (DESIGN.md 4.3): epoch millis, "yyyy-MM-dd HH:mm:ss.SSS", with a 'T'
// separator, and without milliseconds.

#[test]
fn timestamp_formats_with_t_separator_and_without_millis_match_brute_force() {
    check(Case {
        input: EventGen { seed: 901, snap_ms: SECOND_MS, snap_per_mille: 300, ..EventGen::default() },
        formats: TsFormats::All,
        ..Case::new("timestamp_formats", TUMBLE_GROUP_SQL, TUMBLE, Layout::ThreeFilesTwoCores, count_sum_group_row)
    });
}

// ---------------------------------------------------------------------------------------------------------
// `shardflow check`

/// A config for `sql` over a small valid input; returns the config path and the sink directory.
fn small_config(dir: &TempDir, name: &str, sql: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let events = generate_events(&EventGen { n_events: 50, ..EventGen::default() });
    let input = write_input(&dir.join(name), &events, 1, TsFormats::MillisAndSpaced, 1);
    let output = dir.join(name).join("output");
    let config = Config::single_job(1, FileSource::events("ev", &input), FileSink::new("out", &output), sql)
        .write(&dir.join(name).join("shardflow.toml"));
    (config, output)
}

#[test]
fn check_accepts_every_window_query() {
    let dir = TempDir::new("check_accepts");
    for (idx, (what, sql)) in ALL_QUERIES.iter().enumerate() {
        let (config, output) = small_config(&dir, &format!("q{idx}"), sql);
        let run = shardflow_check(&config);
        if run.code() != Some(0) {
            dir.keep();
            panic!("`shardflow check` rejected the {what} query:\n{sql}\n{}", run.describe());
        }
        let written = visible_output_files(&output);
        if !written.is_empty() {
            dir.keep();
            panic!("`shardflow check` must have no side effects, but it wrote {written:?}");
        }
    }
}

#[test]
fn unknown_column_is_a_bad_sql_error_with_exit_code_2() {
    let dir = TempDir::new("check_rejects");
    let sql = "INSERT INTO out
SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, SUM(no_such_column) AS s
FROM ev
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";
    let (config, output) = small_config(&dir, "bad", sql);
    for run in [shardflow_check(&config), shardflow_run(&config)] {
        run.assert_code(2, &dir);
        if !run.stderr.contains("no_such_column") && !run.stdout.contains("no_such_column") {
            dir.keep();
            panic!("the error must name the unknown column\n{}", run.describe());
        }
    }
    assert!(visible_output_files(&output).is_empty(), "a rejected job must write no output");
}
