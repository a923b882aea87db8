//! The `shardflow` command: parse arguments, run the daemon, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
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
