//! The daemon: config file → validated plans → running shards, with a report loop on the control thread.
//! Builds connectors (lists input files, creates output directories), starts the shards, reports counters
//! while they run, and turns the outcome into an exit code.

mod mirror;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::AwsThread;
use crate::checkpoint::manifest::{Binding, JobBinding, RunState, FORMAT_VERSION};
use crate::checkpoint::recovery::{recover, recover_savepoint, RecoveryError};
use crate::checkpoint::{CheckpointControl, Coordinator, ShardAck, ShardRestore};
use crate::config::{Config, SinkConnector, SourceConnector};
use crate::constants::{
    DAEMON_TICK_MAX_MS, KINESIS_CHANNEL_BATCHES, KINESIS_SINK_CHANNEL_BATCHES, METRICS_REPORT_INTERVAL_MS,
    SHARD_SLOW_TURN_MS, SHARD_WATCHDOG_MS,
};
use crate::kinesis::sink::SinkTask;
use crate::kinesis::{KinesisService, SourceTask};
use crate::metrics::latency::{LatencyProbe, WindowClock};
use crate::metrics::{report_line, JobMetrics, JobSnapshot};
use crate::queue::Exchange;
use crate::shard::routing::RoutingTable;
use crate::shard::{JobGraph, JobSpec, KinesisSinkSpec, ScanSpec, SplitSpec};
use crate::sink::file::settle_parts;
use crate::source::SplitPosition;
use crate::sql::physical::{Distribution, NodeOp};
use crate::sql::plan::TableInfo;
use crate::sql::{parse_watermark, JobPlan, WatermarkSpec};
use mirror::MirrorRun;

/// Why the daemon stopped; each maps to an exit code.
#[derive(Debug)]
pub enum DaemonError {
    /// Bad config or SQL (exit 2): the message names the file, key or SQL position.
    Config(String),
    /// A failure while running (exit 1).
    Runtime(String),
}

impl DaemonError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) => 2,
            DaemonError::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Config(m) | DaemonError::Runtime(m) => f.write_str(m),
        }
    }
}

/// A validated config with every job planned.
pub struct Prepared {
    pub config: Config,
    pub jobs: Vec<PreparedJob>,
    /// What planning noticed that runs but that a user should know.
    pub warnings: Vec<String>,
    /// Each source's watermark, as declared.
    pub watermarks: BTreeMap<String, Option<WatermarkSpec>>,
}

pub struct PreparedJob {
    pub name: String,
    pub plan: JobPlan,
}

/// Loads the config and plans every job; no side effects.
pub fn prepare(file: &Path) -> Result<Prepared, DaemonError> {
    let config = Config::load(file).map_err(|e| DaemonError::Config(e.to_string()))?;
    let shown = file.display();
    let mut errors = Vec::new();
    let mut tables = BTreeMap::new();
    for (name, source) in &config.sources {
        let watermark = match &source.watermark {
            None => None,
            Some(text) => match parse_watermark(text, &source.schema) {
                Ok(w) => Some(w),
                Err(e) => {
                    errors.push(format!("{shown}: sources.{name}.watermark: {e}"));
                    None
                }
            },
        };
        tables.insert(name.clone(), TableInfo { schema: source.schema.clone(), watermark });
    }
    if !errors.is_empty() {
        // Jobs on a source with a broken watermark would only repeat the error.
        return Err(DaemonError::Config(errors.join("\n")));
    }
    let sinks: Vec<String> = config.sinks.keys().cloned().collect();
    let views: BTreeMap<String, String> = config.views.iter().map(|v| (v.name.clone(), v.sql.clone())).collect();
    let mut jobs = Vec::new();
    let mut warnings = Vec::new();
    for (i, job) in config.jobs.iter().enumerate() {
        let ttl = job.state_ttl_ms.or(config.runtime.state_ttl_ms).map(|t| t as i64);
        let catalog = crate::sql::Catalog {
            tables: &tables,
            views: &views,
            sinks: &sinks,
            state_ttl_ms: ttl,
            agg_phases: config.runtime.agg_phases,
        };
        // Where an error of the job's SQL (or of a view it reads) is in the config file.
        let config_line = |e: &crate::sql::SqlError| {
            let start = config
                .views
                .iter()
                .find(|v| e.message.starts_with(&format!("in view `{}`", v.name)))
                .map_or(job.sql_line, |v| v.sql_line);
            if e.line > 0 && start > 0 {
                format!(" (line {} of the config file)", start as u64 + e.line - 1)
            } else {
                String::new()
            }
        };
        match crate::sql::plan_job_with(&job.sql, &catalog) {
            Ok(planned) => {
                for w in planned.warnings {
                    warnings.push(format!("job `{}`: {w}", job.name));
                }
                if let Err(e) = check_sink(&config.sinks[&planned.plan.sink], &planned.plan, &job.name) {
                    errors.push(format!("{shown}: {e}"));
                }
                jobs.push(PreparedJob { name: job.name.clone(), plan: planned.plan });
            }
            Err(e) => {
                let at = config_line(&e);
                errors.push(format!("{shown}: jobs[{i}].sql (job `{}`): {e}{at}", job.name));
            }
        }
    }
    if !errors.is_empty() {
        return Err(DaemonError::Config(errors.join("\n")));
    }
    let watermarks = tables.into_iter().map(|(name, t)| (name, t.watermark)).collect();
    Ok(Prepared { config, jobs, watermarks, warnings })
}

/// Checks that a sink can take what a job writes: an updating result needs a changelog format or an upsert
/// key; an upsert key must be columns of the result.
fn check_sink(sink: &crate::config::SinkConfig, plan: &JobPlan, job: &str) -> Result<(), String> {
    let cols: Vec<&str> = plan.out_schema.fields.iter().map(|f| f.name.as_str()).collect();
    if let Some(key) = &sink.primary_key {
        for k in key {
            if !cols.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                return Err(format!(
                    "sinks.{}.primary_key: `{k}` is not a column of what job `{job}` writes ({})",
                    sink.name,
                    cols.join(", ")
                ));
            }
        }
    }
    let Some(why) = &plan.updating else { return Ok(()) };
    let appends_only = sink.format == crate::config::SinkFormat::Json && sink.primary_key.is_none();
    if appends_only && !matches!(sink.connector, SinkConnector::Blackhole) {
        return Err(format!(
            "sinks.{}.format: \"json\" writes inserts only, but the result of job `{job}` is updating: {why} \
             makes it so. Use format = \"debezium-json\" (a changelog of before/after rows), or keep \"json\" and set \
             primary_key = \"<columns>\" (an upsert sink)",
            sink.name
        ));
    }
    Ok(())
}

/// The physical plan, as `shardflow check` prints it.
pub fn describe(p: &Prepared) -> String {
    let c = &p.config;
    let mut s = String::new();
    let _ = writeln!(s, "config {}: valid", c.file.display());
    for w in &p.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let _ = writeln!(
        s,
        "runtime: {} shard(s) on CPUs {:?}, {} key groups",
        c.runtime.cores, c.runtime.cpus, c.runtime.key_groups
    );
    for job in &p.jobs {
        let plan = &job.plan;
        let sink = &c.sinks[&plan.sink];
        let _ = writeln!(s, "job {}:", job.name);
        for (i, node) in plan.nodes.iter().enumerate() {
            let inputs: Vec<String> = node
                .inputs
                .iter()
                .map(|inp| match &inp.dist {
                    Distribution::Forward => format!("#{}", inp.node),
                    Distribution::Hash(cols) if cols.is_empty() => format!("#{} to one key group", inp.node),
                    Distribution::Hash(cols) => {
                        let names: Vec<&str> =
                            cols.iter().map(|c| plan.nodes[inp.node].schema.fields[*c].name.as_str()).collect();
                        format!("#{} by hash({})", inp.node, names.join(", "))
                    }
                })
                .collect();
            let from = if inputs.is_empty() { String::new() } else { format!(" <- {}", inputs.join(", ")) };
            let what = match &node.op {
                NodeOp::Scan { source: name } => {
                    let source = &c.sources[name];
                    let origin = match &source.connector {
                        SourceConnector::Nexmark(n) => format!(
                            "nexmark {}, {} rows, one split per shard",
                            n.table.name(),
                            n.events.map_or("unbounded".to_string(), |e| e.to_string())
                        ),
                        SourceConnector::File(f) => {
                            format!("file {} (JSON lines), one split per file", f.path.display())
                        }
                        SourceConnector::Kinesis(k) => format!(
                            "kinesis stream {} (a JSON object per record), start {:?}, stream shards spread over shards",
                            k.at.stream, k.start
                        ),
                    };
                    let wm = p.watermarks.get(name).copied().flatten().map_or("none".to_string(), |w| {
                        format!(
                            "{} - {}",
                            source.schema.fields[w.column].name,
                            crate::config::duration::format_ms(w.delay_ms)
                        )
                    });
                    format!("source {name}: {origin}; watermark {wm}")
                }
                NodeOp::Calc(calc) => format!("calc: {calc}"),
                NodeOp::WindowAgg(w) => {
                    let keys: Vec<&str> = w.input.fields[..w.n_keys].iter().map(|f| f.name.as_str()).collect();
                    let aggs: Vec<&str> = w.aggs.iter().map(|a| a.text.as_str()).collect();
                    format!(
                        "{}window aggregate: {}, keys [{}], aggregates [{}]; then {}",
                        if w.rows_col.is_some() { "global " } else { "" },
                        w.spec,
                        keys.join(", "),
                        aggs.join(", "),
                        w.post
                    )
                }
                NodeOp::LocalAgg(l) => {
                    let keys: Vec<&str> = l.input.fields[..l.n_keys].iter().map(|f| f.name.as_str()).collect();
                    let aggs: Vec<&str> = l.aggs.iter().map(|a| a.text.as_str()).collect();
                    format!(
                        "local aggregate (partials per batch{}): keys [{}], aggregates [{}]",
                        l.window.map_or(String::new(), |(spec, _)| format!(" and slice of {spec}")),
                        keys.join(", "),
                        aggs.join(", ")
                    )
                }
                NodeOp::WindowAssign { spec, .. } => format!("window assignment: {spec}"),
                NodeOp::GroupAgg(g) => {
                    let keys: Vec<&str> = g.input.fields[..g.n_keys].iter().map(|f| f.name.as_str()).collect();
                    let aggs: Vec<&str> = g.aggs.iter().map(|a| a.text.as_str()).collect();
                    format!(
                        "{}group aggregate (updating{}): keys [{}], aggregates [{}]; then {}",
                        if g.aggs.iter().any(|a| a.partial) { "global " } else { "" },
                        if g.retracting { ", retracting its input" } else { "" },
                        keys.join(", "),
                        aggs.join(", "),
                        g.post
                    )
                }
                NodeOp::Rank(r) => {
                    let cols = &plan.nodes[node.inputs[0].node].schema;
                    let name = |c: &usize| cols.fields[*c].name.clone();
                    let order = sort_order(cols, &r.order);
                    let what = match r.kind {
                        crate::sql::ops::RankKind::TopN => format!("top {}", r.limit),
                        crate::sql::ops::RankKind::KeepFirst(_) => "deduplication, keep first".to_string(),
                        crate::sql::ops::RankKind::KeepLast(_) => "deduplication, keep last".to_string(),
                    };
                    format!(
                        "rank: {what}, partition [{}], order [{}]",
                        r.partition.iter().map(name).collect::<Vec<_>>().join(", "),
                        order
                    )
                }
                NodeOp::WindowRank(r) => {
                    let cols = &plan.nodes[node.inputs[0].node].schema;
                    let partition: Vec<&str> = r.partition.iter().map(|c| cols.fields[*c].name.as_str()).collect();
                    format!(
                        "window top {} per window, partition [{}], order [{}]",
                        r.limit,
                        partition.join(", "),
                        sort_order(cols, &r.order)
                    )
                }
                NodeOp::Join(j) => format!(
                    "{}{}",
                    join_sides(&j.sides, "join"),
                    j.ttl_ms.map_or(", no state TTL".to_string(), |t| format!(
                        ", state TTL {}",
                        crate::config::duration::format_ms(t)
                    ))
                ),
                NodeOp::IntervalJoin(j) => format!(
                    "{}, left time - right time in [{} ms, {} ms]",
                    join_sides(&j.sides, "interval join"),
                    j.lower_ms,
                    j.upper_ms
                ),
                NodeOp::WindowJoin(j) => format!("{} on {}", join_sides(&j.sides, "window join"), j.spec),
                NodeOp::Union => "union all".to_string(),
                NodeOp::Sink => {
                    let target = match &sink.connector {
                        SinkConnector::File { path } => format!("file {} (JSON lines)", path.display()),
                        other => other.name().to_string(),
                    };
                    let cols: Vec<String> =
                        plan.out_schema.fields.iter().map(|f| format!("{} {}", f.name, f.ty)).collect();
                    format!("sink {}: {target}; columns ({})", plan.sink, cols.join(", "))
                }
            };
            let _ = writeln!(s, "  #{i} {what}{from}");
        }
        let hashed = plan.nodes.iter().flat_map(|n| &n.inputs).any(|i| i.dist != Distribution::Forward);
        if hashed {
            let _ = writeln!(s, "  exchange: {} key groups over {} shard(s)", c.runtime.key_groups, c.runtime.cores);
        }
    }
    s
}

/// `a ASC, b DESC`.
fn sort_order(schema: &crate::record::types::Schema, order: &[(usize, bool)]) -> String {
    let keys: Vec<String> = order
        .iter()
        .map(|(c, asc)| format!("{} {}", schema.fields[*c].name, if *asc { "ASC" } else { "DESC" }))
        .collect();
    keys.join(", ")
}

/// `INNER join, keys [a] = [b], where <residual>`, with columns by name.
fn join_sides(sides: &crate::sql::ops::JoinSides, what: &str) -> String {
    let names = |schema: &crate::record::types::Schema, cols: &[usize]| -> String {
        cols.iter().map(|c| schema.fields[*c].name.as_str()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "{} {what}, keys [{}] = [{}]{}",
        sides.kind,
        names(&sides.left, &sides.left_keys),
        names(&sides.right, &sides.right_keys),
        sides.residual.as_ref().map_or(String::new(), |r| format!(", where {r}"))
    )
}

static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGINT/SIGTERM (STOP may also be set by `shardflow bench` at the end of a timed run).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks the running jobs to stop, as SIGTERM does (a final checkpoint, if checkpoints are on).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Lets the next run go on (after [`request_stop`] ended the previous one), unless a signal asked to stop.
pub fn clear_stop() {
    if !interrupted() {
        STOP.store(false, Ordering::SeqCst);
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a run is observed and reported (`shardflow bench` sets these; `run` uses the defaults).
#[derive(Default)]
pub struct RunOptions {
    /// Measure latency (see `metrics::latency`) of rows due in this interval of the source's schedule
    /// (nanoseconds after its start), for every job whose nexmark source is rate-limited.
    pub measure: Option<std::ops::Range<u64>>,
    /// Receives the running job graph once the shards start.
    pub on_start: Option<crossbeam_channel::Sender<Arc<JobGraph>>>,
    /// No periodic report lines and no summary lines (the caller reports).
    pub quiet: bool,
}

/// SIGINT and SIGTERM are blocked in every thread (shards inherit the mask) and taken by one thread with
/// `sigwait`: a signal delivered into a shard would interrupt its io_uring wait, and glommio can lose track
/// of in-flight I/O then. The first signal asks for a clean stop; a second one exits at once.
fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_signal_thread);
}

fn install_signal_thread() {
    // SAFETY: plain libc calls on a local, zero-initialized signal set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; sigwait writes the signal number into `sig`.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second signal: the user wants out now.
            std::process::exit(130);
        }
        STOP.store(true, Ordering::SeqCst);
        tracing::info!("signal {sig} received: stopping (a second one exits at once)");
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the signal thread ({e}); SIGINT and SIGTERM stop the process abruptly");
        // SAFETY: undoes the block above on this thread's set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// The source columns a job reads through scan node `scan`: those its consumers use when they are all
/// calcs, else all of them.
fn used_columns(plan: &JobPlan, scan: usize, n_columns: usize) -> Vec<bool> {
    let mut used = vec![false; n_columns];
    for (c, _) in plan.consumers(scan) {
        match &plan.nodes[c].op {
            NodeOp::Calc(calc) => {
                for (u, x) in used.iter_mut().zip(calc.used_columns(n_columns)) {
                    *u |= x;
                }
            }
            _ => return vec![true; n_columns],
        }
    }
    used
}

/// The job graph, and the Kinesis sources the control thread must read for it (started once the restored
/// positions are known).
fn build_graph(
    p: &Prepared,
    measure: Option<&std::ops::Range<u64>>,
) -> Result<(JobGraph, Vec<SourceTask>, Vec<SinkTask>), DaemonError> {
    let c = &p.config;
    let n = c.runtime.cores;
    let mut tables_by_seed = BTreeMap::new();
    let mut jobs = Vec::new();
    let mut kinesis = Vec::new();
    let mut kinesis_sinks = Vec::new();
    let mut n_channels: usize = 0;
    for job in &p.jobs {
        let mut scans = Vec::new();
        let mut probe = None;
        for (scan_node, source_name) in job.plan.scans() {
            let source = c.sources[source_name].clone();
            let watermark = p.watermarks.get(source_name).copied().flatten();
            let mut splits = vec![Vec::new(); n];
            let mut nexmark_tables = None;
            let mut pace = None;
            match &source.connector {
                SourceConnector::Nexmark(cfg) => {
                    if cfg.rate > 0 {
                        let pc = Arc::new(crate::source::nexmark::Pace::new(cfg.rate));
                        if let (Some(m), None) = (measure, &probe) {
                            let windows = job.plan.window().map(|_| WindowClock {
                                event_rate: cfg.event_rate,
                                delay_ms: watermark.map_or(0, |w| w.delay_ms),
                                splits: n as u64,
                            });
                            probe = Some(Arc::new(LatencyProbe::new(pc.clone(), m.start, m.end, windows, n)));
                        }
                        pace = Some(pc);
                    }
                    for (i, s) in splits.iter_mut().enumerate() {
                        s.push(SplitSpec::Nexmark { split: i as u64, n_splits: n as u64 });
                    }
                    let t = tables_by_seed
                        .entry(cfg.seed)
                        .or_insert_with(|| crate::source::nexmark::NexmarkSplit::tables(cfg.seed))
                        .clone();
                    nexmark_tables = Some(t);
                }
                SourceConnector::File(f) => {
                    let files = crate::source::file::list_files(&f.path).map_err(|e| {
                        DaemonError::Runtime(format!("{}: sources.{}.path: {e}", c.file.display(), source.name))
                    })?;
                    for (i, file) in files.into_iter().enumerate() {
                        splits[i % n].push(SplitSpec::File(file));
                    }
                }
                SourceConnector::Kinesis(k) => {
                    let mut to_shards = Vec::new();
                    for s in splits.iter_mut() {
                        let (tx, rx) = crossbeam_channel::bounded(KINESIS_CHANNEL_BATCHES);
                        s.push(SplitSpec::Kinesis { stream: k.at.stream.clone(), rx });
                        to_shards.push(tx);
                    }
                    kinesis.push(SourceTask { name: source.name.clone(), cfg: k.clone(), to_shards, restored: None });
                }
            }
            let dead_letter = source.dead_letter.as_ref().map(|d| c.sinks[d].clone());
            if let Some(SinkConnector::Kinesis { .. }) = dead_letter.as_ref().map(|d| &d.connector) {
                return Err(DaemonError::Config(format!(
                    "{}: sources.{}.dead_letter: a Kinesis sink cannot take dead letters yet; use a \"file\" sink",
                    c.file.display(),
                    source.name
                )));
            }
            let used = used_columns(&job.plan, scan_node, source.schema.len());
            scans.push(ScanSpec { source, watermark, dead_letter, splits, nexmark_tables, pace, used });
        }
        let sink = c.sinks[&job.plan.sink].clone();
        let mut kinesis_sink = None;
        if let SinkConnector::Kinesis { at, partition_key } = &sink.connector {
            let partition_key = crate::sql::plan::bind_scalar(partition_key, &sink.name, &job.plan.out_schema)
                .map_err(|e| {
                    DaemonError::Config(format!(
                        "{}: sinks.{}.partition_key: `{partition_key}`: {e} (write a column or a SQL expression \
                         of the rows job {} writes)",
                        c.file.display(),
                        sink.name,
                        job.name
                    ))
                })?;
            let (mut txs, mut rxs) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let (tx, rx) = tokio::sync::mpsc::channel(KINESIS_SINK_CHANNEL_BATCHES);
                txs.push(tx);
                rxs.push(rx);
            }
            kinesis_sinks.push(SinkTask { name: sink.name.clone(), at: at.clone(), from_shards: rxs });
            kinesis_sink = Some(KinesisSinkSpec { partition_key, to_writers: txs });
        }
        let dead_letters = scans.iter().filter_map(|s| s.dead_letter.as_ref());
        for s in std::iter::once(&sink).chain(dead_letters) {
            if let SinkConnector::File { path } = &s.connector {
                std::fs::create_dir_all(path).map_err(|e| {
                    DaemonError::Runtime(format!(
                        "{}: sinks.{}.path: cannot create {}: {e}",
                        c.file.display(),
                        s.name,
                        path.display()
                    ))
                })?;
            }
        }
        let mut channels = Vec::new();
        for (node, n_) in job.plan.nodes.iter().enumerate() {
            for (port, input) in n_.inputs.iter().enumerate() {
                if input.dist != Distribution::Forward {
                    let id = crate::queue::ChannelId::try_from(n_channels).map_err(|_| {
                        DaemonError::Config(format!("{}: the jobs need more than 65536 exchanges", c.file.display()))
                    })?;
                    channels.push(((node, port), id));
                    n_channels += 1;
                }
            }
        }
        let sources = job.plan.sources().join("+");
        let metrics = Arc::new(JobMetrics::new(&job.name, &sources, &job.plan.sink, n));
        jobs.push(JobSpec {
            name: job.name.clone(),
            plan: job.plan.clone(),
            scans,
            sink,
            metrics,
            kinesis_sink,
            channels,
            probe,
        });
    }
    let graph = JobGraph {
        cpus: c.runtime.cpus.clone(),
        routing: Arc::new(RoutingTable::new(c.runtime.key_groups, n)),
        exchange: Exchange::new(n, n_channels),
        n_channels,
        jobs,
        abort: AtomicBool::new(false),
        stop: &STOP,
        checkpoints: None,
        threads: Default::default(),
        idle_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        slow_turns: (0..n).map(|_| Default::default()).collect(),
    };
    Ok((graph, kinesis, kinesis_sinks))
}

/// Gives each Kinesis source the positions of its stream shards in the restored checkpoint, if any.
fn restore_kinesis_positions(graph: &JobGraph, kinesis: &mut [SourceTask]) {
    let Some(ctl) = &graph.checkpoints else { return };
    let restore = ctl.restore.lock().expect("restore lock");
    let Some(r) = restore.iter().flatten().next() else { return };
    for (job, spec) in graph.jobs.iter().enumerate() {
        let Some(states) = r.jobs.get(job) else { continue };
        for (scan, scan_spec) in spec.scans.iter().enumerate() {
            let Some(task) = kinesis.iter_mut().find(|t| t.name == scan_spec.source.name) else { continue };
            let positions = task.restored.get_or_insert_with(Vec::new);
            for state in states.sources.iter().filter(|s| s.scan as usize == scan) {
                if let SplitPosition::Kinesis { shards, .. } = &state.position {
                    positions.extend(shards.iter().cloned());
                }
            }
        }
    }
}

/// What a checkpoint of this config is bound to (see `checkpoint::manifest::Binding`).
pub fn binding(p: &Prepared) -> Binding {
    let c = &p.config;
    let fields = |s: &crate::record::Schema| {
        s.fields.iter().map(|f| format!("{} {}", f.name, f.ty)).collect::<Vec<_>>().join(", ")
    };
    let jobs = p
        .jobs
        .iter()
        .map(|job| {
            let sources: Vec<String> = job
                .plan
                .sources()
                .iter()
                .map(|name| {
                    let source = &c.sources[name];
                    format!("{} {} ({})", source.name, source.connector.name(), fields(&source.schema))
                })
                .collect();
            JobBinding { name: job.name.clone(), source: sources.join("; "), state: job.plan.state_layout() }
        })
        .collect();
    Binding { format_version: FORMAT_VERSION, key_groups: c.runtime.key_groups, jobs }
}

/// The file sink directories of the jobs and the writer names their parts carry.
fn file_sink_writers(graph: &JobGraph) -> Vec<(std::path::PathBuf, Vec<String>)> {
    let mut out: Vec<(std::path::PathBuf, Vec<String>)> = Vec::new();
    for job in &graph.jobs {
        let dead_letters = job.scans.iter().filter_map(|s| s.dead_letter.as_ref());
        let sinks = [(&job.sink, job.name.clone())]
            .into_iter()
            .chain(dead_letters.map(|d| (d, format!("deadletter-{}", job.name))));
        for (sink, writer) in sinks {
            if let SinkConnector::File { path } = &sink.connector {
                if out.iter().any(|(p, w)| p == path && w.contains(&writer)) {
                    continue;
                }
                match out.iter_mut().find(|(p, _)| p == path) {
                    Some((_, w)) => w.push(writer),
                    None => out.push((path.clone(), vec![writer])),
                }
            }
        }
    }
    out
}

/// Checkpointing as set up for a run: the control block, the coordinator's acknowledgements, and the epoch
/// restored (0 for a fresh start).
type CheckpointSetup = (Arc<CheckpointControl>, crossbeam_channel::Receiver<ShardAck>, u64);

/// Sets up checkpointing: restores the newest checkpoint, if any, settles the sinks' parts to it. Returns
/// the control block and the epoch restored (0 for a fresh start), or `None` when the restored checkpoint
/// ended the run (nothing left to do).
fn prepare_checkpoints(
    p: &Prepared,
    graph: &JobGraph,
    cfg: &crate::config::CheckpointConfig,
    from_savepoint: Option<&Path>,
    mirror: Option<Arc<crate::mirror::MirrorProgress>>,
) -> Result<Option<CheckpointSetup>, DaemonError> {
    let n = graph.n_shards();
    let b = binding(p);
    let as_daemon_error = |e| match e {
        RecoveryError::Binding(m) => DaemonError::Config(m),
        RecoveryError::Fatal(m) => DaemonError::Runtime(m),
    };
    let recovered = match from_savepoint {
        None => recover(&cfg.state_dir, &b, &graph.routing, n).map_err(as_daemon_error)?,
        Some(dir) => {
            let existing = crate::checkpoint::manifest::list_manifests(
                &cfg.state_dir.join(crate::checkpoint::manifest::MANIFEST_DIR),
            )
            .map_err(DaemonError::Runtime)?;
            if !existing.is_empty() {
                return Err(DaemonError::Config(format!(
                    "runtime.state_dir {} already holds checkpoints of a run; to start from savepoint {}, point runtime.state_dir at an empty directory (or drop --from-savepoint to resume that run)",
                    cfg.state_dir.display(),
                    dir.display()
                )));
            }
            Some(recover_savepoint(dir, &b, &graph.routing, n).map_err(as_daemon_error)?)
        }
    };
    let epoch = recovered.as_ref().map_or(0, |r| r.manifest.epoch);
    for (dir, writers) in file_sink_writers(graph) {
        let (committed, deleted) = settle_parts(&dir, &writers, epoch).map_err(DaemonError::Runtime)?;
        if committed + deleted > 0 {
            tracing::info!(
                "sink {}: committed {committed} part file(s) of checkpoint {epoch} or earlier, deleted {deleted} of later epochs",
                dir.display()
            );
        }
    }
    let mut restore: Vec<Option<ShardRestore>> = (0..n).map(|_| None).collect();
    if let Some(r) = recovered {
        if r.manifest.run == RunState::Finished {
            return Ok(None);
        }
        // The shards replay the state in parallel as they start; the last one to finish reports the restore.
        let how = if r.manifest.run == RunState::Stopped { "was stopped" } else { "did not stop cleanly" };
        tracing::info!("restoring checkpoint {} of a run that {how}", r.manifest.epoch);
        restore = r.shards.into_iter().map(Some).collect();
    } else {
        tracing::info!("no checkpoint in {}: starting from the beginning", cfg.state_dir.display());
    }
    let (acks_tx, acks_rx) = crossbeam_channel::bounded(n);
    let ctl = Arc::new(CheckpointControl {
        interval: Duration::from_millis(cfg.interval_ms),
        state_dir: cfg.state_dir.clone(),
        requested: AtomicU64::new(epoch),
        completed: AtomicU64::new(epoch),
        final_epoch: AtomicU64::new(0),
        finished_shards: AtomicUsize::new(0),
        acks: acks_tx,
        restore: std::sync::Mutex::new(restore),
        mirror,
        held: AtomicBool::new(false),
    });
    Ok(Some((ctl, acks_rx, epoch)))
}

/// Writes a savepoint of the config's newest complete checkpoint into `to`.
pub fn savepoint(file: &Path, to: &Path) -> Result<(), DaemonError> {
    let prepared = prepare(file)?;
    let cfg = prepared.config.checkpoint.as_ref().ok_or_else(|| {
        DaemonError::Config(format!(
            "{}: savepoints need [checkpoint] (and runtime.state_dir) in the config",
            file.display()
        ))
    })?;
    let info = crate::checkpoint::savepoint::take(&cfg.state_dir, to).map_err(DaemonError::Runtime)?;
    eprintln!(
        "savepoint of checkpoint {} written to {}: {} state entries, {} bytes",
        info.epoch,
        to.display(),
        info.entries,
        info.bytes
    );
    Ok(())
}

/// Runs every job to completion (bounded sources) or until SIGINT/SIGTERM; with `from_savepoint`, starting
/// from that savepoint.
pub fn run(file: &Path, from_savepoint: Option<&Path>) -> Result<(), DaemonError> {
    let prepared = prepare(file)?;
    run_prepared(&prepared, from_savepoint, RunOptions::default())
}

/// Runs a prepared config (see [`run`]), observed as `options` say.
pub fn run_prepared(
    prepared: &Prepared,
    from_savepoint: Option<&Path>,
    options: RunOptions,
) -> Result<(), DaemonError> {
    let file = prepared.config.file.as_path();
    if !options.quiet {
        for w in &prepared.warnings {
            tracing::warn!("{w}");
        }
    }
    let (mut graph, mut kinesis, kinesis_sinks) = build_graph(prepared, options.measure.as_ref())?;
    let mut coordinator = None;
    if from_savepoint.is_some() && prepared.config.checkpoint.is_none() {
        return Err(DaemonError::Config(format!(
            "{}: --from-savepoint needs [checkpoint] in the config (the restored state is checkpointed from there on)",
            file.display()
        )));
    }
    // Before any thread starts: every thread inherits the blocked signals, the signal thread takes them.
    install_signal_handlers();
    // The control thread, for AWS calls: started before recovery when a mirror may fill the state directory.
    let needs_aws = prepared.config.mirror.is_some() || !kinesis.is_empty() || !kinesis_sinks.is_empty();
    let aws_thread = if needs_aws { Some(AwsThread::start().map_err(DaemonError::Runtime)?) } else { None };
    let mut mirror = match (&prepared.config.mirror, &prepared.config.checkpoint, &aws_thread) {
        (Some(m), Some(c), Some(aws)) => {
            if from_savepoint.is_some() {
                return Err(DaemonError::Config(format!(
                    "{}: --from-savepoint with [mirror]: start from the savepoint without the mirror, or resume from the mirror without --from-savepoint",
                    file.display()
                )));
            }
            Some(MirrorRun::start(aws, m, &c.state_dir)?)
        }
        _ => None,
    };
    if let Some(cfg) = &prepared.config.checkpoint {
        match prepare_checkpoints(prepared, &graph, cfg, from_savepoint, mirror.as_ref().map(|m| m.progress.clone()))? {
            None => {
                eprintln!(
                    "the newest checkpoint in {} marks the end of the input: every job already ran to completion. Empty runtime.state_dir to run them again.",
                    cfg.state_dir.display()
                );
                return Ok(());
            }
            Some((ctl, acks, epoch)) => {
                let b = binding(prepared);
                coordinator = Some(
                    Coordinator::new(ctl.clone(), acks, graph.n_shards(), b, epoch).map_err(DaemonError::Runtime)?,
                );
                graph.checkpoints = Some(ctl);
            }
        }
    }
    restore_kinesis_positions(&graph, &mut kinesis);
    // The control thread is dropped at the end of the run, after the shards closed their sinks: it stops
    // the readers, writers and the mirror's uploader.
    let aws = aws_thread
        .as_ref()
        .filter(|_| !kinesis.is_empty() || !kinesis_sinks.is_empty())
        .map(|t| KinesisService::start(t, kinesis, kinesis_sinks));
    let graph = Arc::new(graph);
    tracing::info!(
        "starting {} job(s) on {} shard(s), CPUs {:?}",
        graph.jobs.len(),
        graph.n_shards(),
        prepared.config.runtime.cpus
    );
    let started = Instant::now();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let runner = {
        let graph = graph.clone();
        std::thread::Builder::new()
            .name("shard-runner".into())
            .spawn(move || {
                let _ = done_tx.send(crate::shard::run(graph));
            })
            .map_err(|e| DaemonError::Runtime(format!("cannot start the shards: {e}")))?
    };
    if let Some(tx) = &options.on_start {
        let _ = tx.send(graph.clone());
    }
    let interval = Duration::from_millis(METRICS_REPORT_INTERVAL_MS);
    let mut prev: Vec<JobSnapshot> = vec![JobSnapshot::default(); graph.jobs.len()];
    let mut last = Instant::now();
    let ring = || graph.ring_all();
    let never = crossbeam_channel::never();
    let mut checkpoint_error = None;
    let mut rung_for_mirrored = 0;
    let mut last_kick = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    let mut slow_reported = vec![0u64; graph.n_shards()];
    let sink_dirs: Vec<std::path::PathBuf> = file_sink_writers(&graph).into_iter().map(|(d, _)| d).collect();
    let result = loop {
        let now = Instant::now();
        let report_in = (last + interval).saturating_duration_since(now);
        let wait = coordinator.as_ref().map_or(report_in, |c| c.due_in(now).min(report_in));
        let wait = wait.min(Duration::from_millis(DAEMON_TICK_MAX_MS));
        let acks = coordinator.as_ref().map_or(&never, |c| c.acks());
        crossbeam_channel::select! {
            recv(done_rx) -> r => break r.unwrap_or_else(|_| Err("the shards stopped without a result".into())),
            recv(acks) -> ack => {
                if let (Some(c), Ok(ack)) = (coordinator.as_mut(), ack) {
                    if let Err(e) = c.on_ack(ack, &ring) {
                        checkpoint_error = Some(e);
                        graph.abort();
                    }
                }
            }
            default(wait) => {}
        }
        // A stop is seen by each shard at its next turn: ring them, and should one not end (a shard that
        // missed its wake-ups, see the watchdog below), interrupt their sleep.
        if STOP.load(Ordering::SeqCst) {
            let since = *stop_seen.get_or_insert_with(|| {
                ring();
                Instant::now()
            });
            if since.elapsed() > Duration::from_millis(SHARD_WATCHDOG_MS)
                && last_kick.elapsed() > Duration::from_millis(SHARD_WATCHDOG_MS)
            {
                tracing::warn!(
                    "the run has not ended {:.1} s after the stop: interrupting every shard's sleep",
                    since.elapsed().as_secs_f64()
                );
                graph.kick_all();
                ring();
                last_kick = Instant::now();
            }
        }
        if let Some(c) = coordinator.as_mut() {
            c.tick(Instant::now(), STOP.load(Ordering::SeqCst), &ring);
            // Watchdog: a checkpoint long in flight may mean a shard missed its wake-ups; interrupt them all.
            if let Some((epoch, age)) = c.in_flight_for(Instant::now()) {
                if age > Duration::from_millis(SHARD_WATCHDOG_MS)
                    && last_kick.elapsed() > Duration::from_millis(SHARD_WATCHDOG_MS)
                {
                    tracing::warn!(
                        "checkpoint {epoch} has been in flight for {:.1} s: interrupting every shard's sleep (a shard may have missed its wake-up)",
                        age.as_secs_f64()
                    );
                    graph.kick_all();
                    ring();
                    last_kick = Instant::now();
                }
            }
        }
        if let (Some(m), Some(ctl)) = (mirror.as_mut(), &graph.checkpoints) {
            m.completed(ctl.completed.load(Ordering::SeqCst));
            if checkpoint_error.is_none() {
                if let Some(e) = m.failure() {
                    checkpoint_error = Some(e);
                    graph.abort();
                }
            }
            if let Some(c) = &coordinator {
                m.check_backlog(ctl, c, &sink_dirs, &ring);
            }
            // A newly mirrored epoch lets the shards commit its output.
            let mirrored = m.progress.mirrored.load(Ordering::SeqCst);
            if mirrored > rung_for_mirrored {
                rung_for_mirrored = mirrored;
                ring();
            }
        }
        let now = Instant::now();
        let report_due = now >= last + interval;
        if report_due && !options.quiet {
            for (job, p) in graph.jobs.iter().zip(prev.iter_mut()) {
                let snap = job.metrics.snapshot();
                tracing::info!("{}", report_line(&job.metrics, snap, *p, now - last));
                *p = snap;
            }
            if let Some(line) = coordinator.as_ref().and_then(Coordinator::report_line) {
                tracing::info!("{line}");
            }
            let turns: Vec<(u64, Duration)> = graph.slow_turns.iter().map(|t| t.read()).collect();
            for (shard, ((n, longest), before)) in turns.iter().zip(&slow_reported).enumerate() {
                if n > before {
                    tracing::warn!(
                        "shard {shard}: {} loop turn(s) over {SHARD_SLOW_TURN_MS} ms in the last {:.0} s (longest this run {:.1} ms): its input waited that long",
                        n - before,
                        interval.as_secs_f64(),
                        longest.as_secs_f64() * 1e3
                    );
                }
            }
            slow_reported = turns.iter().map(|t| t.0).collect();
            for line in aws.iter().flat_map(KinesisService::report_lines) {
                tracing::info!("{line}");
            }
            if let (Some(m), Some(ctl)) = (mirror.as_mut(), &graph.checkpoints) {
                tracing::info!("{}", m.report_line(coordinator.as_ref(), ctl.completed.load(Ordering::SeqCst)));
            }
        }
        if report_due {
            last = now;
        }
    };
    let result = match checkpoint_error {
        Some(e) => Err(e),
        None => result,
    };
    let _ = runner.join();
    let elapsed = started.elapsed();
    if options.quiet {
        return result.map_err(DaemonError::Runtime);
    }
    if let Some(line) = coordinator.as_ref().and_then(|c| c.summary()) {
        eprintln!("{line}");
    }
    for line in aws.iter().flat_map(KinesisService::report_lines) {
        eprintln!("{line}");
    }
    if let (Some(m), Some(ctl)) = (mirror.as_mut(), &graph.checkpoints) {
        eprintln!("{}", m.report_line(coordinator.as_ref(), ctl.completed.load(Ordering::SeqCst)));
    }
    for job in &graph.jobs {
        let snap = job.metrics.snapshot();
        tracing::info!("{}", report_line(&job.metrics, snap, JobSnapshot::default(), elapsed));
        eprintln!(
            "job {}: {} records in, {} out, {} bad, {} late in {:.3} s: {:.2}M records/s",
            job.name,
            snap.records_in,
            snap.records_out,
            snap.bad_records,
            snap.late_records,
            elapsed.as_secs_f64(),
            snap.records_in as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
        );
    }
    result.map_err(DaemonError::Runtime)
}
