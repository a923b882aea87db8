//! Where mirrored objects live: an S3 bucket and prefix (through the AWS SDK, on the control thread), or a
//! local directory. Objects are named by relative keys (`chain/...`, `log/...`). Every S3 call retries
//! throttling (503 SlowDown), timeouts and outages with bounded, jittered backoff until it succeeds or the run
//! stops; only a lasting refusal (access denied, no such bucket) is an error. A local directory's failures
//! are errors at once (a full or read-only disk does not heal by waiting).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::aws::backoff;
use crate::config::{MirrorConfig, MirrorUrl};
use crate::constants::{
    MIRROR_ATTEMPT_TIMEOUT_MS, MIRROR_CONNECT_TIMEOUT_MS, MIRROR_PART_BYTES, MIRROR_READ_TIMEOUT_MS,
};

pub enum Store {
    S3 { client: aws_sdk_s3::Client, bucket: String, prefix: String },
    Local { root: PathBuf },
}

/// Why a call gave up.
#[derive(Debug)]
pub enum StoreError {
    /// The run is stopping.
    Stopped,
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Stopped => write!(f, "the run is stopping"),
            StoreError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// Transient failures seen (each one retried), for the metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub retries: AtomicU64,
}

/// One attempt's outcome: done, worth another try (with why), or a lasting refusal.
enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(String),
}

impl<T> Attempt<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(v) => Attempt::Done(f(v)),
            Attempt::Retry(m) => Attempt::Retry(m),
            Attempt::Fail(m) => Attempt::Fail(m),
        }
    }
}

fn s3_attempt<T, E: ProvideErrorMetadata + std::error::Error + 'static>(
    r: Result<T, SdkError<E, HttpResponse>>,
    what: &str,
) -> Attempt<T> {
    match r {
        Ok(v) => Attempt::Done(v),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let retry = match &e {
                SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
                // A connection that failed or timed out; not a request that could not be made (no region, ...).
                SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
                SdkError::ServiceError(s) => {
                    matches!(
                        s.err().code(),
                        Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "Throttling")
                    ) || status.is_some_and(|c| c >= 500 || c == 429 || c == 409)
                }
                _ => false,
            };
            let message = format!("{what}: {}", DisplayErrorContext(&e));
            if retry {
                Attempt::Retry(message)
            } else {
                Attempt::Fail(message)
            }
        }
    }
}

/// Whether an S3 error is a failed `If-None-Match: *` (the object exists).
fn precondition_failed<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
        || matches!(e.as_service_error().and_then(ProvideErrorMetadata::code), Some("PreconditionFailed"))
}

impl Store {
    pub async fn open(cfg: &MirrorConfig) -> Store {
        match &cfg.url {
            MirrorUrl::Local(root) => Store::Local { root: root.clone() },
            MirrorUrl::S3 { bucket, prefix } => {
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_millis(MIRROR_CONNECT_TIMEOUT_MS))
                    .read_timeout(std::time::Duration::from_millis(MIRROR_READ_TIMEOUT_MS))
                    .operation_attempt_timeout(std::time::Duration::from_millis(MIRROR_ATTEMPT_TIMEOUT_MS))
                    .build();
                // Retries are this module's (bounded, jittered, counted in the metrics), not the SDK's.
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(timeouts)
                    .retry_config(aws_config::retry::RetryConfig::disabled());
                if let Some(r) = &cfg.region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                if let Some(e) = &cfg.endpoint {
                    loader = loader.endpoint_url(e);
                }
                let shared = loader.load().await;
                Store::S3 { client: aws_sdk_s3::Client::new(&shared), bucket: bucket.clone(), prefix: prefix.clone() }
            }
        }
    }

    /// The object's full name, for messages.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Store::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{}", self.s3_key(prefix, key)),
            Store::Local { root } => root.join(key).display().to_string(),
        }
    }

    fn s3_key(&self, prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        }
    }

    /// Retries `attempt` until it is done, refused, or the run stops.
    async fn retrying<T, F, Fut>(&self, stop: &AtomicBool, stats: &StoreStats, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut n = 0;
        loop {
            match attempt().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(m) => return Err(StoreError::Failed(m)),
                Attempt::Retry(m) => {
                    if stop.load(Ordering::Relaxed) {
                        return Err(StoreError::Stopped);
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    if n % 10 == 0 {
                        tracing::warn!("mirror: {m}; retrying");
                    }
                    tokio::time::sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// Stores `bytes` under `key`, replacing what is there (large objects in parts).
    pub async fn put(
        &self,
        key: &str,
        bytes: Arc<Vec<u8>>,
        stop: &AtomicBool,
        stats: &StoreStats,
    ) -> Result<(), StoreError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                write_local(&path, &bytes, false).map(|_| ()).map_err(StoreError::Failed)
            }
            Store::S3 { client, bucket, prefix } => {
                let k = self.s3_key(prefix, key);
                if bytes.len() <= MIRROR_PART_BYTES {
                    return self
                        .retrying(stop, stats, || async {
                            let body = ByteStream::from(bytes.as_ref().clone());
                            s3_attempt(client.put_object().bucket(bucket).key(&k).body(body).send().await, "PutObject")
                        })
                        .await
                        .map(|_| ());
                }
                self.put_multipart(client, bucket, &k, bytes, stop, stats).await
            }
        }
    }

    async fn put_multipart(
        &self,
        client: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        bytes: Arc<Vec<u8>>,
        stop: &AtomicBool,
        stats: &StoreStats,
    ) -> Result<(), StoreError> {
        let created = self
            .retrying(stop, stats, || async {
                s3_attempt(
                    client.create_multipart_upload().bucket(bucket).key(key).send().await,
                    "CreateMultipartUpload",
                )
            })
            .await?;
        let id = created.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        for (i, chunk) in bytes.chunks(MIRROR_PART_BYTES).enumerate() {
            let number = i as i32 + 1;
            let uploaded = self
                .retrying(stop, stats, || async {
                    let body = ByteStream::from(chunk.to_vec());
                    let r = client.upload_part().bucket(bucket).key(key).upload_id(&id).part_number(number).body(body);
                    s3_attempt(r.send().await, "UploadPart")
                })
                .await;
            match uploaded {
                Ok(out) => parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build(),
                ),
                Err(e) => {
                    let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
                    return Err(e);
                }
            }
        }
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        self.retrying(stop, stats, || async {
            let r = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(done.clone());
            s3_attempt(r.send().await, "CompleteMultipartUpload")
        })
        .await
        .map(|_| ())
    }

    /// Stores `bytes` under `key` only if nothing is there (S3: `If-None-Match: *`, atomic); false if
    /// something was.
    pub async fn create(
        &self,
        key: &str,
        bytes: Arc<Vec<u8>>,
        stop: &AtomicBool,
        stats: &StoreStats,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                write_local(&path, &bytes, true).map_err(StoreError::Failed)
            }
            Store::S3 { client, bucket, prefix } => {
                let k = self.s3_key(prefix, key);
                self.retrying(stop, stats, || async {
                    let body = ByteStream::from(bytes.as_ref().clone());
                    match client.put_object().bucket(bucket).key(&k).if_none_match("*").body(body).send().await {
                        Err(e) if precondition_failed(&e) => Attempt::Done(false),
                        r => s3_attempt(r, "PutObject (If-None-Match: *)").map(|_| true),
                    }
                })
                .await
            }
        }
    }

    /// The object under `key`.
    pub async fn get(&self, key: &str, stop: &AtomicBool, stats: &StoreStats) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                std::fs::read(&path).map_err(|e| StoreError::Failed(format!("cannot read {}: {e}", path.display())))
            }
            Store::S3 { client, bucket, prefix } => {
                let k = self.s3_key(prefix, key);
                self.retrying(stop, stats, || async {
                    match s3_attempt(client.get_object().bucket(bucket).key(&k).send().await, "GetObject") {
                        Attempt::Done(out) => match out.body.collect().await {
                            Ok(b) => Attempt::Done(b.into_bytes().to_vec()),
                            Err(e) => Attempt::Retry(format!("GetObject {k}: reading the body: {e}")),
                        },
                        Attempt::Retry(m) => Attempt::Retry(m),
                        Attempt::Fail(m) => Attempt::Fail(m),
                    }
                })
                .await
            }
        }
    }

    /// The keys under `dir/` (relative to the mirror, e.g. `chain/00000000000000000001.json`), sorted.
    pub async fn list(&self, dir: &str, stop: &AtomicBool, stats: &StoreStats) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Local { root } => {
                let path = root.join(dir);
                let mut out = Vec::new();
                let entries = match std::fs::read_dir(&path) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(StoreError::Failed(format!("cannot list {}: {e}", path.display()))),
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if !name.starts_with('.') {
                        out.push(format!("{dir}/{name}"));
                    }
                }
                out.sort();
                Ok(out)
            }
            Store::S3 { client, bucket, prefix } => {
                let full = self.s3_key(prefix, &format!("{dir}/"));
                let strip = full.len() - dir.len() - 1;
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let page = self
                        .retrying(stop, stats, || async {
                            let r = client
                                .list_objects_v2()
                                .bucket(bucket)
                                .prefix(&full)
                                .set_continuation_token(token.clone());
                            s3_attempt(r.send().await, "ListObjectsV2")
                        })
                        .await?;
                    out.extend(page.contents().iter().filter_map(|o| o.key()).map(|k| k[strip..].to_string()));
                    match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Deletes the object under `key` (nothing if it is gone).
    pub async fn delete(&self, key: &str, stop: &AtomicBool, stats: &StoreStats) -> Result<(), StoreError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(StoreError::Failed(format!("cannot delete {}: {e}", path.display()))),
                }
            }
            Store::S3 { client, bucket, prefix } => {
                let k = self.s3_key(prefix, key);
                self.retrying(stop, stats, || async {
                    s3_attempt(client.delete_object().bucket(bucket).key(&k).send().await, "DeleteObject")
                })
                .await
                .map(|_| ())
            }
        }
    }
}

/// Writes `path` atomically: a temporary file, synced, then renamed (`exclusive`: linked, failing if `path`
/// exists; `Ok(false)` then). Directories are created as needed.
fn write_local(path: &Path, bytes: &[u8], exclusive: bool) -> Result<bool, String> {
    use std::io::Write as _;
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let dir = path.parent().expect("a key has a directory").to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| fail("create the directory of", e))?;
    let name = path.file_name().expect("a key has a name").to_string_lossy().to_string();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create a temporary file for", e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| fail("write", e))?;
    let placed = if exclusive {
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(fail("create", e)),
        }
    } else {
        std::fs::rename(&tmp, path).map(|_| true).map_err(|e| fail("rename into", e))
    };
    let _ = std::fs::remove_file(&tmp);
    let placed = placed?;
    crate::state::sync_dir(&dir)?;
    Ok(placed)
}
