//! A tick for each of a service's drain transactions that applied
//! something, for what waits on the read models to read them again at
//! once instead of at its next poll (the gateway's requests waiting for
//! their command's outcome).
//!
//! A tick says only that the read models moved: the reader still reads
//! them, they stay the one source of every answer. Ticks are local to a
//! process, and only the replica whose consumer is active applies, so a
//! reader on another replica still reads at its own pace as well.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The drain's ticks, shared by the drain (which ticks after each commit)
/// and whoever waits on the read models.
#[derive(Debug, Clone)]
pub struct Commits(Arc<watch::Sender<u64>>);

impl Default for Commits {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Commits {
    /// A drain transaction that applied messages committed.
    pub fn tick(&self) {
        // `send_modify` updates even with no receiver, unlike `send`.
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Read with `read` until it finds something, reading again after each
    /// tick and at least every `poll`, for as long as `wait`: what it found,
    /// or None when `wait` ran out first. The first read is at once.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        poll: Duration,
        wait: Duration,
        mut read: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let deadline = Instant::now() + wait;
        let mut ticks = self.0.subscribe();
        loop {
            // Seen before the read, so a commit after the read's snapshot
            // is a tick still to come.
            ticks.borrow_and_update();
            if let Some(found) = read().await? {
                return Ok(Some(found));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = poll.min(deadline - now);
            // The sender lives as long as `self`, so `changed` cannot fail
            // here; the timeout bounds the wait either way.
            let _ = tokio::time::timeout(pause, ticks.changed()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A wait whose reader finds something once `ready` is set.
    #[derive(Default)]
    struct Probe {
        commits: Commits,
        ready: Arc<AtomicBool>,
        reads: Arc<AtomicUsize>,
    }

    impl Probe {
        /// Wait with these settings (in milliseconds): what was found, how
        /// long it took, and how many reads.
        async fn wait(&self, poll: u64, wait: u64) -> (Option<&'static str>, Duration, usize) {
            let started = Instant::now();
            let found = self
                .commits
                .wait_for(
                    Duration::from_millis(poll),
                    Duration::from_millis(wait),
                    || {
                        self.reads.fetch_add(1, Ordering::SeqCst);
                        let found = self.ready.load(Ordering::SeqCst).then_some("decided");
                        std::future::ready(Ok::<_, std::convert::Infallible>(found))
                    },
                )
                .await
                .unwrap();
            (found, started.elapsed(), self.reads.load(Ordering::SeqCst))
        }

        /// After each of `after` (milliseconds from the last), tick if asked;
        /// the last one readies the reader first.
        fn later(&self, after: &[(u64, bool)]) -> tokio::task::JoinHandle<()> {
            let (commits, ready, after) = (
                self.commits.clone(),
                Arc::clone(&self.ready),
                after.to_vec(),
            );
            tokio::spawn(async move {
                for (i, (ms, tick)) in after.iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                    if i + 1 == after.len() {
                        ready.store(true, Ordering::SeqCst);
                    }
                    if *tick {
                        commits.tick();
                    }
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_wakes_the_reader_long_before_its_poll() {
        let probe = Probe::default();
        let drain = probe.later(&[(40, true)]);
        let (found, took, reads) = probe.wait(60_000, 30_000).await;
        assert_eq!(found, Some("decided"));
        assert_eq!(took, Duration::from_millis(40));
        assert_eq!(reads, 2, "once at once, once at the tick");
        drain.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_tick_the_poll_still_finds_what_another_replica_applied() {
        let probe = Probe::default();
        let elsewhere = probe.later(&[(110, false)]);
        let (found, took, reads) = probe.wait(50, 30_000).await;
        assert_eq!(found, Some("decided"));
        assert_eq!(took, Duration::from_millis(150));
        assert_eq!(reads, 4, "at 0, 50, 100 and 150 ms");
        elsewhere.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_with_nothing_at_its_deadline_after_a_last_read() {
        let probe = Probe::default();
        let (found, took, reads) = probe.wait(40, 100).await;
        assert_eq!(found, None);
        assert_eq!(took, Duration::from_millis(100));
        assert_eq!(reads, 4, "at 0, 40, 80 and 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_of_commits_that_decided_something_else_only_cost_a_read() {
        let probe = Probe::default();
        let drain = probe.later(&[(10, true), (10, true), (10, true), (10, true)]);
        let (found, took, reads) = probe.wait(60_000, 30_000).await;
        assert_eq!(found, Some("decided"));
        assert_eq!(took, Duration::from_millis(40));
        assert_eq!(reads, 5, "once at once, once a tick");
        drain.await.unwrap();
    }
}
