//! The `shardflow` command: parse arguments, run the daemon, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardflow::daemon::DaemonError;

#[derive(Parser)]
#[command(
    name = "shardflow",
    version,
    about = "Runs Flink SQL stream processing jobs from a config file, one executor per core."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the jobs of a config file. Bounded jobs end when their input does; others run until SIGINT/SIGTERM.
    Run {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Start from this savepoint (written by `shardflow savepoint`); runtime.state_dir must be empty.
        #[arg(long, value_name = "DIR")]
        from_savepoint: Option<PathBuf>,
    },
    /// Write a self-contained savepoint of the newest complete checkpoint of a config's state_dir (works on a
    /// running job and on a stopped one).
    Savepoint {
        #[arg(short, long)]
        config: PathBuf,
        /// A new (or empty) directory.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Validate a config file and its SQL, and print the physical plan. Changes nothing.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Measure a config's jobs on this machine: latency at a fixed open-loop rate (HDR histograms, from each
    /// record's due time), the maximum sustained throughput, or the highest rate that holds a p99 target.
    /// Every job's source must be a nexmark generator; checkpoints go to a temporary directory; no mirror.
    Bench {
        #[arg(short, long)]
        config: PathBuf,
        /// Events/s the generator offers, open loop (over all shards).
        #[arg(long, value_name = "EVENTS_PER_S", conflicts_with_all = ["throughput", "find_max"])]
        rate: Option<u64>,
        /// Measure the maximum sustained events/s instead.
        #[arg(long, conflicts_with = "find_max")]
        throughput: bool,
        /// Search for the highest rate whose p99 latency stays within --p99.
        #[arg(long, requires = "p99")]
        find_max: bool,
        /// The p99 latency target of --find-max (e.g. 1ms, 500us).
        #[arg(long, value_name = "DURATION")]
        p99: Option<String>,
        /// Measured time per run (default 30s; 5s per --find-max run).
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// Time before the measured interval, excluded (default 5s; 2s per --find-max run).
        #[arg(long, value_name = "DURATION")]
        warmup: Option<String>,
        /// Event time per wall-clock second (default: the rate, so event time runs at wall-clock speed).
        #[arg(long, value_name = "EVENTS_PER_S")]
        event_rate: Option<u64>,
        /// Directory for the .hgrm files and plots.
        #[arg(long, value_name = "DIR", default_value = "bench-results")]
        out: PathBuf,
    },
    /// Inspect this machine for low-latency operation (tuning/README.md): each item ok, or what would hurt
    /// latency and its fix. Exits 1 when something serious is wrong. Changes nothing.
    Tune {
        /// Check the machine (the only mode, for now).
        #[arg(long)]
        check: bool,
        /// A config file: its shards' CPUs are the ones checked (default: every CPU this process may use).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A benchmark prints its own report: only warnings and errors from the engine, unless RUST_LOG says.
    let level = if matches!(cli.command, Command::Bench { .. }) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_target(false)
        .init();
    let result = match &cli.command {
        Command::Check { config } => {
            shardflow::daemon::prepare(config).map(|p| print!("{}", shardflow::daemon::describe(&p)))
        }
        Command::Run { config, from_savepoint } => shardflow::daemon::run(config, from_savepoint.as_deref()),
        Command::Savepoint { config, to } => shardflow::daemon::savepoint(config, to),
        Command::Tune { check, config } => return tune(*check, config.as_deref()),
        Command::Bench { config, rate, throughput, find_max, p99, duration, warmup, event_rate, out } => {
            bench_args(config, *rate, *throughput, *find_max, p99, duration, warmup, *event_rate, out)
                .and_then(|args| shardflow::bench::run(&args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Checks and completes the options of `shardflow bench`.
#[allow(clippy::too_many_arguments)]
fn bench_args(
    config: &std::path::Path,
    rate: Option<u64>,
    throughput: bool,
    find_max: bool,
    p99: &Option<String>,
    duration: &Option<String>,
    warmup: &Option<String>,
    event_rate: Option<u64>,
    out: &std::path::Path,
) -> Result<shardflow::bench::BenchArgs, DaemonError> {
    use shardflow::bench::{BenchArgs, Mode};
    use std::time::Duration;
    let parse = |flag: &str, text: &Option<String>, default_s: u64| -> Result<Duration, DaemonError> {
        match text {
            None => Ok(Duration::from_secs(default_s)),
            Some(t) => shardflow::config::duration::parse_duration_us(t)
                .map(Duration::from_micros)
                .map_err(|e| DaemonError::Config(format!("--{flag} {t}: {e}"))),
        }
    };
    let mode = match (rate, throughput, find_max) {
        (Some(0), ..) => {
            return Err(DaemonError::Config(
                "--rate 0: give the events/s to offer, or --throughput for as fast as possible".into(),
            ))
        }
        (Some(r), _, _) => Mode::Rate(r),
        (None, true, _) => Mode::Throughput,
        (None, false, true) => Mode::FindMax { p99: parse("p99", p99, 0)? },
        (None, false, false) => {
            return Err(DaemonError::Config(
                "say what to measure: --rate N (latency at N events/s), --throughput, or --find-max --p99 1ms".into(),
            ))
        }
    };
    let (d, w) = if find_max { (5, 2) } else { (30, 5) };
    let duration = parse("duration", duration, d)?;
    if duration.is_zero() {
        return Err(DaemonError::Config("--duration must be more than 0".into()));
    }
    if let Mode::FindMax { p99 } = mode {
        if p99.is_zero() {
            return Err(DaemonError::Config("--p99 must be more than 0".into()));
        }
    }
    Ok(BenchArgs {
        config: config.to_path_buf(),
        mode,
        warmup: parse("warmup", warmup, w)?,
        duration,
        event_rate,
        out: out.to_path_buf(),
    })
}

fn tune(check: bool, config: Option<&std::path::Path>) -> ExitCode {
    if !check {
        eprintln!("error: `shardflow tune` needs --check (it inspects the machine; it changes nothing)");
        return ExitCode::from(2);
    }
    let cpus = match config {
        None => shardflow::config::available_cpus(),
        Some(file) => match shardflow::daemon::prepare(file) {
            Ok(p) => p.config.runtime.cpus.clone(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        },
    };
    let findings = shardflow::tune::check(std::path::Path::new("/"), &cpus, shardflow::tune::memlock_limit());
    let (text, code) = shardflow::tune::report(&findings);
    println!("shardflow tune --check: shards on CPUs {cpus:?}");
    print!("{text}");
    ExitCode::from(code as u8)
}
