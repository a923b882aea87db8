//! Event-time window assignment, as pure functions of a timestamp: tumbling, hopping (sliding), cumulating
//! and session windows, epoch-aligned in UTC, with Flink's semantics.
//!
//! Tumbling, hopping and cumulating windows are evaluated through *slices* (Flink's window slicing): each
//! record falls in exactly one slice, state is kept per slice, and a window is the merge of its slices when it
//! fires. So a hop of size 10 s and slide 2 s keeps one accumulator per key and 2 s slice, never one per
//! window per record. Session windows merge per key instead (see `operator::window_agg`).
//!
//! Invariant: a window `[start, end)` fires when the watermark reaches `end - 1` (its max timestamp).

use std::fmt;

/// A window of event time, `[start, end)` in epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The last timestamp inside the window: it fires when the watermark reaches this.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    Tumble { size_ms: i64 },
    Hop { slide_ms: i64, size_ms: i64 },
    Cumulate { step_ms: i64, size_ms: i64 },
    Session { gap_ms: i64 },
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Start of the slot of width `size` that contains `ts` (floor division, also for negative times).
fn slot_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

impl WindowSpec {
    /// Checks the parameters; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowSpec::Tumble { size_ms } if size_ms <= 0 => Err("a TUMBLE window's size must be positive".into()),
            WindowSpec::Hop { slide_ms, size_ms } if slide_ms <= 0 || size_ms < slide_ms => {
                Err("a HOP window's slide must be positive and its size at least the slide".into())
            }
            WindowSpec::Cumulate { step_ms, size_ms } if step_ms <= 0 || size_ms <= 0 || size_ms % step_ms != 0 => {
                Err("a CUMULATE window's max size must be a positive multiple of its step".into())
            }
            WindowSpec::Session { gap_ms } if gap_ms <= 0 => Err("a SESSION window's gap must be positive".into()),
            _ => Ok(()),
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }

    /// Width of a slice. Every window is a whole number of consecutive slices.
    pub fn slice_ms(&self) -> i64 {
        match *self {
            WindowSpec::Tumble { size_ms } => size_ms,
            WindowSpec::Hop { slide_ms, size_ms } => gcd(slide_ms, size_ms),
            WindowSpec::Cumulate { step_ms, .. } => step_ms,
            WindowSpec::Session { gap_ms } => gap_ms,
        }
    }

    /// End of the slice holding `ts`.
    pub fn slice_end(&self, ts: i64) -> i64 {
        let s = self.slice_ms();
        slot_start(ts, s) + s
    }

    /// End of the first window that contains the slice ending at `slice_end`: the first to fire.
    pub fn first_window_end(&self, slice_end: i64) -> i64 {
        match *self {
            // Hop windows end at `size + k * slide`: the first such end at or after the slice's end.
            WindowSpec::Hop { slide_ms, size_ms } => slice_end + (size_ms - slice_end).rem_euclid(slide_ms),
            _ => slice_end,
        }
    }

    /// End of the last window that contains the slice ending at `slice_end`: after it fires, the slice can
    /// be dropped; a record whose slice's last window has fired is late.
    pub fn last_window_end(&self, slice_end: i64) -> i64 {
        match *self {
            WindowSpec::Tumble { .. } | WindowSpec::Session { .. } => slice_end,
            WindowSpec::Hop { slide_ms, size_ms } => {
                // The last window still holding the slice starts at the slice's start.
                let latest = slice_end - self.slice_ms() + size_ms;
                latest - (latest - size_ms).rem_euclid(slide_ms)
            }
            WindowSpec::Cumulate { size_ms, .. } => slot_start(slice_end - 1, size_ms) + size_ms,
        }
    }

    /// Ends of all windows containing the slice ending at `slice_end`, in order.
    pub fn window_ends(&self, slice_end: i64) -> impl Iterator<Item = i64> {
        let step = match *self {
            WindowSpec::Hop { slide_ms, .. } => slide_ms,
            WindowSpec::Cumulate { step_ms, .. } => step_ms,
            WindowSpec::Tumble { size_ms } => size_ms,
            WindowSpec::Session { gap_ms } => gap_ms,
        };
        let (first, last) = (self.first_window_end(slice_end), self.last_window_end(slice_end));
        (0..).map(move |i| first + i * step).take_while(move |e| *e <= last)
    }

    /// The window ending at `end` (for session windows, only meaningful with the session's own start).
    pub fn window_of_end(&self, end: i64) -> Window {
        let start = match *self {
            WindowSpec::Tumble { size_ms } => end - size_ms,
            WindowSpec::Hop { size_ms, .. } => end - size_ms,
            WindowSpec::Cumulate { size_ms, .. } => slot_start(end - 1, size_ms),
            WindowSpec::Session { gap_ms } => end - gap_ms,
        };
        Window { start, end }
    }

    /// The slice ends that make up the window ending at `end`: `(first, last)`, inclusive, step `slice_ms`.
    pub fn slices_of_window(&self, end: i64) -> (i64, i64) {
        let w = self.window_of_end(end);
        (w.start + self.slice_ms(), end)
    }

    /// Every window containing `ts` (tumble, hop, cumulate), by definition: for tests and for reference.
    pub fn windows_of(&self, ts: i64) -> Vec<Window> {
        match *self {
            WindowSpec::Tumble { size_ms } => {
                let start = slot_start(ts, size_ms);
                vec![Window { start, end: start + size_ms }]
            }
            WindowSpec::Hop { slide_ms, size_ms } => {
                let mut out = Vec::new();
                let mut start = slot_start(ts, slide_ms);
                while start > ts - size_ms {
                    out.push(Window { start, end: start + size_ms });
                    start -= slide_ms;
                }
                out.reverse();
                out
            }
            WindowSpec::Cumulate { step_ms, size_ms } => {
                let start = slot_start(ts, size_ms);
                (1..=size_ms / step_ms)
                    .map(|k| Window { start, end: start + k * step_ms })
                    .filter(|w| w.end > ts)
                    .collect()
            }
            WindowSpec::Session { gap_ms } => vec![Window { start: ts, end: ts + gap_ms }],
        }
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = crate::config::duration::format_ms;
        match *self {
            WindowSpec::Tumble { size_ms } => write!(f, "TUMBLE(size {})", d(size_ms)),
            WindowSpec::Hop { slide_ms, size_ms } => write!(f, "HOP(slide {}, size {})", d(slide_ms), d(size_ms)),
            WindowSpec::Cumulate { step_ms, size_ms } => {
                write!(f, "CUMULATE(step {}, max size {})", d(step_ms), d(size_ms))
            }
            WindowSpec::Session { gap_ms } => write!(f, "SESSION(gap {})", d(gap_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> impl Strategy<Value = WindowSpec> {
        prop_oneof![
            (1i64..50).prop_map(|size_ms| WindowSpec::Tumble { size_ms }),
            (1i64..20, 1i64..6).prop_map(|(slide_ms, k)| WindowSpec::Hop { slide_ms, size_ms: slide_ms * k }),
            (1i64..20, 0i64..40).prop_map(|(slide_ms, extra)| WindowSpec::Hop { slide_ms, size_ms: slide_ms + extra }),
            (1i64..20, 1i64..6).prop_map(|(step_ms, k)| WindowSpec::Cumulate { step_ms, size_ms: step_ms * k }),
        ]
    }

    proptest! {
        /// The windows reached through the record's slice are exactly the windows that contain it.
        #[test]
        fn slices_reach_exactly_the_windows_of_a_record(spec in spec(), ts in -1000i64..1000) {
            let slice_end = spec.slice_end(ts);
            prop_assert!(slice_end - spec.slice_ms() <= ts && ts < slice_end);
            let via_slices: Vec<Window> = spec.window_ends(slice_end).map(|e| spec.window_of_end(e)).collect();
            prop_assert_eq!(&via_slices, &spec.windows_of(ts));
            prop_assert_eq!(via_slices.last().map(|w| w.end), Some(spec.last_window_end(slice_end)));
            for w in &via_slices {
                let (first, last) = spec.slices_of_window(w.end);
                prop_assert!(first <= slice_end && slice_end <= last);
                prop_assert_eq!((last - first) % spec.slice_ms(), 0);
            }
        }

        /// Brute force: a window of the definition contains ts iff start <= ts < end, aligned to the epoch.
        #[test]
        fn windows_match_the_definition(spec in spec(), ts in -1000i64..1000) {
            let got = spec.windows_of(ts);
            let mut want = Vec::new();
            for start in -3000i64..3000 {
                for end in start + 1..start + 130 {
                    let w = Window { start, end };
                    let is_window = match spec {
                        WindowSpec::Tumble { size_ms } => start.rem_euclid(size_ms) == 0 && end - start == size_ms,
                        WindowSpec::Hop { slide_ms, size_ms } => start.rem_euclid(slide_ms) == 0 && end - start == size_ms,
                        WindowSpec::Cumulate { step_ms, size_ms } => {
                            start.rem_euclid(size_ms) == 0 && (end - start) % step_ms == 0 && end - start <= size_ms
                        }
                        WindowSpec::Session { .. } => false,
                    };
                    if is_window && start <= ts && ts < end {
                        want.push(w);
                    }
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn validates_parameters() {
        assert!(WindowSpec::Cumulate { step_ms: 3, size_ms: 10 }.validate().is_err());
        assert!(WindowSpec::Tumble { size_ms: 0 }.validate().is_err());
        assert!(WindowSpec::Hop { slide_ms: 3, size_ms: 10 }.validate().is_ok());
        assert!(WindowSpec::Hop { slide_ms: 3, size_ms: 2 }.validate().is_err());
    }
}
