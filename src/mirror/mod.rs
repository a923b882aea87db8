//! The S3 mirror: every completed checkpoint's log bytes and manifest are copied to an object store by the
//! control thread, so that a job resumes on another machine; fencing makes sure two instances never both
//! publish checkpoints under one prefix.
//!
//! Layout under the prefix:
//! - `log/g<generation>/<segment file>/<from>-<to>`: a chunk, the bytes `[from, to)` of a local log segment,
//!   uploaded once (segments are append-only, so a chunk never changes). The generation in the key keeps a
//!   fenced instance's uploads from ever overwriting its successor's.
//! - `chain/<index>.json`: the *chain*, one entry per publication, created with `If-None-Match: *` at the
//!   index after the newest the instance knows. Whoever creates index n+1 first wins it; the other learns it
//!   was superseded. An entry is a `claim` (an instance starting, with a new generation) or a `checkpoint`;
//!   both carry the checkpoint to resume from (its manifest and the chunks holding its log), so the newest
//!   entry alone says where a job resumes.
//!
//! Order: an entry is created only after every chunk it names is stored, so the chain never names an object
//! that is not there. Sink output of an epoch is committed only once its checkpoint is mirrored (the
//! shards read [`MirrorProgress::mirrored`]), so a job resumed from the mirror never finds output committed
//! past the checkpoint it resumes from.

pub mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::manifest::{list_manifests, read_manifest, write_manifest, Manifest, MANIFEST_DIR};
use crate::config::MirrorConfig;
use crate::constants::{MIRROR_CHUNK_BYTES_MAX, MIRROR_CLAIM_ATTEMPTS, MIRROR_DOWNLOAD_CONCURRENCY};
use crate::state::LOG_DIR;
use store::{Store, StoreError, StoreStats};

const CHAIN_DIR: &str = "chain";
/// The file in the state directory naming the generation that wrote its checkpoints.
const LOCAL_GENERATION_FILE: &str = "mirror-generation";

/// A chunk of a log segment in the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub file: String,
    pub from: u64,
    pub to: u64,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Claim,
    Checkpoint,
}

/// A checkpoint as mirrored: its manifest and the chunks that hold the log it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirrored {
    pub manifest: Manifest,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub generation: u64,
    pub kind: EntryKind,
    /// The checkpoint a job resumes from after this entry (none: nothing was checkpointed yet).
    pub checkpoint: Option<Mirrored>,
}

fn chain_key(index: u64) -> String {
    format!("{CHAIN_DIR}/{index:020}.json")
}

fn parse_chain_key(key: &str) -> Option<u64> {
    key.strip_prefix(CHAIN_DIR)?.strip_prefix('/')?.strip_suffix(".json")?.parse().ok()
}

fn chunk_key(generation: u64, file: &str, from: u64, to: u64) -> String {
    format!("log/g{generation:08}/{file}/{from:016}-{to:016}")
}

/// What the daemon and the shards read of the mirror's progress.
#[derive(Debug, Default)]
pub struct MirrorProgress {
    /// The newest epoch whose checkpoint is in the mirror.
    pub mirrored: AtomicU64,
    /// Set when another instance took the prefix over: this one must stop at once.
    pub superseded: AtomicBool,
    /// Why the mirror stopped the run (superseded, or a lasting refusal).
    pub error: std::sync::Mutex<Option<String>>,
    pub bytes_uploaded: AtomicU64,
    pub objects_uploaded: AtomicU64,
    pub stats: StoreStats,
}

pub enum Published {
    Done,
    /// Another instance took the prefix over: nothing was published, and this one must stop.
    Superseded,
}

pub enum PublishError {
    /// The local checkpoint is gone (a newer one replaced it): mirror the newer one.
    Local(String),
    /// The store refused, or the run is stopping.
    Store(String),
}

/// The mirror of one state directory, owned by the control thread.
pub struct Mirror {
    pub label: String,
    store: Arc<Store>,
    keep: usize,
    generation: u64,
    /// The index of the newest chain entry this instance created, and of its claim.
    index: u64,
    claim_index: u64,
    /// Per segment file, the chunks in the mirror this instance may name (its own and those of the
    /// checkpoint it resumed from).
    chunks: BTreeMap<String, Vec<Chunk>>,
    /// Checkpoints published by this instance, oldest first, with the keys of the chunks they name.
    published: Vec<(u64, Vec<String>)>,
    pub progress: Arc<MirrorProgress>,
}

impl Mirror {
    pub async fn open(cfg: &MirrorConfig) -> Mirror {
        Mirror {
            label: cfg.label.clone(),
            store: Arc::new(Store::open(cfg).await),
            keep: cfg.keep,
            generation: 0,
            index: 0,
            claim_index: 0,
            chunks: BTreeMap::new(),
            published: Vec::new(),
            progress: Arc::default(),
        }
    }

    fn fail(&self, what: &str, e: StoreError) -> String {
        format!("mirror {}: {what}: {e}", self.label)
    }

    /// The newest chain entry, if any.
    async fn newest_entry(&self, stop: &AtomicBool) -> Result<Option<Entry>, String> {
        let stats = &self.progress.stats;
        let keys = self.store.list(CHAIN_DIR, stop, stats).await.map_err(|e| self.fail("cannot list the chain", e))?;
        let Some(index) = keys.iter().filter_map(|k| parse_chain_key(k)).max() else { return Ok(None) };
        let key = chain_key(index);
        let bytes = self.store.get(&key, stop, stats).await.map_err(|e| self.fail("cannot read the chain", e))?;
        let format = crate::checkpoint::manifest::format_version_of(&bytes);
        if let Some(v) = format.filter(|v| *v != u64::from(crate::checkpoint::manifest::FORMAT_VERSION)) {
            let what = format!("mirror {}: chain entry {}", self.label, self.store.describe(&key));
            return Err(crate::checkpoint::manifest::format_refusal(&what, v));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "mirror {}: {} is not a chain entry ({e}); it may be damaged",
                self.label,
                self.store.describe(&key)
            )
        })
    }

    /// At start, before recovery: decides where the job resumes from and claims a new generation.
    ///
    /// An empty (or missing) state directory is filled with the newest mirrored checkpoint. A state directory
    /// written by the generation that published the newest entry is this job's own history (possibly ahead
    /// of the mirror): it is used as it is. One written by another generation, or by no mirrored run, while
    /// the mirror holds checkpoints, is refused: it is not the history the mirror continues.
    pub async fn claim(&mut self, state_dir: &Path, stop: &Arc<AtomicBool>) -> Result<(), String> {
        let local = list_manifests(&state_dir.join(MANIFEST_DIR))?;
        let local_generation = read_local_generation(state_dir)?;
        // Claim first, download after: once the claim is in, the instance it supersedes cannot publish.
        let mut attempts = 0;
        let (index, generation, resumed) = loop {
            let newest = self.newest_entry(stop).await?;
            let resumed: Option<Mirrored> = match &newest {
                None => None,
                Some(e) if local.is_empty() || local_generation == Some(e.generation) => e.checkpoint.clone(),
                Some(e) => {
                    return Err(format!(
                        "{} holds checkpoints that are not the history mirror {} continues (its newest entry is generation {}, the state directory's is {}): another instance has run on this mirror since. Empty {} to resume from the mirror, or point [mirror] url elsewhere to keep this state",
                        state_dir.display(),
                        self.label,
                        e.generation,
                        local_generation.map_or("none".to_string(), |g| g.to_string()),
                        state_dir.display()
                    ));
                }
            };
            let (index, generation) = newest.as_ref().map_or((1, 1), |e| (e.index + 1, e.generation + 1));
            let entry = Entry { index, generation, kind: EntryKind::Claim, checkpoint: resumed.clone() };
            let bytes = Arc::new(serde_json::to_vec_pretty(&entry).expect("an entry encodes"));
            let created = self
                .store
                .create(&chain_key(index), bytes, stop, &self.progress.stats)
                .await
                .map_err(|e| self.fail("cannot claim a generation", e))?;
            if created {
                break (index, generation, resumed);
            }
            // The running instance published meanwhile (or another one claimed): look again.
            attempts += 1;
            if attempts >= MIRROR_CLAIM_ATTEMPTS {
                return Err(format!(
                    "mirror {}: the chain kept moving while this instance tried to claim it ({attempts} attempts): is another instance starting on the same prefix?",
                    self.label
                ));
            }
        };
        write_local_generation(state_dir, generation)?;
        if local.is_empty() {
            if let Some(m) = &resumed {
                self.download(m, state_dir, stop).await?;
            }
        }
        self.generation = generation;
        self.index = index;
        self.claim_index = index;
        if let Some(m) = &resumed {
            for c in &m.chunks {
                self.chunks.entry(c.file.clone()).or_default().push(c.clone());
            }
            self.progress.mirrored.store(m.manifest.epoch, Ordering::SeqCst);
        }
        // The claim is this instance's first entry: garbage collection counts it like a publication, so the
        // chunks of the checkpoint it resumed from go once no retained checkpoint names them.
        let resumed_keys = resumed.as_ref().map_or(Vec::new(), |m| m.chunks.iter().map(|c| c.key.clone()).collect());
        self.published.push((resumed.as_ref().map_or(0, |m| m.manifest.epoch), resumed_keys));
        tracing::info!(
            "mirror {}: generation {generation} claimed (chain entry {index}){}",
            self.label,
            resumed.map_or(String::new(), |m| format!("; newest mirrored checkpoint: {}", m.manifest.epoch))
        );
        Ok(())
    }

    /// Writes a mirrored checkpoint into an empty state directory: its chunks at their offsets in the
    /// segment files, then its manifest.
    async fn download(&self, m: &Mirrored, state_dir: &Path, stop: &Arc<AtomicBool>) -> Result<(), String> {
        let started = std::time::Instant::now();
        let log_dir = state_dir.join(LOG_DIR);
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
        let total: u64 = m.chunks.iter().map(|c| c.to - c.from).sum();
        let mut done = 0u64;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        // Chunks are fetched MIRROR_DOWNLOAD_CONCURRENCY at a time, each written at its offset as it arrives.
        let mut pending = m.chunks.iter().cloned();
        let mut fetching = tokio::task::JoinSet::new();
        loop {
            while fetching.len() < MIRROR_DOWNLOAD_CONCURRENCY {
                let Some(c) = pending.next() else { break };
                let (store, stop, progress) = (self.store.clone(), stop.clone(), self.progress.clone());
                fetching.spawn(async move {
                    let got = store.get(&c.key, &stop, &progress.stats).await;
                    (c, got)
                });
            }
            let Some(joined) = fetching.join_next().await else { break };
            let (c, got) = joined.map_err(|e| format!("mirror {}: a download task failed: {e}", self.label))?;
            let bytes = got.map_err(|e| self.fail(&format!("cannot read {}", self.store.describe(&c.key)), e))?;
            if bytes.len() as u64 != c.to - c.from {
                return Err(format!(
                    "mirror {}: {} holds {} bytes, its chain entry says {}; the mirror is damaged",
                    self.label,
                    self.store.describe(&c.key),
                    bytes.len(),
                    c.to - c.from
                ));
            }
            write_at(&log_dir.join(&c.file), c.from, &bytes)?;
            done += bytes.len() as u64;
            if terminal {
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                eprint!("\rresuming from mirror {}: {done} of {total} bytes ({pct}%)", self.label);
            }
        }
        if terminal {
            eprintln!();
        }
        for file in m.chunks.iter().map(|c| &c.file).collect::<std::collections::BTreeSet<_>>() {
            let path = log_dir.join(file);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
        }
        crate::state::sync_dir(&log_dir)?;
        write_manifest(&state_dir.join(MANIFEST_DIR), &m.manifest)?;
        tracing::info!(
            "resumed checkpoint {} from mirror {}: {} chunks, {total} bytes in {:.1} s",
            m.manifest.epoch,
            self.label,
            m.chunks.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Mirrors the checkpoint of `manifest` (completed in `state_dir`): uploads the log bytes it names that
    /// are not in the mirror yet, then publishes it as the next chain entry.
    pub async fn publish(
        &mut self,
        state_dir: &Path,
        manifest: &Manifest,
        stop: &AtomicBool,
    ) -> Result<Published, PublishError> {
        let log_dir = state_dir.join(LOG_DIR);
        let mut named = Vec::new();
        for range in manifest.shards.iter().flat_map(|s| &s.log) {
            let have = self.chunks.entry(range.file.clone()).or_default();
            // How far the chunks in hand cover the range contiguously from its start.
            let mut covered = range.from;
            for c in have.iter() {
                if c.from <= covered && c.to > covered {
                    covered = c.to;
                }
            }
            while covered < range.to {
                let end = range.to.min(covered + MIRROR_CHUNK_BYTES_MAX);
                let bytes = read_at(&log_dir.join(&range.file), covered, end).map_err(PublishError::Local)?;
                let key = chunk_key(self.generation, &range.file, covered, end);
                let n = bytes.len() as u64;
                self.store.put(&key, Arc::new(bytes), stop, &self.progress.stats).await.map_err(|e| {
                    PublishError::Store(self.fail(&format!("cannot upload {}", self.store.describe(&key)), e))
                })?;
                self.progress.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
                self.progress.objects_uploaded.fetch_add(1, Ordering::Relaxed);
                let have = self.chunks.get_mut(&range.file).expect("inserted above");
                have.push(Chunk { file: range.file.clone(), from: covered, to: end, key });
                have.sort_by_key(|c| c.from);
                covered = end;
            }
            let have = &self.chunks[&range.file];
            named.extend(have.iter().filter(|c| c.from < range.to && c.to > range.from).cloned());
        }
        let index = self.index + 1;
        let keys: Vec<String> = named.iter().map(|c| c.key.clone()).collect();
        let entry = Entry {
            index,
            generation: self.generation,
            kind: EntryKind::Checkpoint,
            checkpoint: Some(Mirrored { manifest: manifest.clone(), chunks: named }),
        };
        let bytes = Arc::new(serde_json::to_vec_pretty(&entry).expect("an entry encodes"));
        let created = self
            .store
            .create(&chain_key(index), bytes, stop, &self.progress.stats)
            .await
            .map_err(|e| PublishError::Store(self.fail("cannot publish a checkpoint", e)))?;
        if !created {
            return Ok(Published::Superseded);
        }
        self.index = index;
        self.progress.mirrored.store(manifest.epoch, Ordering::SeqCst);
        self.published.push((manifest.epoch, keys));
        self.collect_garbage(stop).await;
        Ok(Published::Done)
    }

    /// Deletes chain entries older than the retained checkpoints, and the chunks of this generation no
    /// retained checkpoint names. A failure only costs space: logged, retried at the next publication.
    async fn collect_garbage(&mut self, stop: &AtomicBool) {
        if self.published.len() <= self.keep {
            return;
        }
        let retained = &self.published[self.published.len() - self.keep..];
        let needed: std::collections::BTreeSet<&String> = retained.iter().flat_map(|(_, k)| k).collect();
        let mut stale: std::collections::BTreeSet<String> = self.published[..self.published.len() - self.keep]
            .iter()
            .flat_map(|(_, k)| k.iter())
            .filter(|k| !needed.contains(k))
            .cloned()
            .collect();
        // Entries: everything before the oldest retained checkpoint's entry. Those of earlier generations
        // (before this instance's claim) are read first: the chunks only they name go too.
        let oldest_retained = self.index + 1 - self.keep as u64;
        let stats = &self.progress.stats;
        let Ok(keys) = self.store.list(CHAIN_DIR, stop, stats).await else { return };
        for key in keys.iter().filter(|k| parse_chain_key(k).is_some_and(|i| i < oldest_retained)) {
            if parse_chain_key(key).is_some_and(|i| i < self.claim_index) {
                let earlier = self.store.get(key, stop, stats).await.ok();
                let earlier = earlier.and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
                let chunks = earlier.and_then(|e| e.checkpoint).map_or(Vec::new(), |m| m.chunks);
                stale.extend(chunks.into_iter().map(|c| c.key).filter(|k| !needed.contains(k)));
            }
            if let Err(e) = self.store.delete(key, stop, stats).await {
                tracing::warn!("mirror {}: cannot delete {}: {e}", self.label, self.store.describe(key));
                return;
            }
        }
        for key in &stale {
            if let Err(e) = self.store.delete(key, stop, stats).await {
                tracing::warn!("mirror {}: cannot delete {}: {e}", self.label, self.store.describe(key));
                return;
            }
        }
        for have in self.chunks.values_mut() {
            have.retain(|c| !stale.contains(&c.key));
        }
        let drop = self.published.len() - self.keep;
        self.published.drain(..drop);
    }
}

fn read_local_generation(state_dir: &Path) -> Result<Option<u64>, String> {
    let path = state_dir.join(LOCAL_GENERATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().parse().map(Some).map_err(|_| format!("{}: not a generation number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_local_generation(state_dir: &Path, generation: u64) -> Result<(), String> {
    std::fs::create_dir_all(state_dir).map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let path = state_dir.join(LOCAL_GENERATION_FILE);
    let tmp = state_dir.join(format!(".{LOCAL_GENERATION_FILE}.tmp"));
    std::fs::write(&tmp, format!("{generation}\n"))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    crate::state::sync_dir(state_dir)
}

fn read_at(path: &Path, from: u64, to: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; (to - from) as usize];
    f.read_exact_at(&mut buf, from).map_err(|e| format!("cannot read {} bytes {from}..{to}: {e}", path.display()))?;
    Ok(buf)
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.write_all_at(bytes, at).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Mirrors, on the control thread, the newest checkpoint `completed` announces each time it changes (the
/// checkpoints completed meanwhile are skipped: the newest one names all the log it needs), until the run
/// stops or the mirror fails; a failure or a takeover is recorded in the progress for the daemon to act on.
pub async fn run_uploader(
    mut mirror: Mirror,
    state_dir: std::path::PathBuf,
    mut completed: tokio::sync::watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
) {
    let progress = mirror.progress.clone();
    let stop_with = |why: String| {
        tracing::error!("{why}");
        *progress.error.lock().expect("mirror error lock") = Some(why);
    };
    loop {
        let epoch = *completed.borrow_and_update();
        if epoch > progress.mirrored.load(Ordering::SeqCst) {
            let published = match read_manifest(&state_dir.join(MANIFEST_DIR), epoch) {
                Ok(m) => mirror.publish(&state_dir, &m, &stop).await,
                Err(e) => Err(PublishError::Local(e)),
            };
            match published {
                Ok(Published::Done) => continue,
                Ok(Published::Superseded) => {
                    progress.superseded.store(true, Ordering::SeqCst);
                    stop_with(format!(
                        "mirror {}: another instance took this mirror prefix over (a newer generation than {}): stopping without publishing checkpoint {epoch}; output after checkpoint {} stays uncommitted",
                        mirror.label,
                        mirror.generation,
                        progress.mirrored.load(Ordering::SeqCst)
                    ));
                    return;
                }
                // Replaced by a newer checkpoint meanwhile: that one is announced, or is about to be.
                Err(PublishError::Local(e)) => tracing::debug!("mirror {}: {e}", mirror.label),
                Err(PublishError::Store(e)) => {
                    if !stop.load(Ordering::Relaxed) {
                        stop_with(e);
                    }
                    return;
                }
            }
        }
        tokio::select! {
            changed = completed.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => if stop.load(Ordering::Relaxed) { return },
        }
    }
}
