//! End-to-end: bad input lines are skipped without losing good data (DESIGN.md 5).
//!
//! One input file mixes good events with undecodable JSON, a wrong type, bad timestamps, empty lines and a
//! line of more than 1 MiB. The job must exit 0, write exactly the brute-force result over the good lines,
//! and say on stderr which file had bad lines.

mod common;

use common::*;
use serde_json::Value;

const INPUT_FILE_NAME: &str = "mixed-good-and-bad.jsonl";

const TUMBLE_COUNT_SUM_SQL: &str = "INSERT INTO out
SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, TUMBLE_END(ts, INTERVAL '10' SECOND) AS we,
       COUNT(*) AS n, SUM(v) AS s
FROM ev
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";

/// Longer than 1 MiB: an oversized record, to be skipped like any other bad line.
const HUGE_LINE_BYTES: usize = 2 * 1024 * 1024 + 17;

/// The bad lines, each given the event time of the good event before it. One has a valid event time an
/// hour past everything else: a decoder that let a rejected line advance the watermark would make every
/// later good event late, and lose it.
fn bad_lines(ts_ms: i64, max_ts_ms: i64) -> Vec<(&'static str, String)> {
    vec![
        ("truncated JSON", r#"{"k": "key-01", "v": 3, "ts": "#.to_string()),
        ("not JSON", "this is not json at all".to_string()),
        ("wrong type: string for BIGINT", format!(r#"{{"k":"key-02","v":"seven","ts":{}}}"#, max_ts_ms + 3_600_000)),
        ("bad timestamp: hour 25", r#"{"k":"key-04","v":5,"ts":"2024-02-29 25:00:00.000"}"#.to_string()),
        ("empty line", String::new()),
        ("bad timestamp: words", r#"{"k":"key-04","v":6,"ts":"yesterday at noon"}"#.to_string()),
        ("huge line", format!(r#"{{"k":"{}","v":1,"ts":{ts_ms}}}"#, "x".repeat(HUGE_LINE_BYTES))),
        ("JSON array, not an object", "[1,2,3]".to_string()),
        ("trailing garbage", format!(r#"{{"k":"key-06","v":4,"ts":{ts_ms}}} and then some"#)),
        ("empty line", String::new()),
    ]
}

#[test]
fn malformed_lines_are_skipped_and_good_lines_all_counted() {
    let dir = TempDir::new("bad_input");
    let input_gen = EventGen { seed: 4242, n_events: 2_000, ..EventGen::default() };
    let events = generate_events(&input_gen);
    assert_lag_bound(&events, EVENT_LAG_MAX_MS);
    let max_ts_ms = events.iter().map(|e| e.ts_ms).max().unwrap();

    // Lines 1-2 good, line 3 the first bad line, then the other bad lines spread over the file.
    let mut rng = SplitMix64::new(input_gen.seed);
    let bad = bad_lines(events[1].ts_ms, max_ts_ms);
    let every = events.len() / bad.len();
    let mut text = String::new();
    let mut line_no = 0usize;
    let mut bad_line_nos: Vec<(usize, &str)> = Vec::new();
    let mut bad_iter = bad.iter();
    for (idx, e) in events.iter().enumerate() {
        if idx == 2 || (idx > 2 && idx % every == 0) {
            if let Some((what, line)) = bad_iter.next() {
                line_no += 1;
                bad_line_nos.push((line_no, what));
                text.push_str(line);
                text.push('\n');
            }
        }
        line_no += 1;
        text.push_str(&encode_event(e, TsFormats::MillisAndSpaced, &mut rng));
        if idx + 1 == events.len() {
            // The last line is good and has no newline: it must still be read.
        } else if rng.chance(20) {
            text.push_str("\r\n");
        } else {
            text.push('\n');
        }
    }
    assert!(bad_iter.next().is_none(), "every bad line is in the file");
    assert_eq!(bad_line_nos[0].0, 3, "the first bad line is line 3");
    let input = dir.join(INPUT_FILE_NAME);
    write_file(&input, text.as_bytes());

    let output = dir.join("output");
    let config =
        Config::single_job(2, FileSource::events("ev", &input), FileSink::new("out", &output), TUMBLE_COUNT_SUM_SQL)
            .write(&dir.join("shardflow.toml"));
    let expected = brute_force_rows(
        WindowSpec::Tumble { size_ms: 10_000 },
        &events,
        true,
        |_| true,
        |g, a| {
            Some(row_of(
                g,
                vec![
                    ("ws", ts_value(g.start_ms)),
                    ("we", ts_value(g.end_ms)),
                    ("n", Value::from(a.count)),
                    ("s", opt_value(a.sum)),
                ],
            ))
        },
    );

    let run = shardflow_run(&config);
    run.assert_code(0, &dir);
    let actual = read_output_rows(&output);
    assert_rows_match(&format!("bad input (bad lines: {bad_line_nos:?})"), &actual, &expected, &dir);
    if !run.stderr.contains(INPUT_FILE_NAME) {
        dir.keep();
        panic!(
            "stderr must name the input file with bad lines ({INPUT_FILE_NAME}, bad lines {bad_line_nos:?})\n{}",
            run.describe()
        );
    }
}
