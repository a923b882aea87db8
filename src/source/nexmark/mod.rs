//! The `nexmark` source, table `bid`: the exact bid stream of the benchmark spec, generated in process.
//!
//! With N splits, split j generates bids j, j+N, j+2N, ..., so event time advances in lock-step on every
//! shard and the stream is the same whatever the number of shards.

pub mod gen;

use std::sync::Arc;
use std::time::Instant;

use crate::config::NexmarkConfig;
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

/// One split of the bid stream.
pub struct NexmarkSplit {
    generator: Generator,
    /// The next bid number this split generates.
    next: u64,
    stride: u64,
    /// One past the last bid number of the stream; `u64::MAX` when unbounded.
    end: u64,
    /// Wall-clock bids per second for this split; 0 = unlimited.
    rate: f64,
    started: Option<Instant>,
    generated: u64,
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

impl NexmarkSplit {
    pub fn new(cfg: &NexmarkConfig, tables: Arc<Tables>, split: u64, n_splits: u64, used: &[bool]) -> NexmarkSplit {
        let gcfg = GeneratorConfig { seed: cfg.seed, event_rate: cfg.event_rate, key_space: cfg.key_space };
        let mut mask = [true; 7];
        for (m, u) in mask.iter_mut().zip(used) {
            *m = *u;
        }
        NexmarkSplit {
            generator: Generator::new(gcfg, tables),
            next: split,
            stride: n_splits,
            end: cfg.events.unwrap_or(u64::MAX),
            rate: cfg.rate as f64 / n_splits as f64,
            started: None,
            generated: 0,
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

    /// Bids this split may generate now under its rate limit (at most `max`), and, when that is zero, how
    /// long until the next one is due.
    pub fn allowance(&mut self, max: usize, now: Instant) -> (usize, Option<std::time::Duration>) {
        if self.rate <= 0.0 {
            return (max, None);
        }
        let started = *self.started.get_or_insert(now);
        let due = (now.duration_since(started).as_secs_f64() * self.rate) as u64 + 1;
        let allowed = due.saturating_sub(self.generated) as usize;
        if allowed == 0 {
            let next_at = (self.generated as f64) / self.rate;
            let wait =
                std::time::Duration::from_secs_f64((next_at - now.duration_since(started).as_secs_f64()).max(0.0));
            return (0, Some(wait));
        }
        (allowed.min(max), None)
    }

    /// Appends up to `max` bids to `out`; returns how many.
    ///
    /// Bids are made in chunks: first every bid of the chunk is drawn (arithmetic only) and the cache lines of
    /// its `extra` slice are prefetched, then the rows are appended. `extra` is a random slice of a 1 MiB pool,
    /// so without this each row waits for a cache miss; with it, the misses of a chunk overlap.
    pub fn read(&mut self, out: &mut BatchBuilder, max: usize) -> usize {
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
