//! The `nexmark` source: the exact bid stream of the benchmark spec, and its persons and auctions
//! (`people.rs`), generated in process.
//!
//! With N splits, split j generates rows j, j+N, j+2N, ..., so event time advances in lock-step on every
//! shard and the stream is the same whatever the number of shards.

pub mod gen;
pub mod people;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{NexmarkConfig, NexmarkTable};
use crate::constants::NEXMARK_PREFETCH_BIDS;
use crate::record::BatchBuilder;
use gen::{Generator, GeneratorConfig, Tables};

/// Column indexes of the bid table (see `config::NEXMARK_BID_SCHEMA`).
const COL_AUCTION: usize = 0;
const COL_BIDDER: usize = 1;
const COL_PRICE: usize = 2;
const COL_CHANNEL: usize = 3;
const COL_URL: usize = 4;
const COL_DATE_TIME: usize = 5;
const COL_EXTRA: usize = 6;

/// One split of a nexmark table's stream.
pub struct NexmarkSplit {
    table: NexmarkTable,
    generator: Generator,
    tables: Arc<Tables>,
    gcfg: GeneratorConfig,
    /// The next bid number this split generates.
    next: u64,
    stride: u64,
    /// One past the last bid number of the stream; `u64::MAX` when unbounded.
    end: u64,
    /// The stream's wall-clock schedule; `None` = as fast as possible.
    pace: Option<Arc<Pace>>,
    /// Bids this split generated in this run.
    generated: u64,
    /// This split's number (its residue).
    split: u64,
    /// Columns the query reads; the others are filled with placeholders the query never looks at.
    used: [bool; 7],
    /// After a restore from a checkpoint taken with another split count: bids already emitted then are
    /// skipped (see [`NexmarkSplit::resume`]).
    skip: Option<Skip>,
}

/// The bids a checkpoint with `n` splits had emitted: `b < next[b % n]`.
struct Skip {
    n: u64,
    next: Vec<u64>,
    /// Beyond this, nothing is skipped.
    max: u64,
}

/// The wall-clock schedule of a rate-limited nexmark stream, shared by all its splits: counting the bids of
/// this run over all splits in stream order (split j's k-th bid is number `k * splits + j`), bid number i is
/// due `i / rate` seconds after the first split first asked for bids. The generator is open loop: a bid is
/// due at its time whatever the engine does, and one generated late is generated as soon as it can be.
#[derive(Debug)]
pub struct Pace {
    /// Bids per second over all splits (> 0).
    rate: u64,
    start: OnceLock<Instant>,
}

impl Pace {
    pub fn new(rate: u64) -> Pace {
        Pace { rate: rate.max(1), start: OnceLock::new() }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The schedule's zero, once some split has asked for bids.
    pub fn started(&self) -> Option<Instant> {
        self.start.get().copied()
    }

    fn start(&self, now: Instant) -> Instant {
        *self.start.get_or_init(|| now)
    }

    /// Nanoseconds after the start at which bid number `i` of the run is due.
    pub fn due_ns(&self, i: u64) -> u64 {
        (u128::from(i) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// How many of the run's first bids are due `ns` after the start (bids 0..=that-1).
    pub fn due_by(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.rate) / 1_000_000_000) as u64 + 1
    }
}

/// When each row of one read was due: row r is bid number `first + r * stride` of the run.
#[derive(Debug, Clone, Copy)]
pub struct ReadSchedule {
    first: u64,
    stride: u64,
}

impl ReadSchedule {
    /// Nanoseconds after the pace's start at which row `row` of the read was due.
    pub fn due_ns(&self, pace: &Pace, row: u32) -> u64 {
        pace.due_ns(self.first + u64::from(row) * self.stride)
    }
}

impl NexmarkSplit {
    pub fn new(
        cfg: &NexmarkConfig,
        tables: Arc<Tables>,
        pace: Option<Arc<Pace>>,
        split: u64,
        n_splits: u64,
        used: &[bool],
    ) -> NexmarkSplit {
        let gcfg = GeneratorConfig { seed: cfg.seed, event_rate: cfg.event_rate, key_space: cfg.key_space };
        let mut mask = [true; 7];
        for (m, u) in mask.iter_mut().zip(used) {
            *m = *u;
        }
        NexmarkSplit {
            table: cfg.table,
            generator: Generator::new(gcfg, tables.clone()),
            tables,
            gcfg,
            next: split,
            stride: n_splits,
            end: cfg.events.unwrap_or(u64::MAX),
            pace,
            generated: 0,
            split,
            used: mask,
            skip: None,
        }
    }

    /// (split, splits, next bid): where a restored split resumes.
    pub fn position(&self) -> (u64, u64, u64) {
        (self.next % self.stride, self.stride, self.next)
    }

    /// Continues after a checkpoint whose splits were `old` (each: split, splits, next bid; together they
    /// cover every residue of one split count). With the same split count this split resumes at its own next
    /// bid; with another, it starts at the earliest bid any old split had not emitted and skips those some
    /// old split had, so the stream is still every bid exactly once.
    pub fn resume(&mut self, old: &[(u64, u64, u64)]) -> Result<(), String> {
        let n = old.first().map_or(0, |o| o.1);
        let mut next = vec![None; n as usize];
        for &(split, splits, at) in old {
            if splits != n || split >= n {
                return Err(format!("nexmark positions of split {split} of {splits} do not fit {n} splits"));
            }
            next[split as usize] = Some(at);
        }
        let next: Vec<u64> = next
            .into_iter()
            .enumerate()
            .map(|(i, at)| at.ok_or(format!("no position for nexmark split {i} of {n}")))
            .collect::<Result<_, _>>()?;
        let residue = self.next;
        if n == self.stride {
            self.next = next[residue as usize];
            return Ok(());
        }
        let lo = next.iter().copied().min().unwrap_or(0);
        let max = next.iter().copied().max().unwrap_or(0);
        // The first bid >= lo of this split's residue.
        self.next = lo + (residue + self.stride - lo % self.stride) % self.stride;
        self.skip = Some(Skip { n, next, max });
        Ok(())
    }

    pub fn tables(seed: u64) -> Arc<Tables> {
        Arc::new(Tables::new(seed))
    }

    pub fn is_finished(&self) -> bool {
        self.next >= self.end
    }

    /// Bids this split may generate now under the stream's schedule (at most `max`), and, when that is
    /// zero, how long until the next one is due.
    pub fn allowance(&mut self, max: usize, now: Instant) -> (usize, Option<Duration>) {
        let Some(pace) = &self.pace else { return (max, None) };
        let elapsed = now.duration_since(pace.start(now)).as_nanos() as u64;
        // Split j's k-th bid is the run's bid k * stride + j: those due are k <= (due - 1 - j) / stride.
        let due_run = pace.due_by(elapsed);
        let due_here = if due_run > self.split { (due_run - 1 - self.split) / self.stride + 1 } else { 0 };
        let allowed = due_here.saturating_sub(self.generated) as usize;
        if allowed == 0 {
            let next = pace.due_ns(self.generated * self.stride + self.split);
            return (0, Some(Duration::from_nanos(next.saturating_sub(elapsed))));
        }
        (allowed.min(max), None)
    }

    /// When the rows of the next read are due (rate-limited streams only).
    pub fn next_read_schedule(&self) -> Option<ReadSchedule> {
        self.pace.as_ref()?;
        Some(ReadSchedule { first: self.generated * self.stride + self.split, stride: self.stride })
    }

    /// Whether row `r` was emitted before a restore onto another split count (see [`NexmarkSplit::resume`]).
    fn skipped(&mut self, r: u64) -> bool {
        let Some(skip) = &self.skip else { return false };
        if r >= skip.max {
            self.skip = None;
            return false;
        }
        r < skip.next[(r % skip.n) as usize]
    }

    /// Appends up to `max` persons or auctions to `out`; returns how many.
    fn read_people(&mut self, out: &mut BatchBuilder, max: usize) -> usize {
        let mut n = 0;
        while n < max && self.next < self.end {
            let r = self.next;
            self.next += self.stride;
            if self.skipped(r) {
                continue;
            }
            let (rate, seed) = (self.gcfg.event_rate, self.gcfg.seed);
            match self.table {
                NexmarkTable::Person => people::write_person(r, &self.tables, rate, seed, out),
                _ => people::write_auction(r, &self.tables, rate, seed, out),
            }
            n += 1;
        }
        self.generated += n as u64;
        n
    }

    /// Appends up to `max` rows (bids, persons or auctions) to `out`; returns how many.
    ///
    /// Bids are made in chunks: first every bid of the chunk is drawn (arithmetic only) and the cache lines of
    /// its `extra` slice are prefetched, then the rows are appended. `extra` is a random slice of a 1 MiB pool,
    /// so without this each row waits for a cache miss; with it, the misses of a chunk overlap.
    pub fn read(&mut self, out: &mut BatchBuilder, max: usize) -> usize {
        if self.table != NexmarkTable::Bid {
            return self.read_people(out, max);
        }
        let mut n = 0;
        let mut chunk = Vec::with_capacity(NEXMARK_PREFETCH_BIDS);
        while n < max && self.next < self.end {
            chunk.clear();
            while chunk.len() < NEXMARK_PREFETCH_BIDS && n + chunk.len() < max && self.next < self.end {
                if let Some(skip) = &self.skip {
                    let b = self.next;
                    if b >= skip.max {
                        self.skip = None;
                    } else if b < skip.next[(b % skip.n) as usize] {
                        self.next += self.stride;
                        continue;
                    }
                }
                let bid = self.generator.bid(self.next);
                if self.used[COL_EXTRA] {
                    crate::cpu::prefetch(bid.extra.as_ptr(), bid.extra.len());
                }
                if self.used[COL_CHANNEL] || self.used[COL_URL] {
                    crate::cpu::prefetch(bid.channel_addr(), 1);
                }
                chunk.push(bid);
                self.next += self.stride;
            }
            let u = &self.used;
            for bid in &chunk {
                out.push_int(COL_AUCTION, if u[COL_AUCTION] { bid.auction } else { 0 });
                out.push_int(COL_BIDDER, if u[COL_BIDDER] { bid.bidder } else { 0 });
                out.push_int(COL_PRICE, if u[COL_PRICE] { bid.price } else { 0 });
                out.push_str(COL_CHANNEL, if u[COL_CHANNEL] { bid.channel().as_bytes() } else { b"" });
                out.push_str(COL_URL, if u[COL_URL] { bid.url().as_bytes() } else { b"" });
                out.push_int(COL_DATE_TIME, bid.date_time_ms);
                out.push_str(COL_EXTRA, if u[COL_EXTRA] { bid.extra } else { b"" });
                out.end_row();
            }
            n += chunk.len();
        }
        self.generated += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pace: &Arc<Pace>, j: u64, n: u64) -> NexmarkSplit {
        let cfg = NexmarkConfig {
            table: NexmarkTable::Bid,
            events: None,
            rate: pace.rate(),
            event_rate: 1_000_000,
            key_space: 0,
            seed: 42,
        };
        NexmarkSplit::new(&cfg, NexmarkSplit::tables(42), Some(pace.clone()), j, n, &[true; 7])
    }

    #[test]
    fn splits_share_one_schedule_in_stream_order() {
        // 1000 bids/s over 2 splits: bid i is due at i ms; split 0 makes the even bids, split 1 the odd ones.
        let pace = Arc::new(Pace::new(1000));
        let (mut s0, mut s1) = (split(&pace, 0, 2), split(&pace, 1, 2));
        let t0 = Instant::now();
        assert_eq!(s0.allowance(100, t0), (1, None), "bid 0 is due at once");
        assert_eq!(s1.allowance(100, t0), (0, Some(Duration::from_millis(1))), "bid 1 is due after 1 ms");
        let at = t0 + Duration::from_micros(10_500);
        // Bids 0..=10 are due: 0, 2, .., 10 on split 0 (6), 1, 3, .., 9 on split 1 (5).
        assert_eq!(s0.allowance(100, at).0, 6);
        assert_eq!(s1.allowance(100, at).0, 5);
        assert_eq!(s0.allowance(4, at).0, 4, "capped at the batch size");
        let schema = crate::record::Schema::parse(crate::config::NEXMARK_BID_SCHEMA).expect("bid schema");
        let mut b = BatchBuilder::new(&schema.types());
        assert_eq!(s1.next_read_schedule().map(|r| r.due_ns(&pace, 2)), Some(5_000_000), "row 2 = bid 5");
        s1.read(&mut b, 5);
        // Split 1 is on schedule: its next bid (11) is due 0.5 ms later.
        assert_eq!(s1.allowance(100, at), (0, Some(Duration::from_micros(500))));
        assert_eq!(s1.next_read_schedule().map(|r| r.due_ns(&pace, 0)), Some(11_000_000));
    }

    #[test]
    fn an_unpaced_split_reads_as_fast_as_asked() {
        let cfg = NexmarkConfig {
            table: NexmarkTable::Bid,
            events: None,
            rate: 0,
            event_rate: 1_000_000,
            key_space: 0,
            seed: 42,
        };
        let mut s = NexmarkSplit::new(&cfg, NexmarkSplit::tables(42), None, 0, 1, &[true; 7]);
        assert_eq!(s.allowance(4096, Instant::now()), (4096, None));
        assert!(s.next_read_schedule().is_none());
    }
}
