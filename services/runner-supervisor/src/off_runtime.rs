//! Running the watcher's blocking work (runner directories, transcripts,
//! `/proc`, shim spawns) on tokio's blocking pool. At hundreds of runners
//! that work, done on a runtime worker, held it long enough for the
//! heartbeat to be late and the node to be declared lost; on the blocking
//! pool the kernel shares the CPU out and the workers stay free.

use tokio::task::JoinError;

/// The runtime shut down before the work ran.
#[derive(Debug, thiserror::Error)]
#[error("the runtime shut down before the watcher's file work ran")]
pub struct Cancelled(#[source] JoinError);

/// Run `work` on the blocking pool, in the caller's span so its logs keep
/// their context. A panic in `work` goes on in the caller, as it would have
/// had `work` run inline.
pub async fn off_runtime<R, W>(work: W) -> Result<R, Cancelled>
where
    R: Send + 'static,
    W: FnOnce() -> R + Send + 'static,
{
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Cancelled(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current-thread runtime polls every task on the thread that runs
    /// it: work done on that thread would hold every task up.
    #[tokio::test(flavor = "current_thread")]
    async fn the_work_runs_off_the_runtimes_thread_and_its_result_comes_back() {
        let runtime_thread = std::thread::current().id();
        let work_thread = off_runtime(|| std::thread::current().id()).await.unwrap();
        assert_ne!(work_thread, runtime_thread);
    }

    #[tokio::test]
    #[should_panic(expected = "boom")]
    async fn a_panic_in_the_work_reaches_the_caller() {
        let _ = off_runtime(|| -> () { panic!("boom") }).await;
    }
}
