//! Event time: watermarks per source split, and their combination.
//!
//! A split's watermark is the largest event time it has read minus the declared delay. A shard's source
//! watermark is the minimum over its active splits; a split that read nothing for the idle timeout stops
//! holding it back (Flink's source idleness) until it reads again; a finished split never does. Across the
//! exchange, a shard's event time is the minimum over the producers that are not idle, or, when all are, the
//! largest of their watermarks (as Flink's watermark valve). Watermarks never go back.

/// Event time meaning "every window may fire": sent when a bounded input ends.
pub const WATERMARK_END: i64 = i64::MAX;

#[derive(Debug, Clone)]
struct SplitTime {
    max_event_ms: i64,
    last_read_ms: u64,
    finished: bool,
}

/// Watermarks of the splits one shard reads for one source.
#[derive(Debug, Clone)]
pub struct SplitWatermarks {
    delay_ms: i64,
    idle_timeout_ms: u64,
    splits: Vec<SplitTime>,
    emitted: i64,
}

impl SplitWatermarks {
    /// `now_ms` is a monotonic clock reading.
    pub fn new(n_splits: usize, delay_ms: i64, idle_timeout_ms: u64, now_ms: u64) -> SplitWatermarks {
        let split = SplitTime { max_event_ms: i64::MIN, last_read_ms: now_ms, finished: false };
        SplitWatermarks { delay_ms, idle_timeout_ms, splits: vec![split; n_splits], emitted: i64::MIN }
    }

    /// Notes that `split` read rows up to event time `max_event_ms` at `now_ms`.
    pub fn observe(&mut self, split: usize, max_event_ms: i64, now_ms: u64) {
        let s = &mut self.splits[split];
        s.max_event_ms = s.max_event_ms.max(max_event_ms);
        s.last_read_ms = now_ms;
    }

    /// Notes that `split` read nothing new at `now_ms` but is alive (it does not become idle by being polled).
    pub fn finish(&mut self, split: usize) {
        self.splits[split].finished = true;
    }

    /// The new watermark if it advanced past the last one returned: the minimum over splits that are neither
    /// finished nor idle; [`WATERMARK_END`] once every split finished. `None` when it did not advance (also
    /// when every unfinished split is idle: an idle source holds nothing back and advances nothing).
    pub fn advance(&mut self, now_ms: u64) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut all_finished = true;
        for s in &self.splits {
            if s.finished {
                continue;
            }
            all_finished = false;
            if now_ms.saturating_sub(s.last_read_ms) >= self.idle_timeout_ms && self.idle_timeout_ms > 0 {
                continue;
            }
            let wm = s.max_event_ms.saturating_sub(self.delay_ms);
            min = Some(min.map_or(wm, |m: i64| m.min(wm)));
        }
        let wm = if all_finished { WATERMARK_END } else { min? };
        if wm > self.emitted {
            self.emitted = wm;
            Some(wm)
        } else {
            None
        }
    }

    pub fn current(&self) -> i64 {
        self.emitted
    }

    /// The largest event time `split` has read, if any (for checkpoints).
    pub fn max_event_time(&self, split: usize) -> Option<i64> {
        Some(self.splits[split].max_event_ms).filter(|m| *m != i64::MIN)
    }

    /// Restores a split's largest event time read (as `observe`, but without making it active: a restored
    /// split that reads nothing may still go idle on time).
    pub fn restore(&mut self, split: usize, max_event_ms: i64) {
        let s = &mut self.splits[split];
        s.max_event_ms = s.max_event_ms.max(max_event_ms);
    }

    /// True when every unfinished split is idle (and at least one is unfinished): the source holds nothing
    /// back, so downstream should stop waiting for its watermark (Flink's idle watermark status).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.idle_timeout_ms > 0
            && self.splits.iter().any(|s| !s.finished)
            && self
                .splits
                .iter()
                .filter(|s| !s.finished)
                .all(|s| now_ms.saturating_sub(s.last_read_ms) >= self.idle_timeout_ms)
    }
}

/// Combines the watermarks of several inputs (the exchange's producers) as their minimum over the inputs
/// that are not idle. An input becomes idle by saying so and active again with its next watermark.
#[derive(Debug, Clone)]
pub struct WatermarkCombiner {
    inputs: Vec<i64>,
    idle: Vec<bool>,
    combined: i64,
}

impl WatermarkCombiner {
    pub fn new(n_inputs: usize) -> WatermarkCombiner {
        WatermarkCombiner { inputs: vec![i64::MIN; n_inputs], idle: vec![false; n_inputs], combined: i64::MIN }
    }

    /// Records input `i`'s watermark (it is active); returns the combined watermark if it advanced.
    pub fn update(&mut self, i: usize, watermark: i64) -> Option<i64> {
        self.idle[i] = false;
        if watermark > self.inputs[i] {
            self.inputs[i] = watermark;
        }
        self.recombine()
    }

    /// Input `i` is idle: it stops holding the combined watermark back. Returns the combined watermark if it
    /// advanced.
    pub fn set_idle(&mut self, i: usize) -> Option<i64> {
        self.idle[i] = true;
        self.recombine()
    }

    /// The minimum over active inputs; when every input is idle, the maximum over all of them (as Flink's
    /// watermark valve does: nothing is coming that could be older than what each input already promised, so
    /// the windows every input has passed may fire).
    fn recombine(&mut self) -> Option<i64> {
        let active = self.inputs.iter().zip(&self.idle).filter(|(_, idle)| !**idle).map(|(w, _)| *w).min();
        let wm = match active {
            Some(min) => min,
            None => *self.inputs.iter().max()?,
        };
        if wm > self.combined {
            self.combined = wm;
            Some(wm)
        } else {
            None
        }
    }

    pub fn current(&self) -> i64 {
        self.combined
    }

    pub fn all_ended(&self) -> bool {
        self.combined == WATERMARK_END
    }

    /// True when every input is idle (and there is at least one).
    pub fn all_idle(&self) -> bool {
        !self.idle.is_empty() && self.idle.iter().all(|i| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_splits_stop_holding_the_watermark_back() {
        let mut w = SplitWatermarks::new(2, 1000, 5000, 0);
        w.observe(0, 10_000, 0);
        assert_eq!(w.advance(0), None, "split 1 has read nothing and is not idle yet");
        w.observe(0, 10_000, 4_000);
        assert_eq!(w.advance(4_999), None);
        assert_eq!(w.advance(5_000), Some(9_000), "split 1 is idle after 5 s");
        w.observe(1, 2_000, 6_000);
        w.observe(0, 20_000, 6_000);
        assert_eq!(w.advance(6_000), None, "split 1 is active again and holds the watermark at 1 s, below 9 s");
        w.observe(1, 30_000, 7_000);
        assert_eq!(w.advance(7_000), Some(19_000));
        w.finish(0);
        assert_eq!(w.advance(7_000), Some(29_000));
        w.finish(1);
        assert_eq!(w.advance(7_000), Some(WATERMARK_END));
    }

    #[test]
    fn idle_inputs_stop_holding_the_combined_watermark_back() {
        let mut c = WatermarkCombiner::new(3);
        assert_eq!(c.update(0, 100), None);
        assert_eq!(c.update(1, 50), None, "input 2 has sent nothing yet");
        assert_eq!(c.set_idle(2), Some(50));
        assert_eq!(c.set_idle(1), Some(100));
        assert_eq!(c.set_idle(0), None, "all idle: nothing advances");
        assert_eq!(c.update(2, 70), None, "an input back from idle cannot move the watermark back");
        assert_eq!(c.update(2, 120), Some(120));
        assert_eq!(c.current(), 120);
    }

    /// When every input is idle, the combined watermark is the largest one: an input that went idle behind
    /// the others does not keep their windows from firing (Flink's valve does the same).
    #[test]
    fn when_every_input_is_idle_the_largest_watermark_counts() {
        let mut c = WatermarkCombiner::new(2);
        assert_eq!(c.update(0, 10), None);
        assert_eq!(c.update(1, 50), Some(10));
        assert_eq!(c.set_idle(1), None, "input 0 is active at 10");
        assert_eq!(c.set_idle(0), Some(50));
        assert_eq!(c.update(0, 20), None, "back from idle, behind: nothing goes back");
        assert_eq!(c.update(0, 60), Some(60), "input 1 is still idle: input 0 alone counts");
    }

    #[test]
    fn a_source_is_idle_when_all_its_unfinished_splits_are() {
        let mut w = SplitWatermarks::new(2, 0, 1000, 0);
        assert!(!w.is_idle(999));
        assert!(w.is_idle(1000));
        w.observe(1, 5, 1500);
        assert!(!w.is_idle(2000));
        w.finish(1);
        assert!(w.is_idle(2000), "the finished split does not count");
        w.finish(0);
        assert!(!w.is_idle(5000), "a finished source is ended, not idle");
    }

    proptest! {
        /// The combined watermark is the minimum of the inputs' maxima, and never goes back.
        #[test]
        fn combiner_is_the_monotone_minimum(updates in proptest::collection::vec((0usize..3, -100i64..100), 0..100)) {
            let mut c = WatermarkCombiner::new(3);
            let mut maxima = [i64::MIN; 3];
            let mut last = i64::MIN;
            for (i, wm) in updates {
                maxima[i] = maxima[i].max(wm);
                let advanced = c.update(i, wm);
                let want = *maxima.iter().min().unwrap();
                prop_assert_eq!(c.current(), want.max(last));
                prop_assert_eq!(advanced.is_some(), want > last);
                last = c.current();
            }
        }
    }
}
