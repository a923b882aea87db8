//! Latency by percentile as an SVG image, drawn the way HdrHistogram's plotters draw it: the x axis is
//! 1/(1-percentile) on a log scale (so 90%, 99%, 99.9%, ... are equally spaced), the y axis latency.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// One curve: a label and a nanosecond histogram.
pub struct Series<'a> {
    pub label: String,
    pub histogram: &'a Histogram<u64>,
}

/// A unit that makes `max_ns` read well: (name, nanoseconds per unit).
fn unit_for(max_ns: f64) -> (&'static str, f64) {
    if max_ns >= 2e9 {
        ("s", 1e9)
    } else if max_ns >= 2e6 {
        ("ms", 1e6)
    } else {
        ("µs", 1e3)
    }
}

/// A round step for about `n` grid lines up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// The SVG text of the plot.
pub fn percentile_svg(title: &str, series: &[Series<'_>]) -> String {
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            if s.histogram.is_empty() {
                return Vec::new();
            }
            let mut pts: Vec<(f64, f64)> = s
                .histogram
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| ((1.0 / (1.0 - v.quantile_iterated_to())).log10(), v.value_iterated_to() as f64))
                .collect();
            // The maximum, one tick past the last finite percentile.
            let last_x = pts.last().map_or(0.0, |p| p.0);
            pts.push((last_x + 0.1, s.histogram.max() as f64));
            pts
        })
        .collect();
    let max_x = points.iter().flatten().map(|p| p.0).fold(2.0f64, f64::max).ceil();
    let max_ns = points.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max);
    let (unit, per) = unit_for(max_ns);
    let step = nice_step(max_ns / per, 6.0);
    let max_y = (max_ns / per / step).ceil() * step;
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x_of = |x: f64| LEFT + x / max_x * w;
    let y_of = |ns: f64| TOP + h - (ns / per) / max_y * h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and ticks.
    for nines in 0..=max_x as u32 {
        let x = x_of(f64::from(nines));
        let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, TOP + h);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + h + 20.0,
            percentile_label(nines)
        );
    }
    let mut y = 0.0;
    while y <= max_y + step / 2.0 {
        let py = TOP + h - y / max_y * h;
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##, LEFT + w);
        let _ =
            writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 8.0, py + 4.0, trim(y));
        y += step;
    }
    let _ = writeln!(svg, r##"<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency ({unit})</text>"#,
        TOP + h / 2.0,
        TOP + h / 2.0
    );
    // Curves and legend.
    for (i, (s, pts)) in series.iter().zip(&points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !pts.is_empty() {
            let path: Vec<String> = pts.iter().map(|(x, ns)| format!("{:.1},{:.1}", x_of(*x), y_of(*ns))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = TOP + 18.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
            LEFT + 12.0,
            ly - 4.0,
            LEFT + 36.0,
            ly - 4.0
        );
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#, LEFT + 42.0, escape(&s.label));
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_has_a_curve_per_series_on_a_percentile_axis() {
        let mut a = crate::metrics::latency::new_histogram();
        let mut b = crate::metrics::latency::new_histogram();
        for i in 1..=10_000u64 {
            a.record(i * 100).unwrap();
            b.record(i * 300).unwrap();
        }
        let svg = percentile_svg(
            "q0 <200k/s>",
            &[Series { label: "a".into(), histogram: &a }, Series { label: "b".into(), histogram: &b }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("q0 &lt;200k/s&gt;"), "the title is escaped");
        for label in ["0%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "tick {label} missing");
        }
        // The largest value is 3 ms: the axis is in milliseconds.
        assert!(svg.contains("latency (ms)"));
        // Every point lies inside the plot area.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line.split("points=\"").nth(1).unwrap().trim_end_matches("\"/>");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y), "{p}");
            }
        }
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 6.0), 2.0);
        assert_eq!(nice_step(0.9, 6.0), 0.2);
    }
}
