//! The control thread: one tokio current-thread runtime in a thread named `aws`, where every AWS call of the
//! process runs (Kinesis readers and writers, the S3 mirror). Shards never wait on it; the daemon hands it
//! work with [`AwsThread::spawn`], or waits for a result with [`AwsThread::run`] before the shards start.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::constants::{AWS_RETRY_BASE_MS, AWS_RETRY_MAX_MS};

/// Bounded, jittered exponential backoff between retries of an AWS call: the delay before retry `attempt`
/// (0-based).
pub fn backoff(attempt: u32) -> std::time::Duration {
    let cap = AWS_RETRY_BASE_MS.saturating_mul(1 << attempt.min(16)).min(AWS_RETRY_MAX_MS);
    // Full jitter: a uniform delay in [cap/2, cap], from the clock's low bits (no RNG needed for this).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::time::Duration::from_millis(cap / 2 + u64::from(nanos) % (cap / 2 + 1))
}

/// The running control thread. Dropping it sets the stop flag every task watches, waits for the tasks to
/// end and joins the thread.
pub struct AwsThread {
    handle: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AwsThread {
    pub fn start() -> Result<AwsThread, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the AWS runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
        let to_join = tasks.clone();
        let thread = std::thread::Builder::new()
            .name("aws".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = done_rx.await;
                    let handles = std::mem::take(&mut *to_join.lock().expect("aws tasks lock"));
                    for h in handles {
                        let _ = h.await;
                    }
                });
            })
            .map_err(|e| format!("cannot start the AWS thread: {e}"))?;
        Ok(AwsThread { handle, stop: Arc::default(), tasks, done: Some(done), thread: Some(thread) })
    }

    /// The flag set when the run ends: long-running tasks watch it and return.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs `task` on the control thread until it returns; the thread's end waits for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let h = self.handle.spawn(task);
        self.tasks.lock().expect("aws tasks lock").push(h);
    }

    /// Runs `work` on the control thread and waits for its result (for the steps before the shards start).
    pub fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().expect("the AWS thread runs until dropped")
    }
}

impl Drop for AwsThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
