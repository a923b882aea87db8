//! The `.hgrm` text format: a histogram's percentile distribution exactly as HdrHistogram's
//! `outputPercentileDistribution` prints it (5 ticks per half distance), which HdrHistogram's plotters read.
//! Values are written in milliseconds.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Nanoseconds per written unit (milliseconds, the plotters' default axis).
const NS_PER_UNIT: f64 = 1e6;
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile distribution of a nanosecond histogram, in milliseconds.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / NS_PER_UNIT;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(out, "{value:>12.6} {q:2.12} {total:>10} {:>14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:>12.6} {q:2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.6}, StdDeviation   = {:>12.6}]",
        h.mean() / NS_PER_UNIT,
        h.stdev() / NS_PER_UNIT
    );
    let _ = writeln!(out, "#[Max     = {:>12.6}, Total count    = {:>12}]", h.max() as f64 / NS_PER_UNIT, h.len());
    let _ = writeln!(out, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), sub_buckets(h));
    out
}

/// HdrHistogram's sub-bucket count for the histogram's precision: 2^ceil(log2(2 * 10^sigfig)).
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_reads_like_hdrhistograms_own() {
        let mut h = crate::metrics::latency::new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let text = percentile_distribution(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines[1], "");
        // Rows: value, percentile, running count and 1/(1-p), both rising; the last row is the max at 1.0.
        let rows: Vec<Vec<f64>> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20, "{text}");
        assert!(rows.windows(2).all(|w| w[0][0] <= w[1][0] && w[0][1] < w[1][1] && w[0][2] <= w[1][2]), "{text}");
        let median = rows.iter().find(|r| r[1] >= 0.5).unwrap();
        assert!((median[0] - 0.5).abs() < 0.001, "the median is 500 us = 0.5 ms: {text}");
        let last = rows.last().unwrap();
        assert_eq!((last.len(), last[1], last[2]), (3, 1.0, 1000.0), "{text}");
        assert!((last[0] - 1.0).abs() < 0.001);
        assert!(text.contains("#[Max     =     1.000"), "{text}");
        assert!(text.contains("Total count    =         1000]"), "{text}");
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }
}
