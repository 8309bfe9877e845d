//! Live output lines, fanned out in this gateway process: the live
//! consumer hands every `runner.output.*` line to the hub, and each
//! follower of a runner's logs holds a subscription to that runner's
//! lines. A runner nobody follows has no channel, and its lines are
//! dropped at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stratavore_events::process::RunnerOutput;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Lines a slow follower may fall behind by before it lags (and reads
/// the gap from the node instead).
pub const FOLLOWER_BUFFER: usize = 1024;

/// The followers of each runner.
#[derive(Clone, Default)]
pub struct OutputHub {
    runners: Arc<Mutex<HashMap<Uuid, broadcast::Sender<RunnerOutput>>>>,
}

impl OutputHub {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, broadcast::Sender<RunnerOutput>>> {
        // The map stays consistent across a panic (one insert or remove).
        self.runners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follow `runner`'s lines from now on.
    pub fn subscribe(&self, runner: Uuid) -> OutputSubscription {
        let receiver = self
            .lock()
            .entry(runner)
            .or_insert_with(|| broadcast::channel(FOLLOWER_BUFFER).0)
            .subscribe();
        OutputSubscription {
            hub: self.clone(),
            runner,
            receiver,
        }
    }

    /// Hand a line to its runner's followers, if it has any.
    pub fn publish(&self, output: RunnerOutput) {
        if let Some(sender) = self.lock().get(&output.runner_id) {
            // No receiver left is the drop guard's race; nothing to do.
            let _ = sender.send(output);
        }
    }

    /// How many runners have followers (for tests).
    pub fn followed_runners(&self) -> usize {
        self.lock().len()
    }
}

/// One follower's lines of one runner; the runner's channel goes with its
/// last subscription.
pub struct OutputSubscription {
    hub: OutputHub,
    runner: Uuid,
    receiver: broadcast::Receiver<RunnerOutput>,
}

impl OutputSubscription {
    /// The next line; `Lagged` when some were missed.
    pub async fn recv(&mut self) -> Result<RunnerOutput, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for OutputSubscription {
    fn drop(&mut self) {
        let mut runners = self.hub.lock();
        // Under the lock no one subscribes meanwhile; this receiver still
        // counts, so 1 means it is the last.
        if runners
            .get(&self.runner)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            runners.remove(&self.runner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(runner: Uuid, offset: u64) -> RunnerOutput {
        RunnerOutput {
            runner_id: runner,
            attempt: 1,
            offset,
            line: "x".to_owned(),
            truncated: false,
        }
    }

    #[tokio::test]
    async fn each_follower_gets_its_runners_lines_and_the_channel_goes_with_the_last() {
        let hub = OutputHub::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        hub.publish(line(a, 0));
        let mut first = hub.subscribe(a);
        let mut second = hub.subscribe(a);
        let mut other = hub.subscribe(b);
        hub.publish(line(a, 1));
        hub.publish(line(b, 7));
        assert_eq!(first.recv().await.unwrap().offset, 1, "nothing from before");
        assert_eq!(second.recv().await.unwrap().offset, 1);
        assert_eq!(other.recv().await.unwrap().offset, 7);
        assert_eq!(hub.followed_runners(), 2);
        drop(first);
        assert_eq!(hub.followed_runners(), 2);
        drop(second);
        drop(other);
        assert_eq!(hub.followed_runners(), 0);
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_it_lagged() {
        let hub = OutputHub::default();
        let runner = Uuid::now_v7();
        let mut slow = hub.subscribe(runner);
        for offset in 0..(FOLLOWER_BUFFER as u64 + 5) {
            hub.publish(line(runner, offset));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
    }
}
