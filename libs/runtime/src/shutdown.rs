//! Graceful shutdown: one signal every task listens to, and a record of every
//! task spawned, so a service can wait for all of them before it exits.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why shutdown did not complete cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// Some tasks were still running when the grace period ended.
    #[error("{} task(s) did not finish within {timeout:?}: {}", .running.len(), .running.join(", "))]
    TasksStillRunning {
        /// Names of the tasks still running.
        running: Vec<String>,
        /// The grace period that was given.
        timeout: Duration,
    },
    /// A signal handler could not be installed.
    #[error("cannot listen for {signal}")]
    Signal {
        /// Name of the signal.
        signal: &'static str,
        /// Error of the operating system.
        #[source]
        source: std::io::Error,
    },
}

/// The shutdown signal plus the tasks that must finish before exit.
///
/// Clones share both; [`Shutdown::child`] makes a narrower scope.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    running: Arc<RunningTasks>,
}

#[derive(Debug, Default)]
struct RunningTasks {
    next_id: AtomicU64,
    names: Mutex<BTreeMap<u64, String>>,
}

impl RunningTasks {
    fn names(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        // The map stays consistent even if a holder panicked: every update is
        // a single insert or remove.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a task's name when its future completes or is dropped.
struct NameGuard {
    id: u64,
    running: Arc<RunningTasks>,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        self.running.names().remove(&self.id);
    }
}

impl Shutdown {
    /// A shutdown signal not yet triggered, with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every listener to stop. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// The underlying token, for APIs that take a `CancellationToken`.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A scope that stops when this one does, or alone when its own
    /// [`trigger`](Self::trigger) is called. It tracks its own tasks: whoever
    /// creates it waits for them with [`wait_for_tasks`](Self::wait_for_tasks).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: TaskTracker::new(),
            running: Arc::default(),
        }
    }

    /// Spawns a task that [`wait_for_tasks`](Self::wait_for_tasks) will await.
    /// The task must itself listen to [`wait`](Self::wait) to stop in time.
    pub fn spawn<F>(&self, name: impl Into<String>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let name = name.into();
        let id = self.running.next_id.fetch_add(1, Ordering::Relaxed);
        self.running.names().insert(id, name.clone());
        let guard = NameGuard {
            id,
            running: Arc::clone(&self.running),
        };
        let span = tracing::info_span!("task", task = %name);
        self.tracker.spawn(
            async move {
                let _guard = guard;
                future.await
            }
            .instrument(span),
        )
    }

    /// Waits, at most `timeout`, for every task spawned on this scope (by any
    /// clone) to finish; on timeout the error names the ones still running.
    pub async fn wait_for_tasks(self, timeout: Duration) -> Result<(), ShutdownError> {
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        let running = self.running.names().values().cloned().collect();
        Err(ShutdownError::TasksStillRunning { running, timeout })
    }
}

/// Triggers `shutdown` on the first SIGTERM or SIGINT. Must be called inside
/// a Tokio runtime; the listener is a task of `shutdown` and ends with it.
pub fn trigger_on_signals(shutdown: &Shutdown) -> Result<(), ShutdownError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| ShutdownError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    let target = shutdown.clone();
    shutdown.spawn("signals", async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            () = target.wait() => return,
        }
        target.trigger();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_after_trigger_and_tasks_are_awaited() {
        let shutdown = Shutdown::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let listener = shutdown.clone();
        shutdown.spawn("worker", async move {
            listener.wait().await;
            let _ = tx.send(());
        });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
        shutdown
            .wait_for_tasks(Duration::from_secs(10))
            .await
            .unwrap();
        rx.await.unwrap();
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_named_in_the_error() {
        let shutdown = Shutdown::new();
        shutdown.spawn("finished", async {});
        shutdown.spawn("stubborn", std::future::pending::<()>());
        shutdown.trigger();
        let err = shutdown
            .wait_for_tasks(Duration::from_millis(50))
            .await
            .unwrap_err();
        match err {
            ShutdownError::TasksStillRunning { running, .. } => {
                assert_eq!(running, ["stubborn"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_child_stops_with_its_parent_but_not_the_reverse() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());

        let second = parent.child();
        parent.trigger();
        second.wait().await;
        assert!(second.is_triggered());
    }

    #[tokio::test]
    async fn sigterm_triggers_shutdown() {
        let shutdown = Shutdown::new();
        trigger_on_signals(&shutdown).unwrap();
        // Safe within the test binary: the handler above is installed first,
        // and Tokio keeps it for the life of the process.
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), shutdown.wait())
            .await
            .unwrap();
        shutdown
            .wait_for_tasks(Duration::from_secs(10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_signal_listener_ends_with_shutdown() {
        let shutdown = Shutdown::new();
        trigger_on_signals(&shutdown).unwrap();
        shutdown.trigger();
        shutdown
            .wait_for_tasks(Duration::from_secs(10))
            .await
            .unwrap();
    }
}
