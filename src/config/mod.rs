//! The config file: TOML text → validated [`Config`] (pure; every error collected with its key path).
//!
//! Invariant: nothing here opens a file other than the config itself or touches the network; connectors are
//! built from the validated config by `daemon`.

pub mod duration;
pub mod mirror;
mod section;

pub use mirror::{MirrorConfig, MirrorUrl};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::constants::{
    KEY_GROUPS_DEFAULT, KEY_GROUPS_MAX, KINESIS_RESUBSCRIBE_DEFAULT_MS, KINESIS_RESUBSCRIBE_MAX_MS,
    KINESIS_RESUBSCRIBE_MIN_MS, SHARDS_MAX, SOURCE_IDLE_TIMEOUT_DEFAULT_MS,
};
use crate::record::Schema;
use section::Section;

/// A config error: the key path (`sources.trades.path`) and a sentence saying what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// All errors found in one config file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub runtime: RuntimeConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    pub jobs: Vec<JobConfig>,
    /// `[[views]]`: named SELECTs jobs may read, in config order.
    pub views: Vec<ViewConfig>,
    /// `[checkpoint]`: absent means no checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// `[mirror]`: where checkpoints are mirrored (needs `[checkpoint]`).
    pub mirror: Option<MirrorConfig>,
}

#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Time between the start of one checkpoint and the next (after the previous completed).
    pub interval_ms: u64,
    /// Where the state log and the manifests live (`runtime.state_dir`, default `state` beside the config).
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Shards, one per core.
    pub cores: usize,
    /// CPUs the shards are pinned to, one per shard, in shard order.
    pub cpus: Vec<usize>,
    pub key_groups: u32,
    pub state_dir: Option<PathBuf>,
    /// `state_ttl`: how long unbounded operator state (regular joins, unbounded aggregations, Top-N,
    /// deduplication) lives without being written (Flink's table.exec.state.ttl); none: forever.
    pub state_ttl_ms: Option<u64>,
    /// `agg_phase_strategy`: which aggregations run in two phases (Flink's table.optimizer.agg-phase-strategy).
    pub agg_phases: crate::sql::AggPhaseStrategy,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub connector: SourceConnector,
    /// The rows the source produces.
    pub schema: Schema,
    /// The `watermark` expression text, checked against the schema by `sql`.
    pub watermark: Option<String>,
    pub idle_timeout_ms: u64,
    /// A sink that receives the bad input of this source, instead of only counting and logging it.
    pub dead_letter: Option<String>,
}

#[derive(Debug, Clone)]
pub enum SourceConnector {
    Nexmark(NexmarkConfig),
    File(FileSourceConfig),
    Kinesis(KinesisSourceConfig),
}

impl SourceConnector {
    pub fn name(&self) -> &'static str {
        match self {
            SourceConnector::Nexmark(_) => "nexmark",
            SourceConnector::File(_) => "file",
            SourceConnector::Kinesis(_) => "kinesis",
        }
    }
}

/// Where a Kinesis client connects. Credentials are never configured here: they come from the AWS default
/// provider chain (environment, profile, web identity, container or instance role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisEndpoint {
    /// A stream name or ARN.
    pub stream: String,
    /// Absent: the default chain's region (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Absent: AWS's endpoint for the region, or `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
}

/// Where a Kinesis source starts when no checkpoint says where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KinesisStart {
    /// The oldest record each stream shard retains.
    TrimHorizon,
    /// Only records written after the job starts.
    Latest,
    /// Records from this time on (epoch milliseconds).
    AtTimestamp(i64),
}

#[derive(Debug, Clone)]
pub struct KinesisSourceConfig {
    pub at: KinesisEndpoint,
    pub start: KinesisStart,
    /// Read through enhanced fan-out as this consumer; absent: GetRecords polling.
    pub consumer: Option<FanOutConfig>,
}

/// An enhanced fan-out consumer: its name, and how long after subscribing a reader subscribes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutConfig {
    pub name: String,
    pub resubscribe_after_ms: u64,
}

/// The Nexmark tables (Flink Nexmark's `bid`, `person`, `auction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    Bid,
    Person,
    Auction,
}

impl NexmarkTable {
    pub fn name(self) -> &'static str {
        match self {
            NexmarkTable::Bid => "bid",
            NexmarkTable::Person => "person",
            NexmarkTable::Auction => "auction",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// Which of the Nexmark tables: bids, persons or auctions.
    pub table: NexmarkTable,
    /// Rows to generate; `None` = unbounded.
    pub events: Option<u64>,
    /// Wall-clock events/s over all splits; 0 = as fast as possible.
    pub rate: u64,
    pub event_rate: u64,
    pub key_space: u64,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub connector: SinkConnector,
    pub format: SinkFormat,
    /// `primary_key`: the sink is an upsert sink keyed by these output columns (see [`SinkFormat`]).
    pub primary_key: Option<Vec<String>>,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// One JSON object per row: only for append-only results, unless the sink has a primary key (upsert
    /// mode: inserts and updates write the row, deletes write its key with `"__deleted": true`).
    Json,
    /// Flink's debezium-json: `{"before": ..., "after": ..., "op": "c"|"u"|"d"}` per change.
    DebeziumJson,
}

#[derive(Debug, Clone)]
pub enum SinkConnector {
    File { path: PathBuf },
    Stdout,
    Blackhole,
    Kinesis { at: KinesisEndpoint, partition_key: String },
}

impl SinkConnector {
    pub fn name(&self) -> &'static str {
        match self {
            SinkConnector::File { .. } => "file",
            SinkConnector::Stdout => "stdout",
            SinkConnector::Blackhole => "blackhole",
            SinkConnector::Kinesis { .. } => "kinesis",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub sql: String,
    /// Line in the config file where the SQL text starts (1-based), for error positions; 0 if unknown.
    pub sql_line: usize,
    /// The job's own state TTL (`state_ttl` in its [[jobs]] entry), over `[runtime] state_ttl`.
    pub state_ttl_ms: Option<u64>,
}

/// `[[views]]`: a named SELECT.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    pub name: String,
    pub sql: String,
    pub sql_line: usize,
}

/// The nexmark `bid` table's columns (Flink Nexmark's).
pub const NEXMARK_BID_SCHEMA: &str =
    "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR";

impl Config {
    /// Reads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigErrors {
            file: file.to_path_buf(),
            errors: vec![ConfigError::new("", format!("cannot read the config file: {e}"))],
        })?;
        Config::parse(file, &text)
    }

    /// Validates config text; `file` names it in messages and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors { file: file.to_path_buf(), errors };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!("line {l}, column {c}: "));
            fail(vec![ConfigError::new("", format!("{}not valid TOML: {}", at.unwrap_or_default(), e.message()))])
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut errors = Vec::new();
        let mut root = Section::new("", &table);
        let runtime = root.table("runtime").map(|t| t.map(|t| runtime_config(t, &base, &mut errors)));
        let sources = root
            .table("sources")
            .map(|t| t.and_then(|t| named_tables(t, "sources", &mut errors, |s, e| source_config(s, &base, e))));
        let sinks = root
            .table("sinks")
            .map(|t| t.and_then(|t| named_tables(t, "sinks", &mut errors, |s, e| sink_config(s, &base, e))));
        let checkpoint = root.table("checkpoint").map(|t| t.map(|t| checkpoint_config(t, &mut errors)));
        let mirror = root.table("mirror").map(|t| t.and_then(|t| mirror::mirror_config(t, &base, &mut errors)));
        root.allow(&["jobs", "views"]);
        let jobs = jobs_config(&table, text, &mut errors);
        let views = views_config(&table, text, &mut errors);
        errors.extend(root.unknown_keys("the config file"));
        let (runtime, sources, sinks) = match (runtime, sources, sinks) {
            (Ok(r), Ok(so), Ok(si)) => (r, so.unwrap_or_default(), si.unwrap_or_default()),
            (r, so, si) => {
                errors.extend([r.err(), so.err(), si.err()].into_iter().flatten());
                return Err(fail(errors));
            }
        };
        let runtime = runtime.unwrap_or_else(|| runtime_config(&toml::Table::new(), &base, &mut errors));
        let checkpoint = match checkpoint {
            Ok(Some(interval_ms)) => interval_ms.map(|interval_ms| CheckpointConfig {
                interval_ms,
                state_dir: runtime.state_dir.clone().unwrap_or_else(|| base.join(crate::constants::STATE_DIR_DEFAULT)),
            }),
            Ok(None) => None,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let mirror = mirror.unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        if mirror.is_some() && checkpoint.is_none() {
            errors.push(ConfigError::new(
                "mirror",
                "mirrors checkpoints: add [checkpoint] with an interval (or leave out [mirror])",
            ));
        }
        if jobs.is_empty() && errors.is_empty() {
            errors.push(ConfigError::new("jobs", "no job is defined; add a [[jobs]] table with a name and an sql"));
        }
        for source in sources.values() {
            if let Some(dl) = &source.dead_letter {
                if !sinks.contains_key(dl) {
                    errors.push(ConfigError::new(
                        format!("sources.{}.dead_letter", source.name),
                        format!("names sink `{dl}`, which is not defined under [sinks]"),
                    ));
                }
            }
        }
        for (i, v) in views.iter().enumerate() {
            if sources.keys().any(|s| s.eq_ignore_ascii_case(&v.name)) {
                errors.push(ConfigError::new(
                    format!("views[{i}].name"),
                    format!("`{}` is also a source; give the view another name", v.name),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        Ok(Config { file: file.to_path_buf(), runtime, sources, sinks, jobs, views, checkpoint, mirror })
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn named_tables<T>(
    table: &toml::Table,
    what: &str,
    errors: &mut Vec<ConfigError>,
    mut build: impl FnMut(Section<'_>, &mut Vec<ConfigError>) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let path = format!("{what}.{name}");
        match value {
            toml::Value::Table(t) => {
                if let Some(v) = build(Section::new(path, t), errors) {
                    out.insert(name.clone(), v);
                }
            }
            other => errors
                .push(ConfigError::new(path, format!("must be a table ([{what}.{name}]), not {}", other.type_str()))),
        }
    }
    Some(out)
}

fn collect<T>(r: Result<T, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// CPUs this process may run on, in order.
pub fn available_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cpus: Vec<usize> = if ok {
        (0..libc::CPU_SETSIZE as usize).filter(|c| unsafe { libc::CPU_ISSET(*c, &set) }).collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}

fn runtime_config(table: &toml::Table, base: &Path, errors: &mut Vec<ConfigError>) -> RuntimeConfig {
    let mut s = Section::new("runtime", table);
    let available = available_cpus();
    let cores = collect(s.u64("cores"), errors).flatten();
    let cores = match cores {
        None => available.len(),
        Some(0) => {
            errors.push(s.error("cores", "must be at least 1"));
            1
        }
        Some(n) if n as usize > available.len().min(SHARDS_MAX) => {
            errors.push(s.error(
                "cores",
                format!("is {n}, but this process may use only {} CPUs ({available:?}); lower it or leave it out to use them all", available.len()),
            ));
            available.len()
        }
        Some(n) => n as usize,
    };
    let key_groups = match collect(s.u64("key_groups"), errors).flatten() {
        None => KEY_GROUPS_DEFAULT,
        Some(k) if k == 0 || k > KEY_GROUPS_MAX as u64 => {
            errors.push(s.error("key_groups", format!("must be between 1 and {KEY_GROUPS_MAX}")));
            KEY_GROUPS_DEFAULT
        }
        Some(k) => k as u32,
    };
    if (key_groups as usize) < cores {
        errors.push(s.error(
            "key_groups",
            format!("is {key_groups}, fewer than the {cores} shards; raise it to at least the core count"),
        ));
    }
    let state_dir = collect(s.str("state_dir"), errors).flatten().map(|p| base.join(p));
    let state_ttl_ms = state_ttl(&mut s, errors);
    let agg_phases = match collect(s.str("agg_phase_strategy"), errors).flatten().unwrap_or("auto") {
        "auto" => crate::sql::AggPhaseStrategy::Auto,
        "one-phase" => crate::sql::AggPhaseStrategy::OnePhase,
        "two-phase" => crate::sql::AggPhaseStrategy::TwoPhase,
        other => {
            errors.push(s.error(
                "agg_phase_strategy",
                format!("is `{other}`; use \"auto\" (two phases for aggregations without a key), \"one-phase\" or \"two-phase\""),
            ));
            crate::sql::AggPhaseStrategy::Auto
        }
    };
    errors.extend(s.unknown_keys("[runtime]"));
    RuntimeConfig {
        cores,
        cpus: available.into_iter().take(cores).collect(),
        key_groups,
        state_dir,
        state_ttl_ms,
        agg_phases,
    }
}

/// A `state_ttl` duration: at least a second (shorter would forget state between two rows of a key).
fn state_ttl(s: &mut Section<'_>, errors: &mut Vec<ConfigError>) -> Option<u64> {
    match collect(s.duration_us("state_ttl"), errors).flatten() {
        None => None,
        Some(us) if us < 1_000_000 => {
            errors.push(s.error("state_ttl", "must be at least 1s (it is how long a key's state lives unwritten)"));
            None
        }
        Some(us) => Some(us / 1000),
    }
}

/// `[checkpoint]`: the interval (required there).
fn checkpoint_config(table: &toml::Table, errors: &mut Vec<ConfigError>) -> Option<u64> {
    let mut s = Section::new("checkpoint", table);
    let interval = collect(s.duration_us("interval"), errors).flatten();
    errors.extend(s.unknown_keys("[checkpoint]"));
    match interval {
        None => {
            errors.push(s.error("interval", "is required in [checkpoint], e.g. interval = \"1s\" (leave out [checkpoint] to run without checkpoints)"));
            None
        }
        Some(us) if us / 1000 < crate::constants::CHECKPOINT_INTERVAL_MIN_MS => {
            errors.push(
                s.error("interval", format!("must be at least {} ms", crate::constants::CHECKPOINT_INTERVAL_MIN_MS)),
            );
            None
        }
        Some(us) => Some(us / 1000),
    }
}

fn source_config(mut s: Section<'_>, base: &Path, errors: &mut Vec<ConfigError>) -> Option<SourceConfig> {
    let name = s.path().trim_start_matches("sources.").to_string();
    let connector = collect(s.required_str("connector", "\"file\""), errors);
    let watermark = collect(s.str("watermark"), errors).flatten().map(str::to_string);
    let idle_timeout_ms =
        collect(s.duration_us("idle_timeout"), errors).flatten().map_or(SOURCE_IDLE_TIMEOUT_DEFAULT_MS, |us| us / 1000);
    let dead_letter = collect(s.str("dead_letter"), errors).flatten().map(str::to_string);
    let built = match connector {
        None => None,
        Some("nexmark") => Some(nexmark_source(&mut s, errors)),
        Some("file") => file_source(&mut s, base, errors),
        Some("kinesis") => kinesis_source(&mut s, errors),
        Some(other) => {
            errors.push(s.error(
                "connector",
                format!("`{other}` is not a source connector; use \"nexmark\", \"file\" or \"kinesis\""),
            ));
            return None;
        }
    };
    errors.extend(s.unknown_keys(&format!("a {} source", connector.unwrap_or("?"))));
    let (connector, schema) = built?;
    Some(SourceConfig { name, connector, schema, watermark, idle_timeout_ms, dead_letter })
}

fn nexmark_source(s: &mut Section<'_>, errors: &mut Vec<ConfigError>) -> (SourceConnector, Schema) {
    let table = match collect(s.str("table"), errors).flatten().unwrap_or("bid") {
        "bid" => NexmarkTable::Bid,
        "person" => NexmarkTable::Person,
        "auction" => NexmarkTable::Auction,
        other => {
            errors.push(s.error("table", format!("is `{other}`; use \"bid\", \"person\" or \"auction\"")));
            NexmarkTable::Bid
        }
    };
    let cfg = NexmarkConfig {
        table,
        events: collect(s.u64("events"), errors).flatten(),
        rate: collect(s.u64("rate"), errors).flatten().unwrap_or(0),
        event_rate: collect(s.u64("event_rate"), errors).flatten().unwrap_or(1_000_000),
        key_space: collect(s.u64("key_space"), errors).flatten().unwrap_or(0),
        seed: collect(s.u64("seed"), errors).flatten().unwrap_or(42),
    };
    if cfg.event_rate == 0 {
        errors.push(s.error("event_rate", "must be at least 1 (bids per second of event time)"));
    }
    if table != NexmarkTable::Bid && cfg.key_space > 0 {
        errors.push(s.error("key_space", "applies to the bid table (its bidders)"));
    }
    let schema = match table {
        NexmarkTable::Bid => NEXMARK_BID_SCHEMA,
        NexmarkTable::Person => crate::source::nexmark::people::NEXMARK_PERSON_SCHEMA,
        NexmarkTable::Auction => crate::source::nexmark::people::NEXMARK_AUCTION_SCHEMA,
    };
    (SourceConnector::Nexmark(cfg), Schema::parse(schema).expect("the nexmark schemas parse"))
}

fn file_source(s: &mut Section<'_>, base: &Path, errors: &mut Vec<ConfigError>) -> Option<(SourceConnector, Schema)> {
    let path = collect(s.required_str("path", "\"input/events.jsonl\""), errors);
    let format = collect(s.str("format"), errors).flatten().unwrap_or("json");
    if format != "json" {
        errors.push(s.error("format", format!("is `{format}`; only \"json\" (JSON lines) is supported")));
    }
    let schema = collect(s.required_str("schema", "\"symbol VARCHAR, qty BIGINT, ts TIMESTAMP(3)\""), errors)
        .and_then(|text| collect(Schema::parse(text).map_err(|m| s.error("schema", m)), errors));
    Some((SourceConnector::File(FileSourceConfig { path: base.join(path?) }), schema?))
}

/// Credentials in an AWS-facing section are errors: they come only from the AWS default provider chain.
fn refuse_secrets(s: &mut Section<'_>, errors: &mut Vec<ConfigError>) {
    for secret in ["access_key_id", "secret_access_key", "session_token", "aws_access_key_id", "aws_secret_access_key"]
    {
        if s.has(secret) {
            errors.push(s.error(
                secret,
                "credentials are never read from the config file: they come from the AWS default provider chain \
                 (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, web identity, or the instance or container role)",
            ));
        }
    }
}

/// The keys every Kinesis source and sink shares: `stream`, `region`, `endpoint`; secrets are refused.
fn kinesis_endpoint(s: &mut Section<'_>, errors: &mut Vec<ConfigError>) -> Option<KinesisEndpoint> {
    refuse_secrets(s, errors);
    let stream = collect(s.required_str("stream", "\"orders\" (a stream name or ARN)"), errors);
    let region = collect(s.str("region"), errors).flatten().map(str::to_string);
    let endpoint = collect(s.str("endpoint"), errors).flatten().map(str::to_string);
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            errors.push(s.error(
                "endpoint",
                format!("is `{e}`; write a URL such as \"https://kinesis.eu-west-1.amazonaws.com\""),
            ));
        }
    }
    Some(KinesisEndpoint { stream: stream?.to_string(), region, endpoint })
}

fn kinesis_source(s: &mut Section<'_>, errors: &mut Vec<ConfigError>) -> Option<(SourceConnector, Schema)> {
    let at = kinesis_endpoint(s, errors);
    let format = collect(s.str("format"), errors).flatten().unwrap_or("json");
    if format != "json" {
        errors
            .push(s.error("format", format!("is `{format}`; only \"json\" (one JSON object per record) is supported")));
    }
    let consumer = collect(s.str("consumer"), errors).flatten();
    let resubscribe_us = collect(s.duration_us("resubscribe_after"), errors).flatten();
    let consumer = match (consumer, resubscribe_us) {
        (None, Some(_)) => {
            errors.push(s.error("resubscribe_after", "only applies with `consumer` (enhanced fan-out)"));
            None
        }
        (None, None) => None,
        (Some(name), _) if !valid_consumer_name(name) => {
            errors.push(s.error(
                "consumer",
                format!("is `{name}`; a consumer name has 1 to 128 letters, digits, `_`, `.` or `-`"),
            ));
            None
        }
        (Some(name), us) => {
            let ms = us.map_or(KINESIS_RESUBSCRIBE_DEFAULT_MS, |us| us / 1000);
            if (KINESIS_RESUBSCRIBE_MIN_MS..=KINESIS_RESUBSCRIBE_MAX_MS).contains(&ms) {
                Some(FanOutConfig { name: name.to_string(), resubscribe_after_ms: ms })
            } else {
                errors.push(s.error(
                    "resubscribe_after",
                    format!(
                        "must be from {} s to {} min: Kinesis accepts one subscription per stream shard every 5 s, \
                         and ends each after 5 minutes",
                        KINESIS_RESUBSCRIBE_MIN_MS / 1000,
                        KINESIS_RESUBSCRIBE_MAX_MS / 60_000
                    ),
                ));
                None
            }
        }
    };
    let start_timestamp = collect(s.str("start_timestamp"), errors).flatten();
    let start = match collect(s.str("start"), errors).flatten().unwrap_or("LATEST") {
        "LATEST" => Some(KinesisStart::Latest),
        "TRIM_HORIZON" => Some(KinesisStart::TrimHorizon),
        "AT_TIMESTAMP" => match start_timestamp {
            None => {
                errors.push(s.error(
                    "start_timestamp",
                    "is required with start = \"AT_TIMESTAMP\", e.g. \"2026-01-01 00:00:00\"",
                ));
                None
            }
            Some(t) => match crate::record::timestamp::parse_timestamp(t) {
                Some(ms) => Some(KinesisStart::AtTimestamp(ms)),
                None => {
                    errors.push(s.error(
                        "start_timestamp",
                        format!("`{t}` is not a timestamp; write \"yyyy-MM-dd HH:mm:ss[.SSS]\" (UTC)"),
                    ));
                    None
                }
            },
        },
        other => {
            errors
                .push(s.error("start", format!("is `{other}`; use \"LATEST\", \"TRIM_HORIZON\" or \"AT_TIMESTAMP\"")));
            None
        }
    };
    if start_timestamp.is_some() && !matches!(start, Some(KinesisStart::AtTimestamp(_))) {
        errors.push(s.error("start_timestamp", "only applies with start = \"AT_TIMESTAMP\""));
    }
    let schema = collect(s.required_str("schema", "\"symbol VARCHAR, qty BIGINT, ts TIMESTAMP(3)\""), errors)
        .and_then(|text| collect(Schema::parse(text).map_err(|m| s.error("schema", m)), errors));
    Some((SourceConnector::Kinesis(KinesisSourceConfig { at: at?, start: start?, consumer }), schema?))
}

/// Kinesis' rule for consumer names: `[a-zA-Z0-9_.-]+`, at most 128 characters.
fn valid_consumer_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn sink_config(mut s: Section<'_>, base: &Path, errors: &mut Vec<ConfigError>) -> Option<SinkConfig> {
    let name = s.path().trim_start_matches("sinks.").to_string();
    let connector = collect(s.required_str("connector", "\"file\""), errors)?;
    let format = match collect(s.str("format"), errors).flatten().unwrap_or("json") {
        "json" => SinkFormat::Json,
        "debezium-json" => SinkFormat::DebeziumJson,
        other => {
            errors.push(s.error(
                "format",
                format!("is `{other}`; use \"json\" (JSON lines) or \"debezium-json\" (a changelog)"),
            ));
            SinkFormat::Json
        }
    };
    let primary_key = collect(s.str("primary_key"), errors).flatten().map(|k| {
        k.split(',').map(|c| c.trim().trim_matches('`').to_string()).filter(|c| !c.is_empty()).collect::<Vec<_>>()
    });
    if primary_key.as_ref().is_some_and(Vec::is_empty) {
        errors.push(s.error("primary_key", "names no column; write the output columns that key the rows, e.g. \"k\""));
    }
    if primary_key.is_some() && format == SinkFormat::DebeziumJson {
        errors.push(
            s.error("primary_key", "is for upsert sinks (format = \"json\"); a debezium-json sink writes every change"),
        );
    }
    let connector = match connector {
        "file" => match collect(s.required_str("path", "\"output/out\""), errors) {
            Some(path) => SinkConnector::File { path: base.join(path) },
            None => {
                errors.extend(s.unknown_keys("a file sink"));
                return None;
            }
        },
        "stdout" | "print" => SinkConnector::Stdout,
        "blackhole" => SinkConnector::Blackhole,
        "kinesis" => {
            let at = kinesis_endpoint(&mut s, errors);
            let key = collect(s.required_str("partition_key", "\"symbol\" (a column of the output)"), errors);
            SinkConnector::Kinesis { at: at?, partition_key: key?.to_string() }
        }
        other => {
            errors.push(s.error(
                "connector",
                format!("`{other}` is not a sink connector; use \"file\", \"stdout\", \"blackhole\" or \"kinesis\""),
            ));
            return None;
        }
    };
    if matches!(connector, SinkConnector::Blackhole) && primary_key.is_some() {
        errors.push(s.error("primary_key", "does not apply to a blackhole sink"));
    }
    errors.extend(s.unknown_keys(&format!("a {} sink", connector.name())));
    Some(SinkConfig { name, connector, format, primary_key })
}

fn jobs_config(table: &toml::Table, text: &str, errors: &mut Vec<ConfigError>) -> Vec<JobConfig> {
    let Some(jobs) = table.get("jobs") else { return Vec::new() };
    let Some(jobs) = jobs.as_array() else {
        errors.push(ConfigError::new("jobs", "must be an array of tables: write each job as [[jobs]]"));
        return Vec::new();
    };
    let mut out: Vec<JobConfig> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let path = format!("jobs[{i}]");
        let Some(t) = job.as_table() else {
            errors.push(ConfigError::new(path, "must be a table with `name` and `sql`"));
            continue;
        };
        let mut s = Section::new(path, t);
        let name = collect(s.str("name"), errors).flatten().map_or_else(|| format!("job{i}"), str::to_string);
        let sql = collect(s.required_str("sql", "\"INSERT INTO out SELECT ... FROM ...\""), errors);
        let state_ttl_ms = state_ttl(&mut s, errors);
        errors.extend(s.unknown_keys("a job"));
        if out.iter().any(|j| j.name == name) {
            errors.push(s.error("name", format!("`{name}` is used by two jobs; give each job its own name")));
        }
        if let Some(sql) = sql {
            out.push(JobConfig { name, sql: sql.to_string(), sql_line: find_sql_line(text, sql), state_ttl_ms });
        }
    }
    out
}

fn views_config(table: &toml::Table, text: &str, errors: &mut Vec<ConfigError>) -> Vec<ViewConfig> {
    let Some(views) = table.get("views") else { return Vec::new() };
    let Some(views) = views.as_array() else {
        errors.push(ConfigError::new("views", "must be an array of tables: write each view as [[views]]"));
        return Vec::new();
    };
    let mut out: Vec<ViewConfig> = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let path = format!("views[{i}]");
        let Some(t) = view.as_table() else {
            errors.push(ConfigError::new(path, "must be a table with `name` and `sql`"));
            continue;
        };
        let mut s = Section::new(path, t);
        let name = collect(s.required_str("name", "\"big_bids\""), errors);
        let sql = collect(s.required_str("sql", "\"SELECT ... FROM ...\""), errors);
        errors.extend(s.unknown_keys("a view"));
        let (Some(name), Some(sql)) = (name, sql) else { continue };
        let valid = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !valid {
            errors.push(s.error(
                "name",
                format!("`{name}` is not a SQL name: letters, digits and _, not starting with a digit"),
            ));
        }
        if out.iter().any(|v| v.name.eq_ignore_ascii_case(name)) {
            errors.push(s.error("name", format!("`{name}` is used by two views; give each its own name")));
        }
        out.push(ViewConfig { name: name.to_string(), sql: sql.to_string(), sql_line: find_sql_line(text, sql) });
    }
    out
}

/// The config line where a job's SQL text begins, found by searching for its first line.
fn find_sql_line(text: &str, sql: &str) -> usize {
    let first = sql.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if first.is_empty() {
        return 0;
    }
    let Some(at) = text.find(first) else { return 0 };
    let (line, _) = line_col(text, at);
    // Where the SQL starts with blank lines (a `"""` string's first newline is dropped by TOML), count back.
    let leading_blank = sql.lines().take_while(|l| l.trim().is_empty()).count();
    line - leading_blank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        match Config::parse(Path::new("/etc/job.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
[runtime]
cores = 1
key_groups = 16

[sources.trades]
connector = "file"
path = "in.jsonl"
schema = "symbol VARCHAR, qty BIGINT, ts TIMESTAMP(3)"
watermark = "ts - INTERVAL '2' SECOND"

[sinks.out]
connector = "file"
path = "out"

[[jobs]]
name = "volume"
sql = """
INSERT INTO out SELECT symbol FROM trades
"""
"#;

    #[test]
    fn accepts_a_good_config() {
        let c = Config::parse(Path::new("/etc/job.toml"), GOOD).unwrap();
        assert_eq!(c.runtime.cores, 1);
        assert_eq!(c.runtime.key_groups, 16);
        assert_eq!(c.jobs[0].sql_line, 19);
        match &c.sources["trades"].connector {
            SourceConnector::File(f) => assert_eq!(f.path, Path::new("/etc/in.jsonl")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_the_key_path_of_every_error() {
        let check = |from: &str, to: &str, want: &str| {
            let errs = errors_of(&GOOD.replace(from, to));
            assert!(errs.iter().any(|e| e.contains(want)), "want {want:?} in {errs:#?}");
            assert!(errs.iter().all(|e| e.starts_with("/etc/job.toml: ")), "{errs:#?}");
        };
        check(
            "path = \"in.jsonl\"",
            "pathh = \"in.jsonl\"",
            "sources.trades.pathh: unknown key for a file source; did you mean `path`?",
        );
        check("key_groups = 16", "key_group = 16", "runtime.key_group: unknown key");
        check("cores = 1", "cores = \"two\"", "runtime.cores: must be a non-negative integer, not string");
        check(
            "connector = \"file\"\npath = \"out\"",
            "connector = \"kafka\"",
            "sinks.out.connector: `kafka` is not a sink connector",
        );
        check("qty BIGINT", "qty BIGNUM", "sources.trades.schema: column `qty` has unsupported type");
        check("name = \"volume\"", "nme = \"volume\"", "jobs[0].nme: unknown key for a job; did you mean `name`?");
        check("[runtime]", "[runtim]", "runtim: unknown key for the config file");
        check("cores = 1", "cores = 1\ncores = 2", "not valid TOML");
    }
    #[test]
    fn a_mirror_needs_checkpoints_and_takes_no_credentials() {
        let with = |mirror: &str, checkpoint: bool| {
            let ckpt = if checkpoint { "\n[checkpoint]\ninterval = \"1s\"\n" } else { "" };
            format!("{GOOD}{ckpt}\n[mirror]\n{mirror}\n")
        };
        let c = Config::parse(Path::new("/etc/job.toml"), &with("url = \"s3://b-1/p\"\nkeep = 5", true)).unwrap();
        let m = c.mirror.expect("a mirror");
        assert_eq!(m.url, MirrorUrl::S3 { bucket: "b-1".into(), prefix: "p".into() });
        assert_eq!((m.keep, m.backlog_bytes), (5, crate::constants::MIRROR_BACKLOG_DEFAULT_BYTES));
        let check = |text: &str, want: &str| {
            let errs = errors_of(text);
            assert!(errs.iter().any(|e| e.contains(want)), "want {want:?} in {errs:#?}");
        };
        check(&with("url = \"s3://b-1/p\"", false), "mirror: mirrors checkpoints: add [checkpoint]");
        check(
            &with("url = \"s3://b-1/p\"\nsecret_access_key = \"x\"", true),
            "mirror.secret_access_key: credentials are never read",
        );
        check(&with("url = \"ftp://x\"", true), "mirror.url: `ftp://x` is not a mirror URL");
        check(&with("url = \"s3://b-1/p\"\nbacklog = \"lots\"", true), "mirror.backlog: `lots` is not a size");
        check(&with("url = \"s3://b-1/p\"\nkeep = 0", true), "mirror.keep: must be at least 1");
        check(&with("url = \"file:///m\"\nregion = \"eu-west-1\"", true), "mirror.url: is a local directory");
        check(&with("uri = \"s3://b-1/p\"", true), "mirror.uri: unknown key");
    }

    fn kinesis(extra: &str) -> String {
        GOOD.replace(
            "connector = \"file\"\npath = \"in.jsonl\"",
            &format!("connector = \"kinesis\"\nstream = \"trades\"\n{extra}"),
        )
    }

    #[test]
    fn a_kinesis_consumer_reads_through_enhanced_fan_out() {
        let consumer_of = |extra: &str| match Config::parse(Path::new("/etc/job.toml"), &kinesis(extra)) {
            Ok(c) => match &c.sources["trades"].connector {
                SourceConnector::Kinesis(k) => k.consumer.clone(),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        };
        assert_eq!(consumer_of(""), None);
        let fan_out = |name: &str, ms| Some(FanOutConfig { name: name.into(), resubscribe_after_ms: ms });
        assert_eq!(consumer_of("consumer = \"app-1.v2\""), fan_out("app-1.v2", KINESIS_RESUBSCRIBE_DEFAULT_MS));
        assert_eq!(consumer_of("consumer = \"a\"\nresubscribe_after = \"1m\""), fan_out("a", 60_000));
        let check = |extra: &str, want: &str| {
            let errs = errors_of(&kinesis(extra));
            assert!(errs.iter().any(|e| e.contains(want)), "want {want:?} in {errs:#?}");
        };
        check("consumer = \"a b\"", "sources.trades.consumer: is `a b`; a consumer name has 1 to 128 letters");
        check("consumer = \"\"", "sources.trades.consumer: is ``");
        check(
            "consumer = \"a\"\nresubscribe_after = \"1s\"",
            "sources.trades.resubscribe_after: must be from 5 s to 5 min",
        );
        check("consumer = \"a\"\nresubscribe_after = \"6m\"", "sources.trades.resubscribe_after: must be from 5 s");
        check("resubscribe_after = \"1m\"", "sources.trades.resubscribe_after: only applies with `consumer`");
    }
}
