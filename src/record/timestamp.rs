//! TIMESTAMP(3) text: parsing `yyyy-MM-dd HH:mm:ss[.SSS]` (also with a `T`) and writing
//! `yyyy-MM-dd HH:mm:ss.SSS`, UTC, as Flink's JSON format does. Pure arithmetic, no allocation.

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, d| acc * 10 + (d - b'0') as u32))
}

/// Parses `yyyy-MM-dd HH:mm:ss[.S{1,9}]` or with `T` between date and time, optionally with a trailing `Z`,
/// as UTC epoch milliseconds. Fractions beyond milliseconds are truncated. A date alone is midnight.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let b = b.strip_suffix(b"Z").unwrap_or(b);
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y as i64, m) {
        return None;
    }
    let mut ms = days_from_civil(y as i64, m, d) * MS_PER_DAY;
    if b.len() == 10 {
        return Some(ms);
    }
    if (b[10] != b' ' && b[10] != b'T') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    ms += (h as i64 * 3600 + mi as i64 * 60 + s as i64) * 1000;
    if b.len() > 19 {
        let frac = b[19..].strip_prefix(b".")?;
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        digits(frac)?;
        let mut milli = 0i64;
        for i in 0..3 {
            milli = milli * 10 + frac.get(i).map_or(0, |d| (d - b'0') as i64);
        }
        ms += milli;
    }
    Some(ms)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Writes `yyyy-MM-dd HH:mm:ss.SSS` (UTC) for epoch milliseconds.
pub fn write_timestamp(ms: i64, out: &mut Vec<u8>) {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    if (0..=9999).contains(&y) {
        push_padded(out, y as u64, 4);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    out.push(b'-');
    push_padded(out, m as u64, 2);
    out.push(b'-');
    push_padded(out, d as u64, 2);
    out.push(b' ');
    push_padded(out, h as u64, 2);
    out.push(b':');
    push_padded(out, mi as u64, 2);
    out.push(b':');
    push_padded(out, s as u64, 2);
    out.push(b'.');
    push_padded(out, milli as u64, 3);
}

fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let start = out.len();
    for _ in 0..width {
        out.push(b'0' + (v % 10) as u8);
        v /= 10;
    }
    out[start..].reverse();
}

/// `write_timestamp` into a new string, for messages and plans.
pub fn format_timestamp(ms: i64) -> String {
    let mut out = Vec::with_capacity(23);
    write_timestamp(ms, &mut out);
    String::from_utf8(out).expect("timestamps are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_known_instants() {
        let cases = [
            ("1970-01-01 00:00:00.000", 0),
            ("2026-01-01 00:00:00.000", 1_767_225_600_000),
            ("2024-02-29 23:59:59.999", 1_709_251_199_999),
            ("1969-12-31 23:59:59.999", -1),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_timestamp(text), Some(ms), "{text}");
            assert_eq!(format_timestamp(ms), text);
        }
        assert_eq!(parse_timestamp("2026-01-01T00:00:01.5"), Some(1_767_225_601_500));
        assert_eq!(parse_timestamp("2026-01-01T00:00:01Z"), Some(1_767_225_601_000));
        assert_eq!(parse_timestamp("2026-01-01"), Some(1_767_225_600_000));
        for bad in [
            "",
            "2026-13-01 00:00:00",
            "2026-02-30 00:00:00",
            "2026-01-01 24:00:00",
            "2026-01-01 00:00:00.",
            "yesterday",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms));
        }
    }
}
