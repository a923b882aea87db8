//! `[mirror]`: where the checkpoints are mirrored, so that a job resumes on another machine.
//!
//! ```toml
//! [mirror]
//! url = "s3://bucket/prefix"   # or "file:///path" (a directory, e.g. a mounted network volume)
//! region = "eu-west-1"         # optional: else AWS_REGION / the profile's region
//! endpoint = "https://..."     # optional: an S3-compatible store; else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
//! keep = 3                     # mirrored checkpoints retained
//! backlog = "4GiB"             # not yet mirrored bytes past which the sources pause
//! ```

use std::path::{Path, PathBuf};

use super::section::Section;
use super::{collect, refuse_secrets, ConfigError};
use crate::constants::{MIRROR_BACKLOG_DEFAULT_BYTES, MIRROR_KEEP_DEFAULT};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorUrl {
    /// A bucket and a key prefix (no leading or trailing `/`; may be empty).
    S3 { bucket: String, prefix: String },
    /// A directory.
    Local(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub url: MirrorUrl,
    /// The URL as written, for messages.
    pub label: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Mirrored checkpoints retained (the newest ones); older ones and what only they need are deleted.
    pub keep: usize,
    /// Bytes written locally and not yet mirrored past which the sources are paused.
    pub backlog_bytes: u64,
}

pub(super) fn mirror_config(table: &toml::Table, base: &Path, errors: &mut Vec<ConfigError>) -> Option<MirrorConfig> {
    let mut s = Section::new("mirror", table);
    refuse_secrets(&mut s, errors);
    let url = collect(s.required_str("url", "\"s3://my-bucket/jobs/orders\""), errors);
    let region = collect(s.str("region"), errors).flatten().map(str::to_string);
    let endpoint = collect(s.str("endpoint"), errors).flatten().map(str::to_string);
    let keep = collect(s.u64("keep"), errors).flatten().unwrap_or(MIRROR_KEEP_DEFAULT as u64);
    let backlog = match collect(s.str("backlog"), errors).flatten() {
        None => Some(MIRROR_BACKLOG_DEFAULT_BYTES),
        Some(text) => parse_bytes(text).map_err(|m| errors.push(s.error("backlog", m))).ok(),
    };
    if keep == 0 {
        errors
            .push(s.error("keep", "must be at least 1: the newest mirrored checkpoint is what a restart resumes from"));
    }
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            errors.push(
                s.error("endpoint", format!("is `{e}`; write a URL such as \"https://s3.eu-west-1.amazonaws.com\"")),
            );
        }
    }
    errors.extend(s.unknown_keys("[mirror]"));
    let text = url?;
    let parsed = parse_url(text, base).map_err(|m| errors.push(s.error("url", m))).ok()?;
    if matches!(parsed, MirrorUrl::Local(_)) && (region.is_some() || endpoint.is_some()) {
        errors.push(s.error("url", "is a local directory: `region` and `endpoint` only apply to s3:// mirrors"));
    }
    Some(MirrorConfig {
        url: parsed,
        label: text.to_string(),
        region,
        endpoint,
        keep: keep.max(1) as usize,
        backlog_bytes: backlog?,
    })
}

/// A size: `"512MiB"`, `"4GiB"`, `"800MB"`, `"65536"` (bytes).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size; write e.g. \"512MiB\" or \"4GiB\"")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size; write e.g. \"512MiB\" or \"4GiB\""))
}

fn parse_url(text: &str, base: &Path) -> Result<MirrorUrl, String> {
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "`{text}` names bucket `{bucket}`; a bucket name has 3 to 63 lowercase letters, digits, `-` or `.`"
            ));
        }
        return Ok(MirrorUrl::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
    }
    if let Some(path) = text.strip_prefix("file://") {
        if path.is_empty() {
            return Err(format!("`{text}` names no directory; write e.g. \"file:///var/lib/shardflow-mirror\""));
        }
        return Ok(MirrorUrl::Local(base.join(path)));
    }
    Err(format!("`{text}` is not a mirror URL; write \"s3://bucket/prefix\" or \"file:///path\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirror_urls() {
        let base = Path::new("/etc");
        assert_eq!(
            parse_url("s3://my-bucket/jobs/orders/", base),
            Ok(MirrorUrl::S3 { bucket: "my-bucket".into(), prefix: "jobs/orders".into() })
        );
        assert_eq!(
            parse_url("s3://my-bucket", base),
            Ok(MirrorUrl::S3 { bucket: "my-bucket".into(), prefix: "".into() })
        );
        assert_eq!(parse_url("file:///var/m", base), Ok(MirrorUrl::Local("/var/m".into())));
        assert_eq!(parse_url("file://m", base), Ok(MirrorUrl::Local("/etc/m".into())));
        assert!(parse_url("s3://My_Bucket/x", base).unwrap_err().contains("bucket `My_Bucket`"));
        assert!(parse_url("gs://b/x", base).unwrap_err().contains("not a mirror URL"));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("800MB"), Ok(800_000_000));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("0MiB").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }
}
