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
use crate::offer_gate::OfferGate;
use crate::recording::Recorder;
use crate::transcripts;
use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;
use stratavore_agent_shim::runner_dir::write_lease;
use stratavore_events::process::{ProcessEvent, ProcessFailed};
use stratavore_runtime::{BootInstant, Shutdown};
use uuid::Uuid;

/// The loop's state.
pub struct Watcher {
    /// Records what it learns.
    pub recorder: Recorder,
    /// Starts attempts.
    pub launcher: Launcher,
    /// The offer consumers.
    pub gate: OfferGate,
    active: BTreeMap<(Uuid, u32), ActiveRunner>,
    /// Shims whose attempt is over, until they are reaped.
    exited_shims: Vec<Child>,
    /// The lease deadline written last to every active runner.
    last_lease: Option<u64>,
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
            launcher,
            gate,
            active: BTreeMap::new(),
            exited_shims: Vec::new(),
            last_lease: None,
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
        self.reap();
    }

    async fn scan(&mut self) -> Result<(), crate::recording::RecordError> {
        let me = self.recorder.service.me.clone();
        let live =
            node_store::live_attempts(&self.recorder.pool, &me.node, Some(me.incarnation)).await?;
        // Every `start` carries the orchestrator's TTL; the shortest wins.
        if let Some(ttl) = live.iter().filter_map(|a| a.ttl_ms).min() {
            self.liveness.set_ttl(Duration::from_millis(ttl));
        }
        for attempt in &live {
            let key = (attempt.runner_id, attempt.attempt);
            if !self.active.contains_key(&key) && attempt.state == "spawning" {
                self.launch(attempt).await?;
            }
            if let Some(runner) = self.active.get_mut(&key) {
                runner.apply_desired(attempt.desired);
            }
        }
        for runner in self.active.values_mut() {
            runner.step(&self.recorder).await?;
        }
        // One transaction for what every runner showed: at hundreds of
        // agents, a commit each would take longer than the scan interval.
        let groups: Vec<&[stratavore_store::NewEntry]> =
            self.active.values().map(|r| r.pending()).collect();
        self.recorder.record_groups(&groups).await?;
        let mut finished = Vec::new();
        for (key, runner) in &mut self.active {
            runner.recorded();
            if runner.is_finished() {
                finished.push(*key);
            }
        }
        for key in finished {
            if let Some(mut runner) = self.active.remove(&key) {
                self.exited_shims.extend(runner.shim.take());
            }
        }
        self.renew_leases();
        self.reap();
        self.sample();
        let draining = node_store::draining(&self.recorder.pool, &me.node).await?;
        self.liveness.set_draining(draining);
        let used = node_store::used_slots(&self.recorder.pool, &me.node, me.incarnation).await?;
        let running = self.active.values().filter(|r| r.is_running()).count() as u64;
        let starting = self.active.len() as u64 - running;
        crate::metrics::runners(used.saturating_sub(starting + running), starting, running);
        // A draining node takes no offers and lets its runners finish.
        let capacity = if draining { 0 } else { self.node().capacity };
        self.gate.adjust(used, u64::from(capacity));
        Ok(())
    }

    async fn launch(
        &mut self,
        attempt: &node_store::LiveAttempt,
    ) -> Result<(), crate::recording::RecordError> {
        // A spawn needs a lease, and a lease needs a confirmed heartbeat:
        // without one yet, the attempt waits for the next scan.
        let Some(deadline) = self.liveness.lease_deadline_nanos() else {
            return Ok(());
        };
        let lease_span = self.liveness.lease_span();
        let started_at = BootInstant::now();
        let launched = match self.launcher.transcript(attempt) {
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
                self.launcher
                    .launch(attempt, &paths, deadline, lease_span)
                    .map(|launched| (launched, start))
            }
            Err(e) => Err(e),
        };
        match launched {
            Ok((launched, transcript)) => {
                tracing::info!(runner = %attempt.runner_id, attempt = attempt.attempt,
                    dir = %launched.dir.display(), transcript = %transcript.path.display(),
                    offset = transcript.offset, "started a shim");
                let identity = AttemptIdentity {
                    runner_id: attempt.runner_id,
                    attempt: attempt.attempt,
                    node: self.node().id.clone(),
                };
                let setup = attempt_setup(
                    &self.launcher.profiles,
                    &self.launcher.pricing,
                    &attempt.offer,
                    &launched.dir,
                );
                let stall = self
                    .launcher
                    .profiles
                    .get(&attempt.offer.profile)
                    .and_then(|p| Some((p.stall_timeout()?, p.stall_policy)));
                let runner = ActiveRunner::launched(
                    identity, setup, stall, launched, transcript, started_at,
                );
                self.active
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
                self.recorder.record_once(&[entry]).await.map(|_| ())
            }
        }
    }

    /// Move every active runner's lease to half the TTL past the last
    /// confirmed heartbeat, whenever a new confirm moved it: leases are
    /// renewed from confirmed heartbeats and from nothing else.
    fn renew_leases(&mut self) {
        let Some(deadline) = self.liveness.lease_deadline_nanos() else {
            return;
        };
        if self.last_lease == Some(deadline) || self.liveness.is_fenced() {
            return;
        }
        for runner in self.active.values() {
            if let Err(e) = write_lease(&runner.dir, deadline) {
                tracing::warn!(runner = %runner.runner_id, error = %e, "cannot renew a lease");
            }
        }
        self.last_lease = Some(deadline);
    }

    /// CPU and memory of each running agent's tree, for the heartbeat.
    fn sample(&mut self) {
        let procs = crate::proc_sample::snapshot();
        let samples = self
            .active
            .values_mut()
            .filter_map(|runner| {
                let pid = runner.agent_pid()?;
                let shim = i32::try_from(runner.shim.as_ref()?.id()).ok()?;
                let (cpu_seconds, rss_bytes) = crate::proc_sample::tree_usage(&procs, shim);
                Some(stratavore_events::process::RunnerSample {
                    runner_id: runner.runner_id,
                    attempt: runner.attempt,
                    pid,
                    cpu_seconds,
                    rss_bytes,
                })
            })
            .collect();
        self.liveness.set_samples(samples);
    }

    fn reap(&mut self) {
        self.exited_shims
            .retain_mut(|shim| matches!(shim.try_wait(), Ok(None)));
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
