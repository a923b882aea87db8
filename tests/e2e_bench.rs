//! `shardflow bench` on the real binary: every row due in the measured interval is counted exactly once,
//! latency counts from each row's due time (a stalled process shows its stall), windows are measured from
//! the bid that passed their end, the `.hgrm` and plot files are written, and the other modes report.

mod common;
use common::*;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const Q0: &str = "INSERT INTO out\nSELECT auction, bidder, price, dateTime, extra FROM bid";
const MAX_PER_SECOND: &str = "INSERT INTO out\nSELECT window_start, window_end, MAX(price) AS maxprice FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) GROUP BY window_start, window_end";

/// A nexmark config with one job and a blackhole sink.
fn nexmark_config(dir: &TempDir, cores: usize, sql: &str) -> PathBuf {
    let text = format!(
        "[runtime]\ncores = {cores}\n\n[sources.bid]\nconnector = \"nexmark\"\ntable = \"bid\"\nevents = 1000\n\
         watermark = \"dateTime - INTERVAL '1' SECOND\"\n\n[sinks.out]\nconnector = \"blackhole\"\n\n\
         [[jobs]]\nname = \"j\"\nsql = {}\n",
        toml_string(sql)
    );
    let path = dir.join("bench.toml");
    write_file(&path, text.as_bytes());
    path
}

fn bench(dir: &TempDir, cfg: &Path, args: &[&str]) -> RunOutput {
    let mut all: Vec<&OsStr> = vec![OsStr::new("bench"), OsStr::new("-c"), cfg.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let out = run_shardflow(dir.path(), &all);
    out.assert_code(0, dir);
    out
}

/// The rows of an `.hgrm` file: (value in ms, percentile), and the footer's total count.
fn read_hgrm(path: &Path) -> (Vec<(f64, f64)>, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<f64> = l.split_whitespace().map(|x| x.parse().expect("a number")).collect();
            (f[0], f[1])
        })
        .collect();
    let total = text
        .split("Total count    =")
        .nth(1)
        .and_then(|t| t.trim().trim_end_matches(']').split(']').next().map(|n| n.trim().parse().expect("a count")))
        .expect("a total count");
    (rows, total)
}

/// The value (ms) at percentile `p` of `.hgrm` rows.
fn at(rows: &[(f64, f64)], p: f64) -> f64 {
    rows.iter().find(|(_, q)| *q >= p).map_or(f64::NAN, |(v, _)| *v)
}

#[test]
fn a_fixed_rate_run_counts_every_due_row_once_and_writes_the_histogram_and_plot() {
    let dir = TempDir::new("bench-rate");
    let cfg = nexmark_config(&dir, 2, Q0);
    let out = bench(&dir, &cfg, &["--rate", "20000", "--warmup", "1s", "--duration", "2s", "--out", "res"]);
    for want in ["open loop at 20,000 events/s", "offered 20,000 events/s", "p99.99", "max", "busy: shard 0 (CPU"] {
        assert!(out.stdout.contains(want), "stdout lacks {want:?}\n{}", out.describe());
    }
    // Bids are due every 50 us: 40,000 of them in [1 s, 3 s) of the schedule, each one output row.
    let (rows, total) = read_hgrm(&dir.join("res/j-20000.hgrm"));
    assert_eq!(total, 40_000, "{}", out.describe());
    assert!(rows.len() > 20 && rows.last().is_some_and(|r| r.1 == 1.0), "{rows:?}");
    let achieved: f64 = out
        .stdout
        .split("achieved ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .map(|n| n.replace(',', "").parse().expect("a rate"))
        .expect("an achieved rate");
    assert!((achieved - 20_000.0).abs() < 1_000.0, "achieved {achieved}\n{}", out.describe());
    let svg = std::fs::read_to_string(dir.join("res/j-20000.svg")).expect("the plot");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("99.9%"), "{svg}");
}

#[test]
fn a_stalled_process_counts_each_row_from_its_due_time() {
    let dir = TempDir::new("bench-stall");
    let cfg = nexmark_config(&dir, 1, Q0);
    let stopper = {
        // Freeze the whole process for 300 ms inside the measured interval ([1 s, 3 s) of the schedule,
        // which starts shortly after the process does).
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1_900));
            let pid = std::fs::read_to_string(dir.join("pid")).ok()?;
            let pid: i32 = pid.trim().parse().ok()?;
            // SAFETY: plain kill(2) on the child's pid.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_millis(300));
            unsafe { libc::kill(pid, libc::SIGCONT) };
            Some(())
        })
    };
    // The pid goes to a file the stopper reads: run through a shell that records it, then execs.
    let script = format!(
        "echo $$ > pid && exec {} bench -c {} --rate 20000 --warmup 1s --duration 2s --out res",
        shardflow_bin().display(),
        cfg.display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .expect("run the bench");
    let stopped = stopper.join().expect("the stopper");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stopped.is_some(), "the bench was not paused");
    // Every due row is still counted once; those due during the pause count from their due time:
    // 6,000 of 40,000 rows (15%) were due in the 300 ms, the first of them waited the whole pause.
    let (rows, total) = read_hgrm(&dir.join("res/j-20000.hgrm"));
    assert_eq!(total, 40_000);
    let (p99, max) = (at(&rows, 0.99), rows.last().map_or(0.0, |r| r.0));
    assert!(max >= 250.0, "max {max} ms: the pause must show\n{rows:?}");
    assert!(p99 >= 200.0, "p99 {p99} ms: the top 1% were due in the pause's first 20 ms\n{rows:?}");
}

#[test]
fn windows_are_measured_from_the_bid_that_passed_their_end() {
    let dir = TempDir::new("bench-windows");
    let cfg = nexmark_config(&dir, 2, MAX_PER_SECOND);
    let out = bench(&dir, &cfg, &["--rate", "2000", "--warmup", "1s", "--duration", "3s", "--out", "res"]);
    assert!(out.stdout.contains("watermark -> window emit"), "{}", out.describe());
    // Event time runs at wall-clock speed and the watermark is 1 s behind: the window ending at second m
    // can fire once the bid of second m + 1 - 1 ms is read, which is due at m + 0.9995 s. Those of m = 1, 2,
    // 3 are due in [1 s, 4 s): three windows, one row each.
    let (rows, total) = read_hgrm(&dir.join("res/j-2000.hgrm"));
    assert_eq!(total, 3, "{}", out.describe());
    let max = rows.last().map_or(f64::NAN, |r| r.0);
    assert!(max < 100.0, "a one-row window took {max} ms to emit\n{}", out.describe());
}

#[test]
fn throughput_and_find_max_report_their_rates() {
    let dir = TempDir::new("bench-modes");
    let cfg = nexmark_config(&dir, 1, Q0);
    let out = bench(&dir, &cfg, &["--throughput", "--warmup", "500ms", "--duration", "1s"]);
    assert!(
        out.stdout.contains("as fast as possible") && out.stdout.contains("events/s sustained"),
        "{}",
        out.describe()
    );
    let out =
        bench(&dir, &cfg, &["--find-max", "--p99", "20ms", "--warmup", "300ms", "--duration", "700ms", "--out", "res"]);
    let result = out.stdout.lines().find(|l| l.starts_with("result: ")).unwrap_or_else(|| panic!("{}", out.describe()));
    assert!(result.contains("events/s holds p99 <= 20.00 ms"), "{}", out.describe());
    let files: Vec<String> = std::fs::read_dir(dir.join("res"))
        .expect("the output directory")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("j-findmax-") && f.ends_with(".hgrm")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("j-findmax-") && f.ends_with(".svg")), "{files:?}");
}

#[test]
fn a_source_that_is_not_a_generator_is_refused() {
    let dir = TempDir::new("bench-file");
    write_file(&dir.join("in.jsonl"), b"{\"k\":\"a\",\"v\":1,\"ts\":1000}\n");
    let c = Config::single_job(
        1,
        FileSource::events("ev", dir.join("in.jsonl")),
        FileSink::new("out", dir.join("out")),
        "INSERT INTO out SELECT k, v FROM ev",
    );
    let cfg = dir.join("job.toml");
    write_file(&cfg, c.to_toml().as_bytes());
    let out = run_shardflow(
        dir.path(),
        &[OsStr::new("bench"), OsStr::new("-c"), cfg.as_os_str(), OsStr::new("--rate"), OsStr::new("1000")],
    );
    out.assert_code(2, &dir);
    assert!(
        out.stderr.contains("job.toml: sources.ev: `shardflow bench` drives a nexmark source"),
        "{}",
        out.describe()
    );
    let out = run_shardflow(dir.path(), &[OsStr::new("bench"), OsStr::new("-c"), cfg.as_os_str()]);
    out.assert_code(2, &dir);
    assert!(out.stderr.contains("say what to measure: --rate N"), "{}", out.describe());
}
