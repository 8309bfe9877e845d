//! The node's background loop, every `scan_interval`: start the attempts
//! whose `start` was committed, follow the running ones through their
//! runner directories, renew their leases, bring their control files to
//! the desired state, and open or close the offer gate by capacity.
//!
//! Everything it acts on was committed first (the inbox discipline: insert,
//! commit, ack, then act); what it learns it records before forgetting it.

use crate::active_runner::ActiveRunner;
use crate::attempt_setup::attempt_setup;
use crate::config::NodeSection;
use crate::domain::transcript_events::{AttemptIdentity, STARTED_VERSION};
use crate::launch::Launcher;
use crate::liveness::Liveness;
use crate::node_store;
use crate::off_runtime::{Cancelled, off_runtime};
use crate::offer_gate::OfferGate;
use crate::recording::{RecordError, Recorder};
use crate::runner_set::{Desired, RunnerSet};
use crate::transcripts;
use std::sync::Arc;
use std::time::Duration;
use stratavore_events::process::{ProcessEvent, ProcessFailed};
use stratavore_runtime::{BootInstant, Shutdown};
use stratavore_store::StoreError;

/// Why a scan stopped short; the next one starts over.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading the node's tables failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Recording what the runners showed failed; it stays pending.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The file work could not run: the runtime is going away.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

/// The loop's state.
pub struct Watcher {
    /// Records what it learns.
    pub recorder: Recorder,
    /// Starts attempts (shared with the launches run off the runtime).
    pub launcher: Arc<Launcher>,
    /// The offer consumers.
    pub gate: OfferGate,
    /// What it follows. A scan moves it off the runtime for its file work
    /// and back; it is empty only while that work runs (or for good if the
    /// runtime shut down under it, when the watcher ends too).
    runners: RunnerSet,
    /// The node's liveness: lease deadlines, samples, drain.
    liveness: Arc<Liveness>,
}

impl Watcher {
    /// A watcher with nothing running yet.
    pub fn new(
        recorder: Recorder,
        launcher: Launcher,
        gate: OfferGate,
        liveness: Arc<Liveness>,
    ) -> Self {
        Self {
            recorder,
            launcher: Arc::new(launcher),
            gate,
            runners: RunnerSet::default(),
            liveness,
        }
    }

    fn node(&self) -> &NodeSection {
        &self.launcher.node
    }

    /// Run until shutdown.
    pub async fn run(mut self, shutdown: Shutdown) {
        let interval = self.node().scan_interval();
        loop {
            if let Err(e) = self.scan().await {
                tracing::warn!(error = %e, "a scan of the runners failed; retrying");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        // The shims outlive this process on purpose: their leases end them
        // if no supervisor renews. Reap the ones already gone.
        self.runners.reap();
    }

    /// One pass: launch what was started, read every runner's directory
    /// off the runtime, record what it showed, then renew leases and sample
    /// off the runtime again. The file work of hundreds of runners would
    /// otherwise hold a runtime worker and starve the heartbeat.
    async fn scan(&mut self) -> Result<(), ScanError> {
        let me = self.recorder.service.me.clone();
        let live =
            node_store::live_attempts(&self.recorder.pool, &me.node, Some(me.incarnation)).await?;
        // Every `start` carries the orchestrator's TTL; the shortest wins.
        if let Some(ttl) = live.iter().filter_map(|a| a.ttl_ms).min() {
            self.liveness.set_ttl(Duration::from_millis(ttl));
        }
        for attempt in &live {
            let key = (attempt.runner_id, attempt.attempt);
            if !self.runners.contains(&key) && attempt.state == "spawning" {
                self.launch(attempt).await?;
            }
        }
        // Control files are written off the runtime too, all of them
        // before the first look, as they always were.
        let desired: Vec<Desired> = live
            .iter()
            .map(|a| ((a.runner_id, a.attempt), a.desired))
            .collect();
        let (runners, lines) = std::mem::take(&mut self.runners)
            .read(self.recorder.service.clone(), desired)
            .await?;
        self.runners = runners;
        for read in &lines {
            read.offer();
        }
        // Each transcript's summary before the batch that may hold its exit.
        for runner in self.runners.runners_mut() {
            runner.record_end(&self.recorder).await?;
        }
        // One transaction for what every runner showed: at hundreds of
        // agents, a commit each would take longer than the scan interval.
        self.recorder.record_groups(&self.runners.pending()).await?;
        self.runners.recorded();
        self.runners = std::mem::take(&mut self.runners)
            .upkeep(self.liveness.clone())
            .await?;
        let draining = node_store::draining(&self.recorder.pool, &me.node).await?;
        self.liveness.set_draining(draining);
        let used = node_store::used_slots(&self.recorder.pool, &me.node, me.incarnation).await?;
        let (starting, running) = self.runners.starting_and_running();
        crate::metrics::runners(used.saturating_sub(starting + running), starting, running);
        // A draining node takes no offers and lets its runners finish.
        let capacity = if draining { 0 } else { self.node().capacity };
        self.gate.adjust(used, u64::from(capacity));
        Ok(())
    }

    async fn launch(&mut self, attempt: &node_store::LiveAttempt) -> Result<(), ScanError> {
        // A spawn needs a lease, and a lease needs a confirmed heartbeat:
        // without one yet, the attempt waits for the next scan.
        let Some(deadline) = self.liveness.lease_deadline_nanos() else {
            return Ok(());
        };
        let lease_span = self.liveness.lease_span();
        let started_at = BootInstant::now();
        // The launch's file work and the spawn run off the runtime: a wave
        // of starts is hundreds of them in one scan.
        let owned = Arc::new(attempt.clone());
        let launcher = self.launcher.clone();
        let prepared = off_runtime({
            let owned = owned.clone();
            move || launcher.transcript(&owned)
        })
        .await?;
        let launched = match prepared {
            Ok((paths, start)) => {
                // Recorded before the spawn: a restart must know where this
                // attempt's lines begin even if it dies right after.
                transcripts::record_start(
                    &self.recorder.pool,
                    attempt.runner_id,
                    attempt.attempt,
                    &start,
                )
                .await?;
                let launcher = self.launcher.clone();
                off_runtime(move || {
                    let launched = launcher.launch(&owned, &paths, deadline, lease_span)?;
                    let setup = attempt_setup(
                        &launcher.profiles,
                        &launcher.pricing,
                        &owned.offer,
                        &launched.dir,
                    );
                    Ok((launched, setup, start))
                })
                .await?
            }
            Err(e) => Err(e),
        };
        match launched {
            Ok((launched, setup, transcript)) => {
                tracing::info!(runner = %attempt.runner_id, attempt = attempt.attempt,
                    dir = %launched.dir.display(), transcript = %transcript.path.display(),
                    offset = transcript.offset, "started a shim");
                let identity = AttemptIdentity {
                    runner_id: attempt.runner_id,
                    attempt: attempt.attempt,
                    node: self.node().id.clone(),
                };
                let stall = self
                    .launcher
                    .profiles
                    .get(&attempt.offer.profile)
                    .and_then(|p| Some((p.stall_timeout()?, p.stall_policy)));
                let runner = ActiveRunner::launched(
                    identity, setup, stall, launched, transcript, started_at,
                );
                self.runners
                    .insert((attempt.runner_id, attempt.attempt), runner);
                Ok(())
            }
            Err(e) => {
                let reason = describe(&e);
                tracing::warn!(runner = %attempt.runner_id, %reason, "cannot start an attempt");
                let event = ProcessEvent::Failed(ProcessFailed {
                    runner_id: attempt.runner_id,
                    attempt: attempt.attempt,
                    node: self.node().id.clone(),
                    reason,
                });
                let entry = self.recorder.service.process_entry(
                    &event,
                    attempt.runner_id,
                    attempt.attempt,
                    STARTED_VERSION,
                );
                self.recorder.record_once(&[entry]).await?;
                Ok(())
            }
        }
    }
}

/// An error and its causes on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
