//! The attempts the watcher follows and the shims it has still to reap,
//! with the file work of a scan over them: control files, runner
//! directories and transcripts ([`RunnerSet::read`]), then leases and
//! `/proc` ([`RunnerSet::upkeep`]). Both run off the runtime's workers and
//! hand the set back; nothing here touches the database, the watcher
//! records what they leave pending in between.

use crate::active_runner::ActiveRunner;
use crate::handlers::Supervisor;
use crate::live_output::LinesRead;
use crate::liveness::Liveness;
use crate::off_runtime::{Cancelled, off_runtime};
use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use stratavore_agent_shim::runner_dir::write_lease;
use stratavore_events::process::RunnerSample;
use stratavore_events::runner::Want;
use stratavore_store::NewEntry;
use uuid::Uuid;

/// An attempt: its runner and its number.
pub type AttemptKey = (Uuid, u32);

/// An attempt's latest desired state (rev, want), if any came.
pub type Desired = (AttemptKey, Option<(u64, Want)>);

/// The runners of one incarnation's watcher.
#[derive(Default)]
pub struct RunnerSet {
    active: BTreeMap<AttemptKey, ActiveRunner>,
    /// Shims whose attempt is over, until they are reaped.
    exited_shims: Vec<Child>,
    /// The lease deadline written last to every active runner.
    last_lease: Option<u64>,
}

impl RunnerSet {
    /// Whether `key` is followed.
    pub fn contains(&self, key: &AttemptKey) -> bool {
        self.active.contains_key(key)
    }

    /// Follow a runner just launched.
    pub fn insert(&mut self, key: AttemptKey, runner: ActiveRunner) {
        self.active.insert(key, runner);
    }

    /// How many runners are starting and how many running (for metrics).
    pub fn starting_and_running(&self) -> (u64, u64) {
        let running = self.active.values().filter(|r| r.is_running()).count() as u64;
        (self.active.len() as u64 - running, running)
    }

    /// The runners, in key order, to record what they kept.
    pub fn runners_mut(&mut self) -> impl Iterator<Item = &mut ActiveRunner> {
        self.active.values_mut()
    }

    /// Every runner's pending entries, in key order.
    pub fn pending(&self) -> Vec<&[NewEntry]> {
        self.active.values().map(ActiveRunner::pending).collect()
    }

    /// The database took what was pending: forget the runners with nothing
    /// left to record, keeping their shims to reap.
    pub fn recorded(&mut self) {
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
    }

    /// Off the runtime: bring each runner's control file to its desired
    /// state, then look at every runner's directory, deriving into its
    /// `pending`. Returns the set with the lines read, runner by runner.
    pub async fn read(
        mut self,
        service: Arc<Supervisor>,
        desired: Vec<Desired>,
    ) -> Result<(Self, Vec<LinesRead>), Cancelled> {
        off_runtime(move || {
            let lines = self.read_blocking(&service, &desired);
            (self, lines)
        })
        .await
    }

    fn read_blocking(&mut self, service: &Supervisor, desired: &[Desired]) -> Vec<LinesRead> {
        for (key, want) in desired {
            if let Some(runner) = self.active.get_mut(key) {
                runner.apply_desired(*want);
            }
        }
        self.active
            .values_mut()
            .filter_map(|runner| runner.observe(service))
            .collect()
    }

    /// Off the runtime, once a scan is recorded: renew the leases, reap the
    /// shims that exited and sample the running agents for the heartbeat.
    pub async fn upkeep(mut self, liveness: Arc<Liveness>) -> Result<Self, Cancelled> {
        off_runtime(move || {
            self.renew_leases(&liveness);
            self.reap();
            self.sample(&liveness);
            self
        })
        .await
    }

    /// Move every active runner's lease to half the TTL past the last
    /// confirmed heartbeat, whenever a new confirm moved it: leases are
    /// renewed from confirmed heartbeats and from nothing else.
    fn renew_leases(&mut self, liveness: &Liveness) {
        let Some(deadline) = liveness.lease_deadline_nanos() else {
            return;
        };
        if self.last_lease == Some(deadline) || liveness.is_fenced() {
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
    fn sample(&self, liveness: &Liveness) {
        let procs = crate::proc_sample::snapshot();
        let samples = self
            .active
            .values()
            .filter_map(|runner| {
                let pid = runner.agent_pid()?;
                let shim = i32::try_from(runner.shim.as_ref()?.id()).ok()?;
                let (cpu_seconds, rss_bytes) = crate::proc_sample::tree_usage(&procs, shim);
                Some(RunnerSample {
                    runner_id: runner.runner_id,
                    attempt: runner.attempt,
                    pid,
                    cpu_seconds,
                    rss_bytes,
                })
            })
            .collect();
        liveness.set_samples(samples);
    }

    /// Let go of the shims that exited (a wait that never blocks).
    pub fn reap(&mut self) {
        self.exited_shims
            .retain_mut(|shim| matches!(shim.try_wait(), Ok(None)));
    }
}

#[cfg(test)]
mod tests;
