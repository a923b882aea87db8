//! Every limit of the engine, named once, with the reason for its value.
//!
//! Units are the last word of each name (`_rows`, `_bytes`, `_us`, `_ms`). Relations between limits are
//! asserted at compile time at the bottom of this file.

/// Rows a source split reads into one batch before handing it to the operator chain. Large enough to amortize
/// per-batch costs (serialization, watermark bookkeeping), small enough that one batch of ~100-byte rows stays
/// in L2 (4096 x 100 B = 400 KiB) and a watermark follows its data within microseconds.
pub const SOURCE_BATCH_ROWS_MAX: usize = 4096;

/// Bids the nexmark source draws (and whose `extra` it prefetches) before appending them: enough misses in
/// flight to hide memory latency, few enough (2 lines each) that they stay in L1 until used.
pub const NEXMARK_PREFETCH_BIDS: usize = 32;

/// Batch buffers each thread keeps for reuse. Reusing a buffer spares the allocator a large allocation per
/// batch and the kernel a page fault per 4 KiB of it.
pub const BATCH_BUFFERS_POOLED_MAX: usize = 16;

/// Rows in one exchange batch before it is flushed to the destination shard. Same reasoning as the source batch.
pub const EXCHANGE_BATCH_ROWS_MAX: usize = 4096;

/// Bytes of row data in one batch before it is flushed, whatever its row count: bounds the memory a batch pins.
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Two-phase aggregation (operator/local_agg.rs): a batch of at least [`LOCAL_AGG_JUDGE_ROWS_MIN`] rows that
/// folds away less than this percentage of its rows (about one group per row, e.g. a million keys) is not
/// worth folding: hashing every row costs more than the rows it saves the exchange and the global
/// aggregation. Smaller batches are too small to judge.
pub const LOCAL_AGG_FOLD_PERCENT_MIN: usize = 25;
pub const LOCAL_AGG_JUDGE_ROWS_MIN: usize = 256;

/// After a batch that did not fold, this many batches pass through the local aggregation unfolded before it
/// tries again: keys change slowly, and a retry costs a batch of hashing.
pub const LOCAL_AGG_PASS_BATCHES: u32 = 64;

/// Longest time a row may wait in a partly filled exchange or sink batch before it is flushed: bounds the
/// latency that batching adds at low rates (the issue asks for at most 1 ms).
pub const BATCH_LINGER_US: u64 = 200;

/// Batches in flight on one exchange lane (one producer shard to one consumer shard). With 4096-row batches
/// this is ~64k rows of slack per lane: enough to absorb scheduling jitter, small enough that a slow consumer
/// pushes back on its producers within milliseconds. A full lane is backpressure, never a drop.
pub const EXCHANGE_LANE_BATCHES_MAX: usize = 16;

/// Batches a shard drains from one inbound lane before it looks at its sources again, so neither side
/// starves the other.
pub const EXCHANGE_DRAIN_BATCHES_MAX: usize = 4;

/// How long an idle shard keeps watching its doorbell (task runnable) before it parks. Work that arrives
/// within it is picked up in ~0.3 us; after it, a wake-up goes through the kernel (~50 us measured here). 50 us
/// keeps an idle shard's core ~98 % asleep while a steady stream never pays the wake-up (bench/RESULTS.md).
pub const SHARD_SPIN_BEFORE_PARK_US: u64 = 50;

/// A shard whose next deadline (a paced source's next record, a lingering batch) is at most this far ahead
/// spins until it rather than sleeping on a timer: glommio's timers were measured firing up to 8 ms late for
/// sleeps of tens of microseconds on this kind of machine. Costs a busy core between records that come less
/// than 1 ms apart; saves nothing to park for less anyway.
pub const SHARD_SPIN_TO_DEADLINE_MAX_US: u64 = 1_000;

/// Longest a parked shard sleeps before it re-checks its timers (linger, idle splits, rate limits) even
/// when nothing woke it.
pub const SHARD_PARK_TIMEOUT_MS: u64 = 10;

/// A checkpoint in flight this long makes the control thread interrupt every shard's sleep (a signal): the
/// remedy for an executor that missed its wake-ups. Long against checkpoints (milliseconds; a 1 GB base
/// takes seconds, and a spurious interrupt costs nothing), short against a stalled job.
pub const SHARD_WATCHDOG_MS: u64 = 3_000;

/// A shard loop turn longer than this (work that kept the shard from its input) is counted and reported as
/// slow: 10 ms is far beyond a normal turn (microseconds) and within what a window firing 1M keys takes.
pub const SHARD_SLOW_TURN_MS: u64 = 10;

/// Glommio's time slice: how often a long-running task is asked to yield.
pub const SHARD_PREEMPT_TIMER_MS: u64 = 5;

/// Largest input record (one JSON line) accepted. Larger ones are bad input: counted, logged, skipped.
/// Kinesis' own record limit is 1 MiB; a line longer than that is almost surely a framing error.
pub const RECORD_BYTES_MAX: usize = 1 << 20;

/// Read buffer of a file source split.
pub const FILE_READ_BUFFER_BYTES: usize = 256 << 10;

/// Files a shard keeps open and reads round-robin. Splits beyond this wait their turn and, like unassigned
/// splits in Flink, do not hold the watermark back until opened.
pub const FILE_SPLITS_OPEN_MAX: usize = 64;

/// Bytes a file sink buffers before it writes them out.
pub const FILE_SINK_BUFFER_BYTES: usize = 256 << 10;

/// A part file is closed and a new one begun after this many bytes (Flink's default rolling size).
pub const FILE_SINK_PART_BYTES_MAX: u64 = 128 << 20;

/// Lines of bad input logged per source per interval; the rest are only counted.
pub const BAD_INPUT_LOG_LINES_MAX: u32 = 10;

/// The interval of the bad-input log limit.
pub const BAD_INPUT_LOG_INTERVAL_MS: u64 = 10_000;

/// Default key group count (Flink's default max parallelism is 128 for small jobs).
pub const KEY_GROUPS_DEFAULT: u32 = 128;

/// Largest key group count: key groups are u16 on the routing path.
pub const KEY_GROUPS_MAX: u32 = 1 << 15;

/// Largest shard count: shard ids are u16 in the routing table.
pub const SHARDS_MAX: usize = 1024;

/// How often the metrics reporter logs per-source and per-sink counters.
pub const METRICS_REPORT_INTERVAL_MS: u64 = 5_000;

/// Longest the daemon's control loop sleeps between looks at the run (stop requests, the watchdogs): a stop
/// reaches every shard within it. Five wake-ups a second cost nothing measurable.
pub const DAEMON_TICK_MAX_MS: u64 = 200;

/// Largest latency `shardflow bench` resolves (10 minutes); longer ones are recorded as this. A run whose rows
/// wait that long has failed its target by orders of magnitude; the bound keeps each histogram ~250 KB.
pub const LATENCY_MAX_NS: u64 = 600_000_000_000;

/// How often `shardflow bench` updates its progress line on a terminal.
pub const BENCH_PROGRESS_INTERVAL_MS: u64 = 1_000;

/// How long a benchmark run goes on after its measured interval before it is stopped: rows due at the end
/// of the interval get this long to reach the sink (a run that needs longer fell behind, and says so).
pub const BENCH_STOP_GRACE_MS: u64 = 200;

/// Most runs `--find-max` makes after its throughput run: a bisection to 1% of the throughput takes 7-8.
pub const FIND_MAX_TRIALS: u32 = 12;

/// Default time after which a split that produced nothing stops holding the watermark back.
pub const SOURCE_IDLE_TIMEOUT_DEFAULT_MS: u64 = 5_000;

/// Sessions open per key before a key's session list is considered runaway. Sessions merge as they meet;
/// this many disjoint open sessions means the watermark is far behind. Only bounds a scan, not correctness.
pub const SESSION_WINDOWS_PER_KEY_HINT: usize = 4;

/// A state log segment is sealed and a new one begun once it holds this much: small enough that deleting
/// segments no retained checkpoint needs frees disk soon after a compaction, large enough that a shard opens a
/// new file rarely (and, with the S3 mirror, that uploads are few and large).
pub const STATE_SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// Deltas since the last base may grow to the base's size, or to this, before the shard writes a new base:
/// a tiny state is not rewritten at every checkpoint.
pub const STATE_COMPACT_MIN_BYTES: u64 = 4 << 20;

/// Mirrored checkpoints kept by default (`[mirror] keep`): as locally, more than one, so a damaged newest one
/// still leaves an older one to resume from.
pub const MIRROR_KEEP_DEFAULT: usize = 3;

/// Times a starting instance tries to claim the mirror's next chain entry: each failure means an entry was
/// created meanwhile (the running instance publishes one per checkpoint), so a few tries suffice; more
/// failures mean instances are fighting over the prefix, and the start stops saying so.
pub const MIRROR_CLAIM_ATTEMPTS: u32 = 10;

/// Timeouts of one mirror request: connecting; waiting for the next bytes of an answer (a store that stopped
/// answering is noticed in seconds and retried); and one attempt whole (a [`MIRROR_CHUNK_BYTES_MAX`] piece at
/// 0.25 MB/s or better).
pub const MIRROR_CONNECT_TIMEOUT_MS: u64 = 3_000;
pub const MIRROR_READ_TIMEOUT_MS: u64 = 10_000;
pub const MIRROR_ATTEMPT_TIMEOUT_MS: u64 = 300_000;

/// Default `[mirror] backlog`: bytes written locally and not yet mirrored (state log of unmirrored checkpoints,
/// sink output waiting for them) before the sources are paused. 4 GiB holds a few minutes of a heavy job's
/// checkpoints, enough to ride out a store's short outage, and still fits a modest disk.
pub const MIRROR_BACKLOG_DEFAULT_BYTES: u64 = 4 << 30;

/// The sources resume once the backlog is back under this share of the limit (hysteresis: no flapping).
pub const MIRROR_BACKLOG_RESUME_PERCENT: u64 = 80;

/// How often the daemon measures the backlog (it lists the sink directories).
pub const MIRROR_BACKLOG_CHECK_MS: u64 = 1_000;

/// Largest piece of log uploaded as one object: a 1 GB base becomes 16 objects (each uploaded in parts of
/// [`MIRROR_PART_BYTES`]), fetched in parallel at a resume.
pub const MIRROR_CHUNK_BYTES_MAX: u64 = 64 << 20;

/// Pieces of log fetched at once when resuming from the mirror: enough to fill a link to S3, bounded so the
/// pieces in memory stay under half a gigabyte.
pub const MIRROR_DOWNLOAD_CONCURRENCY: usize = 8;

/// Size of the parts of a multipart upload to the mirror, and the size from which an object is uploaded in
/// parts: S3 takes parts of 5 MiB or more; 8 MiB keeps a part's retry cheap and the part count of a 1 GB log
/// well under S3's 10,000.
pub const MIRROR_PART_BYTES: usize = 8 << 20;

/// Completed checkpoints kept (manifests and the log they name); older ones are deleted. More than one, so a
/// checkpoint found damaged at recovery still leaves an older one to start from.
pub const CHECKPOINTS_RETAINED: usize = 3;

/// The state directory when `runtime.state_dir` is not set: `state` beside the config file.
pub const STATE_DIR_DEFAULT: &str = "state";

/// Shortest checkpoint interval accepted: each checkpoint costs every shard a barrier alignment and a sync.
pub const CHECKPOINT_INTERVAL_MIN_MS: u64 = 10;

/// Rows a restore reads ahead of the one it puts, their table slots prefetched: a table of a million keys
/// misses the cache on nearly every put, and 16 rows of decoding cover one memory latency (measured: the put
/// phase of 500k keys per shard went from ~150 ms to ~80 ms).
pub const RESTORE_PREFETCH_AHEAD: usize = 16;

const _: () = assert!(SOURCE_BATCH_ROWS_MAX <= u32::MAX as usize);
const _: () = assert!(EXCHANGE_BATCH_ROWS_MAX <= u32::MAX as usize);
const _: () = assert!(BATCH_LINGER_US <= 1_000, "the linger must stay within 1 ms");
const _: () = assert!(RECORD_BYTES_MAX <= BATCH_BYTES_MAX, "one record must fit a batch");
const _: () = assert!(KEY_GROUPS_MAX <= u16::MAX as u32 + 1);
const _: () = assert!(SHARDS_MAX <= u16::MAX as usize);
const _: () = assert!(SHARD_SPIN_BEFORE_PARK_US * 1_000 < SHARD_PARK_TIMEOUT_MS * 1_000_000);

/// How often an operator with state TTL brings its clock up to date (wall-clock ms it stamps writes with):
/// TTLs are minutes to days, so a tenth of a second is exact enough and costs nothing.
pub const PROCESSING_TICK_MS: i64 = 100;

/// How often an operator sweeps its state for entries past their TTL (besides dropping them when read).
pub const STATE_TTL_SWEEP_INTERVAL_MS: i64 = 1_000;

/// Entries one TTL sweep looks at: bounds the time a sweep takes from the shard's loop (~microseconds).
pub const STATE_TTL_SWEEP_ENTRIES: usize = 4_096;

/// Records one GetRecords call asks for: Kinesis' own maximum (fewer calls per record, within the 5 calls/s a
/// stream shard allows).
pub const KINESIS_GET_RECORDS_MAX: i32 = 10_000;

/// Least time between two GetRecords calls on one stream shard: Kinesis allows 5 per second per stream shard,
/// shared by every consumer of the stream.
pub const KINESIS_POLL_INTERVAL_MS: u64 = 200;

/// Longest pause between GetRecords calls on an idle stream shard (the pause doubles from
/// [`KINESIS_POLL_INTERVAL_MS`] while calls return nothing): bounds the latency of the first record after a
/// quiet spell.
pub const KINESIS_IDLE_POLL_MAX_MS: u64 = 1_000;

/// How far ahead of Kinesis' clock an AT_TIMESTAMP start may be: a start a little ahead (clock skew between
/// this machine and Kinesis, seconds without NTP) waits until Kinesis' clock passes it; one further ahead is
/// almost certainly a mistake in the config, and stops the job with a message rather than wait silently.
pub const KINESIS_START_AHEAD_MAX_MS: i64 = 5 * 60 * 1_000;

/// Longest single wait of a reader whose start Kinesis refused as in the future, before it asks again: short
/// enough that a stop is seen promptly.
pub const KINESIS_START_AHEAD_POLL_MAX_MS: u64 = 1_000;

/// How often a Kinesis source lists the stream's shards, to find children after a split or merge (sooner when
/// a stream shard it reads ends).
pub const KINESIS_DISCOVERY_INTERVAL_MS: u64 = 10_000;

/// First and largest delay of the jittered exponential backoff after a throttled or failed AWS call: the first
/// short enough not to stall a reader, the last long enough to let a throttled stream recover.
pub const AWS_RETRY_BASE_MS: u64 = 100;
pub const AWS_RETRY_MAX_MS: u64 = 5_000;

/// How long after subscribing an enhanced fan-out reader subscribes again, unless the source's
/// `resubscribe_after` says otherwise: Kinesis ends every subscription after 5 minutes; renewing 10 s earlier,
/// after the last sequence number delivered, makes the end a planned handover rather than a dropped stream.
pub const KINESIS_RESUBSCRIBE_DEFAULT_MS: u64 = 290_000;

/// Bounds of `resubscribe_after`: Kinesis accepts one SubscribeToShard per consumer and stream shard every
/// 5 s, and ends a subscription after 5 minutes.
pub const KINESIS_RESUBSCRIBE_MIN_MS: u64 = 5_000;
pub const KINESIS_RESUBSCRIBE_MAX_MS: u64 = 300_000;

/// How long a source waits for its enhanced fan-out consumer to become ACTIVE after registering it (Kinesis
/// takes seconds; a minute means something is wrong, and the job stops saying so).
pub const KINESIS_CONSUMER_ACTIVE_TIMEOUT_MS: u64 = 60_000;

/// GetRecords results that may wait between the control thread and one shard, per source: enough to keep the
/// shard busy while the next calls are in flight, bounded so a slow shard holds back its readers.
pub const KINESIS_CHANNEL_BATCHES: usize = 64;

/// Records and bytes of one PutRecords call: Kinesis' limits (500 records, 5 MiB).
pub const KINESIS_PUT_RECORDS_MAX: usize = 500;
pub const KINESIS_PUT_BYTES_MAX: usize = 5 << 20;

/// Largest record (data and partition key) Kinesis stores: 1 MiB. A larger output row is bad output,
/// counted and logged, never sent.
pub const KINESIS_RECORD_BYTES_MAX: usize = 1 << 20;

/// How long a Kinesis sink writer waits for more records before it sends a partial PutRecords batch: short,
/// since the latency of every record in the batch grows by it.
pub const KINESIS_PUT_LINGER_MS: u64 = 5;

/// Record batches that may wait between one shard and its Kinesis sink writer: when they are all waiting,
/// the shard waits too (backpressure).
pub const KINESIS_SINK_CHANNEL_BATCHES: usize = 16;

/// Rows a shard gathers before it hands them to its Kinesis sink writer (one PutRecords call's worth).
pub const KINESIS_SINK_BATCH_ROWS: usize = 500;
