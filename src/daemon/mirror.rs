//! The daemon's side of the S3 mirror: claim the mirror before recovery (filling an empty state directory
//! from it, and mirroring a local checkpoint the mirror lacks before its output may be committed), then run
//! the uploader on the control thread and tell it of each completed checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DaemonError;
use crate::aws::AwsThread;
use crate::checkpoint::manifest::{list_manifests, read_manifest, MANIFEST_DIR};
use crate::checkpoint::{CheckpointControl, Coordinator};
use crate::config::MirrorConfig;
use crate::constants::{MIRROR_BACKLOG_CHECK_MS, MIRROR_BACKLOG_RESUME_PERCENT};
use crate::mirror::{run_uploader, Mirror, MirrorProgress, PublishError, Published};
use crate::sink::file::uncommitted_bytes;

pub struct MirrorRun {
    pub progress: Arc<MirrorProgress>,
    completed: tokio::sync::watch::Sender<u64>,
    label: String,
    last_bytes: u64,
    last_report: Instant,
    backlog_limit: u64,
    last_backlog_check: Instant,
}

impl MirrorRun {
    /// Claims the mirror for this run (see [`Mirror::claim`]) and starts its uploader.
    pub fn start(aws: &AwsThread, cfg: &MirrorConfig, state_dir: &Path) -> Result<MirrorRun, DaemonError> {
        let backlog = cfg.backlog_bytes;
        let (cfg, dir, stop) = (cfg.clone(), state_dir.to_path_buf(), aws.stop_flag());
        let claimed = aws.run(async move {
            let mut mirror = Mirror::open(&cfg).await;
            mirror.claim(&dir, &stop).await?;
            // A local checkpoint newer than the mirror's (this instance's own, not mirrored before it stopped):
            // mirror it now, since recovery is about to commit its output.
            let newest = list_manifests(&dir.join(MANIFEST_DIR))?.first().copied().unwrap_or(0);
            if newest > mirror.progress.mirrored.load(Ordering::SeqCst) {
                let m = read_manifest(&dir.join(MANIFEST_DIR), newest)?;
                tracing::info!("mirror {}: mirroring local checkpoint {newest} before resuming from it", cfg.label);
                match mirror.publish(&dir, &m, &stop).await {
                    Ok(Published::Done) => {}
                    Ok(Published::Superseded) => {
                        return Err(format!(
                            "mirror {}: another instance took it over while this one started",
                            cfg.label
                        ))
                    }
                    Err(PublishError::Local(e) | PublishError::Store(e)) => return Err(e),
                }
            }
            Ok::<Mirror, String>(mirror)
        });
        let mirror = claimed.map_err(DaemonError::Runtime)?;
        let progress = mirror.progress.clone();
        let label = mirror.label.clone();
        let (completed, rx) = tokio::sync::watch::channel(progress.mirrored.load(Ordering::SeqCst));
        aws.spawn(run_uploader(mirror, state_dir.to_path_buf(), rx, aws.stop_flag()));
        Ok(MirrorRun {
            progress,
            completed,
            label,
            last_bytes: 0,
            last_report: Instant::now(),
            backlog_limit: backlog,
            last_backlog_check: Instant::now(),
        })
    }

    /// Tells the uploader the newest completed checkpoint.
    pub fn completed(&self, epoch: u64) {
        self.completed.send_if_modified(|e| {
            let newer = epoch > *e;
            *e = (*e).max(epoch);
            newer
        });
    }

    /// Why the mirror stopped the run, if it did.
    pub fn failure(&self) -> Option<String> {
        self.progress.error.lock().expect("mirror error lock").clone()
    }

    /// Holds the sources (backpressure) while the bytes not yet mirrored — state log of the checkpoints
    /// after the newest mirrored one, and sink output waiting for it — are past `[mirror] backlog`; lets them
    /// go once it is back under [`MIRROR_BACKLOG_RESUME_PERCENT`] of it. Checked at most every
    /// [`MIRROR_BACKLOG_CHECK_MS`].
    pub fn check_backlog(&mut self, ctl: &CheckpointControl, c: &Coordinator, sink_dirs: &[PathBuf], ring: &dyn Fn()) {
        if self.last_backlog_check.elapsed() < Duration::from_millis(MIRROR_BACKLOG_CHECK_MS) {
            return;
        }
        self.last_backlog_check = Instant::now();
        let mirrored = self.progress.mirrored.load(Ordering::SeqCst);
        let backlog = c.log_bytes_after(mirrored) + sink_dirs.iter().map(|d| uncommitted_bytes(d)).sum::<u64>();
        let held = ctl.held.load(Ordering::SeqCst);
        if !held && backlog > self.backlog_limit {
            ctl.held.store(true, Ordering::SeqCst);
            tracing::error!(
                "mirror {}: {backlog} bytes are not mirrored yet (newest mirrored checkpoint {mirrored}), past [mirror] backlog = {}: the sources are paused until the mirror catches up; is the store reachable?",
                self.label,
                self.backlog_limit
            );
        } else if held && backlog <= self.backlog_limit / 100 * MIRROR_BACKLOG_RESUME_PERCENT {
            ctl.held.store(false, Ordering::SeqCst);
            tracing::info!("mirror {}: caught up ({backlog} bytes not mirrored): the sources are resumed", self.label);
            ring();
        }
    }

    /// The periodic report: newest mirrored epoch, lag behind the newest completed one (epochs, and bytes of
    /// state log not mirrored yet), throughput, retries.
    pub fn report_line(&mut self, c: Option<&Coordinator>, completed: u64) -> String {
        let p = &self.progress;
        let bytes = p.bytes_uploaded.load(Ordering::Relaxed);
        let secs = self.last_report.elapsed().as_secs_f64().max(1e-9);
        let rate = (bytes - self.last_bytes) as f64 / secs / 1e6;
        self.last_bytes = bytes;
        self.last_report = Instant::now();
        let mirrored = p.mirrored.load(Ordering::SeqCst);
        let lag_bytes = c.map_or(0, |c| c.log_bytes_after(mirrored));
        format!(
            "mirror {}: newest mirrored checkpoint {mirrored} ({} behind, {lag_bytes} bytes of log not mirrored), {bytes} bytes in {} objects uploaded ({rate:.1} MB/s), {} retries",
            self.label,
            completed.saturating_sub(mirrored),
            p.objects_uploaded.load(Ordering::Relaxed),
            p.stats.retries.load(Ordering::Relaxed)
        )
    }
}
