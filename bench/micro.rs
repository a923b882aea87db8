//! Questions: what do the engine's building blocks cost per unit of work, next to the plain Rust a reader would
//! otherwise reach for? Each benchmark measures its baseline in the same run and prints, per case, the cost and
//! its ratio to the baseline (time / baseline time: below 1.00 is faster than the baseline).
//!
//! 1. Exchange lane vs std mpsc: messages/s between two threads (pinned to CPUs 0 and 1) through one lane of
//!    `queue::Exchange` (a bounded crossbeam channel plus doorbell rings), spinning on a full or empty lane;
//!    baseline: `std::sync::mpsc::sync_channel` of the same capacity, spinning the same way. Also shown: std
//!    blocking send/recv, and the bare crossbeam channel the lane wraps (what the doorbell adds).
//! 2. Record codec: ns/row to build nexmark-like bid rows into rkyv batches (`BatchBuilder` ... `finish`) and
//!    to read every cell back (`BatchBuf::view`); baseline: the same rows as a `Vec` of owned Rust structs
//!    (`String` fields: built by copying the strings, read field by field). Also shown: JSON lines
//!    (serde_json), what the edges of the engine parse and print.
//! 3. Keyed COUNT(*): ns/update into `operator::keyed::KeyedAccs` (the flat table of window slices; key bytes
//!    from `operator::key`, hashed with `key_hash`) over 1K and over 1M keys; baseline: a std
//!    `HashMap<Vec<u8>, i64>` counting the same encoded keys. Also shown: KeyedAccs with slots prefetched
//!    16 updates ahead (as restore does; the streaming path does not prefetch).
//! 4. State log append: MB/s and latency per append of checkpoint blobs (`state::log::BlobEncoder`) through
//!    `state::writer::LogWriter` (glommio DMA writes + fdatasync, inside a LocalExecutor) in a temporary
//!    directory; baseline: `std::fs::File` `write_all` + `sync_data` of the same bytes (buffered I/O), rolling
//!    files at the same segment size as the writer.
//!
//! In-memory cases report the best of a few rounds; the disk cases run once.
//!
//!   cargo bench --bench micro

use std::collections::HashMap;
use std::hint::{black_box, spin_loop};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use shardflow::constants::{EXCHANGE_LANE_BATCHES_MAX, STATE_SEGMENT_BYTES_MAX};
use shardflow::operator::key::{encode_datum, key_hash};
use shardflow::operator::keyed::KeyedAccs;
use shardflow::queue::{Exchange, Message, ShardId};
use shardflow::record::{BatchBuf, BatchBuilder, DataType, Datum};
use shardflow::sql::{AggCall, AggKind};
use shardflow::state::log::{BlobEncoder, CheckpointKind, StateId};
use shardflow::state::writer::LogWriter;

/// Rounds of each in-memory case; the best is reported.
const ROUNDS: usize = 3;

/// A small deterministic generator (xorshift64*), so every case sees the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Best (smallest) time of `rounds` runs of `f`; `f` returns the time it measured.
fn best(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..rounds).map(|_| f()).min().expect("at least one round")
}

/// Nanoseconds per unit of work.
fn ns(d: Duration, units: u64) -> f64 {
    d.as_nanos() as f64 / units as f64
}

/// One result line: cost per unit, a throughput, and the ratio to the baseline's cost per unit.
fn line(name: &str, d: Duration, units: u64, unit: &str, rate: String, baseline_ns: f64) {
    let ns = ns(d, units);
    let ratio = ns / baseline_ns;
    println!("  {name:<50} {ns:>11.1} ns/{unit:<7} {rate:>16}   x{ratio:.2} vs baseline");
}

// ---------------------------------------------------------------------------------------------------------
// 1. Exchange lane vs std mpsc

const MESSAGES: u64 = 5_000_000;
/// Blocking std channels are slow (a futex wake-up per few messages): fewer messages, one round.
const BLOCKING_MESSAGES: u64 = 1_000_000;

/// Pins the calling thread to `cpu`; false if that is not possible (then it runs unpinned).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0, ..) only changes this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Passes `n` watermarks from a producer thread (CPU 0) to a consumer thread (CPU 1); the time from the
/// producer's start to the consumer's last message.
fn pass<S, R>(n: u64, mut send: S, mut recv: R) -> Duration
where
    S: FnMut(Message) + Send,
    R: FnMut() -> Message + Send,
{
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let start = &start;
        let consumer = s.spawn(move || {
            pin(1);
            start.wait();
            for expect in 0..n as i64 {
                match recv() {
                    Message::Watermark(watermark) => assert_eq!(watermark, expect, "messages in order"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            Instant::now()
        });
        let producer = s.spawn(move || {
            pin(0);
            start.wait();
            let t0 = Instant::now();
            for i in 0..n {
                send(Message::Watermark(i as i64));
            }
            t0
        });
        let t0 = producer.join().expect("producer");
        consumer.join().expect("consumer") - t0
    })
}

fn exchange_lane(n: u64) -> Duration {
    let ex = Exchange::new(2, 1);
    let (a, b) = (ShardId(0), ShardId(1));
    let (ex_tx, ex_rx) = (ex.clone(), ex);
    pass(
        n,
        move |mut m| {
            while let Err(back) = ex_tx.try_send(0, a, b, m) {
                m = back;
                spin_loop();
            }
        },
        move || loop {
            if let Some(m) = ex_rx.try_recv(0, a, b) {
                return m;
            }
            spin_loop();
        },
    )
}

fn crossbeam_spinning(n: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Message>(EXCHANGE_LANE_BATCHES_MAX);
    pass(
        n,
        move |mut m| loop {
            match tx.try_send(m) {
                Ok(()) => return,
                Err(crossbeam_channel::TrySendError::Full(back)) => m = back,
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => panic!("consumer gone"),
            }
            spin_loop();
        },
        move || loop {
            if let Ok(m) = rx.try_recv() {
                return m;
            }
            spin_loop();
        },
    )
}

fn std_spinning(n: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(EXCHANGE_LANE_BATCHES_MAX);
    pass(
        n,
        move |mut m| loop {
            match tx.try_send(m) {
                Ok(()) => return,
                Err(std::sync::mpsc::TrySendError::Full(back)) => m = back,
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => panic!("consumer gone"),
            }
            spin_loop();
        },
        move || loop {
            if let Ok(m) = rx.try_recv() {
                return m;
            }
            spin_loop();
        },
    )
}

fn std_blocking(n: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(EXCHANGE_LANE_BATCHES_MAX);
    pass(n, move |m| tx.send(m).expect("consumer gone"), move || rx.recv().expect("producer gone"))
}

fn bench_exchange() {
    let pinned = pin_check();
    println!(
        "1. exchange: {MESSAGES} watermarks producer -> consumer thread, lane capacity {EXCHANGE_LANE_BATCHES_MAX}, \
         {}; best of 2; baseline std sync_channel spinning",
        if pinned { "pinned to CPUs 0 and 1" } else { "NOT pinned (sched_setaffinity failed)" }
    );
    let rounds = 2;
    let rate = |d: Duration, n: u64| format!("{:.1} M msg/s", n as f64 / d.as_secs_f64() / 1e6);
    let base = best(rounds, || std_spinning(MESSAGES));
    let b = ns(base, MESSAGES);
    line("baseline std sync_channel, try_send/try_recv spin", base, MESSAGES, "msg", rate(base, MESSAGES), b);
    let d = std_blocking(BLOCKING_MESSAGES);
    let name = format!("std sync_channel, blocking send/recv ({}M, 1 round)", BLOCKING_MESSAGES / 1_000_000);
    line(&name, d, BLOCKING_MESSAGES, "msg", rate(d, BLOCKING_MESSAGES), b);
    let d = best(rounds, || exchange_lane(MESSAGES));
    line("Exchange lane, try_send/try_recv spin", d, MESSAGES, "msg", rate(d, MESSAGES), b);
    let d = best(rounds, || crossbeam_spinning(MESSAGES));
    line("bare crossbeam bounded (what a lane wraps), spin", d, MESSAGES, "msg", rate(d, MESSAGES), b);
}

/// Whether threads can be pinned to CPUs 0 and 1 (checked on a throwaway thread).
fn pin_check() -> bool {
    std::thread::spawn(|| pin(0) && pin(1)).join().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------------------
// 2. Record codec

const ROWS_PER_BATCH: usize = 4096;
const BATCHES: usize = 64;
const ROWS: usize = ROWS_PER_BATCH * BATCHES;

/// A nexmark-like bid, owned: the input every encoder copies from, and the baseline's row.
#[derive(Clone, Serialize)]
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: String,
    url: String,
    #[serde(rename = "dateTime")]
    date_time: i64,
    extra: String,
}

/// A bid parsed from JSON, its strings borrowed from the line (no escapes in this data): the cheapest parse.
#[derive(Deserialize)]
struct BidRef<'a> {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: &'a str,
    url: &'a str,
    #[serde(rename = "dateTime")]
    date_time: i64,
    extra: &'a str,
}

/// Batch columns: auction, bidder, price, channel, url, dateTime, extra.
const BID_COLUMNS: [DataType; 7] = [
    DataType::BigInt,
    DataType::BigInt,
    DataType::BigInt,
    DataType::Varchar,
    DataType::Varchar,
    DataType::BigInt,
    DataType::Varchar,
];

fn bids(n: usize) -> Vec<Bid> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let channels = ["Google", "Facebook", "Baidu", "Apple"];
    (0..n)
        .map(|i| {
            let c = rng.next() as usize % 10;
            let channel = if c < 4 { channels[c].to_string() } else { format!("channel-{}", rng.next() % 10_000) };
            let url = format!(
                "https://www.nexmark.com/{}/{}/item.htm?query=1&channel_id={}",
                rng.next() % 1000,
                rng.next() % 1000,
                rng.next() % 100_000_000
            );
            let extra: String = (0..80).map(|_| (b'a' + (rng.next() % 26) as u8) as char).collect();
            Bid {
                auction: 1000 + (rng.next() % 1000) as i64,
                bidder: (rng.next() % 100_000) as i64,
                price: (rng.next() % 10_000_000) as i64,
                channel,
                url,
                date_time: 1_700_000_000_000 + i as i64 * 10,
                extra,
            }
        })
        .collect()
}

/// What reading a string costs a reader: its length and its last byte (so its bytes are touched).
#[inline]
fn str_sum(s: &[u8]) -> u64 {
    s.len() as u64 + u64::from(s.last().copied().unwrap_or(0))
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn row_sum(a: i64, b: i64, p: i64, ch: &[u8], url: &[u8], t: i64, extra: &[u8]) -> u64 {
    (a as u64)
        .wrapping_add(b as u64)
        .wrapping_add(p as u64)
        .wrapping_add(t as u64)
        .wrapping_add(str_sum(ch))
        .wrapping_add(str_sum(url))
        .wrapping_add(str_sum(extra))
}

fn bench_codec() {
    let input = bids(ROWS_PER_BATCH);
    let json_bytes: usize = input.iter().map(|b| serde_json::to_vec(b).expect("json").len() + 1).sum();
    println!(
        "2. record codec: {BATCHES} batches x {ROWS_PER_BATCH} nexmark-like bid rows (4 BIGINT, 3 VARCHAR, extra 80 B; \
         {} B/row as JSON); best of {ROUNDS}; baseline Vec<owned struct>",
        json_bytes / ROWS_PER_BATCH
    );

    // Encode. Every case copies from `input` and keeps what it built (fresh buffers, as a stream would).
    let mut rows: Vec<Vec<Bid>> = Vec::new();
    let base_enc = best(ROUNDS, || {
        rows.clear();
        let t0 = Instant::now();
        for _ in 0..BATCHES {
            let batch: Vec<Bid> = input.to_vec();
            rows.push(batch);
        }
        t0.elapsed()
    });
    let mut batches: Vec<BatchBuf> = Vec::new();
    let batch_enc = best(ROUNDS, || {
        batches.clear();
        let mut b = BatchBuilder::new(&BID_COLUMNS);
        let t0 = Instant::now();
        for _ in 0..BATCHES {
            for r in &input {
                b.push_int(0, r.auction);
                b.push_int(1, r.bidder);
                b.push_int(2, r.price);
                b.push_str(3, r.channel.as_bytes());
                b.push_str(4, r.url.as_bytes());
                b.push_int(5, r.date_time);
                b.push_str(6, r.extra.as_bytes());
                b.end_row();
            }
            batches.push(b.finish());
        }
        t0.elapsed()
    });
    let mut json: Vec<Vec<u8>> = Vec::new();
    let json_enc = best(ROUNDS, || {
        json.clear();
        let t0 = Instant::now();
        for _ in 0..BATCHES {
            let mut out = Vec::new();
            for r in &input {
                serde_json::to_writer(&mut out, r).expect("json");
                out.push(b'\n');
            }
            json.push(out);
        }
        t0.elapsed()
    });
    let batch_bytes = batches[0].size_bytes() / ROWS_PER_BATCH;
    let rate = |d: Duration| format!("{:.1} M rows/s", ROWS as f64 / d.as_secs_f64() / 1e6);
    let (rows_n, b) = (ROWS as u64, ns(base_enc, ROWS as u64));
    line("encode baseline: Vec<struct>, strings copied", base_enc, rows_n, "row", rate(base_enc), b);
    let name = format!("encode BatchBuilder push/end_row/finish ({batch_bytes} B/row)");
    line(&name, batch_enc, rows_n, "row", rate(batch_enc), b);
    line("encode serde_json lines", json_enc, rows_n, "row", rate(json_enc), b);

    // Decode: read every cell of every row.
    let want: u64 = input
        .iter()
        .map(|r| {
            row_sum(
                r.auction,
                r.bidder,
                r.price,
                r.channel.as_bytes(),
                r.url.as_bytes(),
                r.date_time,
                r.extra.as_bytes(),
            )
        })
        .fold(0u64, u64::wrapping_add)
        .wrapping_mul(BATCHES as u64);
    let base_dec = best(ROUNDS, || {
        let t0 = Instant::now();
        let mut sum = 0u64;
        for batch in black_box(&rows) {
            for r in batch {
                let s = row_sum(
                    r.auction,
                    r.bidder,
                    r.price,
                    r.channel.as_bytes(),
                    r.url.as_bytes(),
                    r.date_time,
                    r.extra.as_bytes(),
                );
                sum = sum.wrapping_add(s);
            }
        }
        let d = t0.elapsed();
        assert_eq!(black_box(sum), want);
        d
    });
    let batch_dec = best(ROUNDS, || {
        let t0 = Instant::now();
        let mut sum = 0u64;
        for buf in black_box(&batches) {
            let v = buf.view();
            for row in 0..v.n_rows() {
                let s = row_sum(
                    v.int(0, row),
                    v.int(1, row),
                    v.int(2, row),
                    v.str(3, row),
                    v.str(4, row),
                    v.int(5, row),
                    v.str(6, row),
                );
                sum = sum.wrapping_add(s);
            }
        }
        let d = t0.elapsed();
        assert_eq!(black_box(sum), want);
        d
    });
    let json_dec = best(ROUNDS, || {
        let t0 = Instant::now();
        let mut sum = 0u64;
        for lines in black_box(&json) {
            for l in lines.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                let r: BidRef<'_> = serde_json::from_slice(l).expect("json row");
                let s = row_sum(
                    r.auction,
                    r.bidder,
                    r.price,
                    r.channel.as_bytes(),
                    r.url.as_bytes(),
                    r.date_time,
                    r.extra.as_bytes(),
                );
                sum = sum.wrapping_add(s);
            }
        }
        let d = t0.elapsed();
        assert_eq!(black_box(sum), want);
        d
    });
    let b = ns(base_dec, rows_n);
    line("decode baseline: Vec<struct>, read every field", base_dec, rows_n, "row", rate(base_dec), b);
    line("decode BatchBuf::view + int/str every cell", batch_dec, rows_n, "row", rate(batch_dec), b);
    line("decode serde_json lines (borrowed &str)", json_dec, rows_n, "row", rate(json_dec), b);
}

// ---------------------------------------------------------------------------------------------------------
// 3. Keyed COUNT(*)

const UPDATES: usize = 1_000_000;
const KEY_BYTES: usize = 9;
const PREFETCH_AHEAD: usize = 16;

fn count_star() -> Vec<AggCall> {
    vec![AggCall {
        kind: AggKind::Count,
        arg: None,
        arg_ty: None,
        distinct: false,
        ty: DataType::BigInt,
        text: "COUNT(*)".into(),
        partial: false,
    }]
}

fn count_of(accs: &[shardflow::operator::accumulator::Acc], calls: &[AggCall]) -> i64 {
    match accs[0].result(&calls[0]) {
        Datum::Int(n) => n,
        other => panic!("COUNT gave {other:?}"),
    }
}

fn bench_keyed() {
    let calls = count_star();
    println!(
        "3. keyed COUNT(*): {UPDATES} updates, uniform random BIGINT keys ({KEY_BYTES}-byte encoded keys, encoded \
         beforehand), tables start empty; best of {ROUNDS}; baseline std HashMap<Vec<u8>, i64>"
    );
    for n_keys in [1_000u64, 1_000_000] {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ n_keys);
        let mut keys = Vec::with_capacity(UPDATES * KEY_BYTES);
        for _ in 0..UPDATES {
            encode_datum(&Datum::Int((rng.next() % n_keys) as i64), &mut keys);
        }
        assert_eq!(keys.len(), UPDATES * KEY_BYTES);
        let key = |i: usize| &keys[i * KEY_BYTES..(i + 1) * KEY_BYTES];

        let mut distinct = 0;
        let base = best(ROUNDS, || {
            let t0 = Instant::now();
            let mut map: HashMap<Vec<u8>, i64> = HashMap::new();
            for i in 0..UPDATES {
                let k = key(i);
                match map.get_mut(k) {
                    Some(n) => *n += 1,
                    None => {
                        map.insert(k.to_vec(), 1);
                    }
                }
            }
            let d = t0.elapsed();
            assert_eq!(map.values().sum::<i64>(), UPDATES as i64);
            distinct = map.len();
            drop(black_box(map));
            d
        });
        let keyed = best(ROUNDS, || {
            let t0 = Instant::now();
            let mut t = KeyedAccs::new(1);
            let mut scratch = Vec::new();
            for i in 0..UPDATES {
                let k = key(i);
                t.row_mut(key_hash(k), k, &calls)[0].update(None, &mut scratch);
            }
            let d = t0.elapsed();
            assert_eq!(t.len(), distinct);
            assert_eq!(t.rows(false).map(|(_, a)| count_of(a, &calls)).sum::<i64>(), UPDATES as i64);
            drop(black_box(t));
            d
        });
        let prefetched = best(ROUNDS, || {
            let t0 = Instant::now();
            let mut t = KeyedAccs::new(1);
            let mut scratch = Vec::new();
            let mut ahead = [0u64; PREFETCH_AHEAD];
            for (i, h) in ahead.iter_mut().enumerate().take(UPDATES) {
                *h = key_hash(key(i));
            }
            for i in 0..UPDATES {
                let hash = ahead[i % PREFETCH_AHEAD];
                if i + PREFETCH_AHEAD < UPDATES {
                    let next = key_hash(key(i + PREFETCH_AHEAD));
                    t.prefetch(next);
                    ahead[i % PREFETCH_AHEAD] = next;
                }
                t.row_mut(hash, key(i), &calls)[0].update(None, &mut scratch);
            }
            let d = t0.elapsed();
            assert_eq!(t.len(), distinct);
            drop(black_box(t));
            d
        });
        let rate = |d: Duration| format!("{:.1} M upd/s", UPDATES as f64 / d.as_secs_f64() / 1e6);
        println!("  over {n_keys} possible keys: {distinct} distinct");
        let (n, b) = (UPDATES as u64, ns(base, UPDATES as u64));
        line("baseline std HashMap<Vec<u8>, i64> (SipHash)", base, n, "update", rate(base), b);
        line("KeyedAccs::row_mut + key_hash + Acc::update", keyed, n, "update", rate(keyed), b);
        let name = format!("KeyedAccs, slots prefetched {PREFETCH_AHEAD} ahead");
        line(&name, prefetched, n, "update", rate(prefetched), b);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 4. State log append

const APPENDS: usize = 200;

/// A checkpoint blob of about `bytes`: puts of 9-byte keys with 100-byte values in 128 key groups, padded to
/// whole blocks.
fn blob(bytes: usize) -> Vec<u8> {
    let mut e = BlobEncoder::new(1, 0, CheckpointKind::Delta);
    let value = [7u8; 100];
    let per_entry = 1 + 8 + 4 + KEY_BYTES + 4 + value.len();
    // Entries come grouped by key group (as the engine writes them): one ENTRIES record per group.
    let groups = 128;
    let n = (bytes - groups * 19 - 256) / per_entry;
    let mut key = Vec::new();
    for i in 0..n {
        key.clear();
        encode_datum(&Datum::Int(i as i64), &mut key);
        e.put(StateId { job: 0, node: 2, table: 0 }, (i * groups / n) as u32, 0, &key, |out| {
            out.extend_from_slice(&value)
        });
    }
    e.finish(1)
}

fn latency(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
        h.max() as f64 / 1e6
    )
}

/// The baseline: buffered appends to numbered files (rolled like the writer's segments), each synced.
fn std_appends(dir: &Path, blob: &[u8]) -> (Duration, Histogram<u64>) {
    std::fs::create_dir_all(dir).expect("create the baseline directory");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut seg = 0;
    let mut pos = 0u64;
    let open = |seg: u32| {
        let f = std::fs::File::create_new(dir.join(format!("std-{seg:04}.log"))).expect("create a baseline file");
        std::fs::File::open(dir).and_then(|d| d.sync_all()).expect("sync the directory");
        f
    };
    let mut file = open(seg);
    let t0 = Instant::now();
    for _ in 0..APPENDS {
        let t = Instant::now();
        if pos > 0 && pos + blob.len() as u64 > STATE_SEGMENT_BYTES_MAX {
            seg += 1;
            pos = 0;
            file = open(seg);
        }
        file.write_all(blob).expect("write");
        file.sync_data().expect("sync");
        pos += blob.len() as u64;
        h.record(t.elapsed().as_nanos() as u64).expect("in range");
    }
    (t0.elapsed(), h)
}

/// The engine's writer, on a glommio executor.
fn log_writer_appends(dir: &Path, blob: Vec<u8>) -> (Duration, Histogram<u64>) {
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut w = LogWriter::new(&dir, 0).expect("log writer");
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let t0 = Instant::now();
            for _ in 0..APPENDS {
                let t = Instant::now();
                w.append(&blob, CheckpointKind::Delta).await.expect("append");
                h.record(t.elapsed().as_nanos() as u64).expect("in range");
            }
            (t0.elapsed(), h)
        })
        .expect("start a glommio executor")
        .join()
        .expect("log writer executor")
}

fn bench_state_log() {
    let root = std::env::temp_dir().join(format!("shardflow-micro-{}", std::process::id()));
    println!(
        "4. state log: {APPENDS} appends per blob size into {} (segments roll at {} MiB); one run; baseline std File \
         write_all + sync_data",
        root.display(),
        STATE_SEGMENT_BYTES_MAX >> 20
    );
    for target in [1usize << 20, 64 << 10] {
        let bytes = blob(target);
        let total = (bytes.len() * APPENDS) as f64;
        let rate = |d: Duration| format!("{:.0} MB/s", total / d.as_secs_f64() / 1e6);
        let label = if target >= 1 << 20 { format!("{} MiB", target >> 20) } else { format!("{} KiB", target >> 10) };
        println!("  blobs of {label} ({} bytes, padded to 4 KiB blocks):", bytes.len());
        let (base, h) = std_appends(&root.join(format!("std-{target}")), &bytes);
        let (n, b) = (APPENDS as u64, ns(base, APPENDS as u64));
        line("baseline std File write_all + sync_data", base, n, "append", rate(base), b);
        println!("      {}", latency(&h));
        let (d, h) = log_writer_appends(&root.join(format!("log-{target}")), bytes);
        line("LogWriter::append (glommio DMA + fdatasync)", d, n, "append", rate(d), b);
        println!("      {}", latency(&h));
    }
    std::fs::remove_dir_all(&root).expect("remove the benchmark's files");
}

fn main() {
    println!("ratio = time / baseline time (below 1.00: faster than the baseline)");
    bench_exchange();
    bench_codec();
    bench_keyed();
    bench_state_log();
}
