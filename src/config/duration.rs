//! Durations as config strings: `"500ms"`, `"10s"`, `"2m"`, `"1h"`, `"250us"`.

/// Parses a duration string into microseconds.
pub fn parse_duration_us(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let hint = "write a number and a unit, e.g. \"500ms\", \"10s\", \"2m\" (units: us, ms, s, m, h)";
    let n: f64 = num.parse().map_err(|_| format!("`{text}` is not a duration; {hint}"))?;
    let scale = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" | "min" => 60e6,
        "h" => 3600e6,
        "" => return Err(format!("`{text}` has no unit; {hint}")),
        other => return Err(format!("`{text}` has an unknown unit `{other}`; {hint}")),
    };
    let us = n * scale;
    if !us.is_finite() || us > 1e15 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(us.round() as u64)
}

/// Formats milliseconds compactly for plans and messages: `10 s`, `500 ms`, `2 min`.
pub fn format_ms(ms: i64) -> String {
    if ms != 0 && ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms != 0 && ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms != 0 && ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        for (text, us) in [
            ("500ms", 500_000),
            ("10s", 10_000_000),
            ("2m", 120_000_000),
            ("1h", 3_600_000_000),
            ("0.5s", 500_000),
            ("250us", 250),
        ] {
            assert_eq!(parse_duration_us(text), Ok(us), "{text}");
        }
        for bad in ["10", "ten s", "5 parsecs", ""] {
            assert!(parse_duration_us(bad).is_err(), "{bad}");
        }
    }
}
