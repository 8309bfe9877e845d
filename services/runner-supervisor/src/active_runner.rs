//! One attempt this node runs, as the watcher follows it: waiting for the
//! shim to start the agent, then turning its part of the session's
//! transcript and its exit record into process events. Derived events wait
//! in `pending` (and the transcript's final size and sha256 in `end`) until
//! the database took them, so an outage delays them and loses none.
//!
//! A look at the directory ([`ActiveRunner::observe`]) is blocking file
//! I/O and touches no database; recording what it kept
//! ([`ActiveRunner::record_end`], then the watcher's batch of `pending`) is
//! async. The watcher runs the first off the runtime's workers.

use crate::attempt_setup::append_stall;
use crate::domain::desired_state::{shim_want, supersedes};
use crate::domain::stall::{StallPolicy, StallWatch};
use crate::domain::transcript_events::{
    AttemptIdentity, AttemptSetup, DerivedEvent, STARTED_VERSION, TranscriptDeriver,
};
use crate::handlers::Supervisor;
use crate::launch::Launched;
use crate::live_output::LinesRead;
use crate::recording::{RecordError, Recorder};
use crate::transcript_reader::TranscriptReader;
use crate::transcripts::{self, TranscriptStart, TranscriptSummary, current_size, summarize};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;
use stratavore_agent_shim::runner_dir::{Control, ExitRecord, read_agent_pid, write_control};
use stratavore_events::process::{ProcessEvent, ProcessFailed, ProcessStarted};
use stratavore_events::runner::Want;
use stratavore_runtime::BootInstant;
use stratavore_store::NewEntry;
use uuid::Uuid;

enum Phase {
    /// The shim runs; the agent's pid is not known yet.
    Launching,
    /// The agent runs: its transcript is read as it grows.
    Running {
        deriver: Box<TranscriptDeriver>,
        reader: TranscriptReader,
        stall: Option<StallWatch>,
    },
    /// The stream's last event is derived (it may still be pending).
    Done,
}

/// An attempt the watcher follows.
pub struct ActiveRunner {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// Its runner directory.
    pub dir: PathBuf,
    /// The shim, to reap once it exits.
    pub shim: Option<Child>,
    node: String,
    /// What the transcript is read with, until the agent runs.
    setup: Option<AttemptSetup>,
    /// The profile's stall timeout and policy, if it watches for stalls.
    stall: Option<(Duration, StallPolicy)>,
    /// The last desired state written: a paused agent cannot stall.
    want: Want,
    phase: Phase,
    pending: Vec<NewEntry>,
    /// Where the attempt's part of the session transcript starts.
    transcript: TranscriptStart,
    /// The transcript as it stood at the end, until recorded.
    end: Option<TranscriptSummary>,
    control_rev: Option<u64>,
    launched_at: BootInstant,
    /// The agent's pid, once the shim wrote it.
    agent_pid: Option<u32>,
}

impl ActiveRunner {
    /// An attempt whose shim was just started, its output appended to the
    /// session transcript from `transcript` on.
    pub fn launched(
        identity: AttemptIdentity,
        setup: AttemptSetup,
        stall: Option<(Duration, StallPolicy)>,
        launched: Launched,
        transcript: TranscriptStart,
        launched_at: BootInstant,
    ) -> Self {
        Self {
            runner_id: identity.runner_id,
            attempt: identity.attempt,
            dir: launched.dir,
            shim: Some(launched.shim),
            node: identity.node,
            setup: Some(setup),
            stall,
            want: Want::Running,
            phase: Phase::Launching,
            pending: Vec::new(),
            transcript,
            end: None,
            control_rev: None,
            launched_at,
            agent_pid: None,
        }
    }

    /// The agent's pid while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent_pid.filter(|_| self.is_running())
    }

    /// Whether the agent is known to run (for metrics).
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    /// Whether everything of the attempt is recorded: the watcher forgets it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done) && self.pending.is_empty() && self.end.is_none()
    }

    /// Keep the transcript's size and sha256 over its first `size` bytes for
    /// recording; a file that cannot be read is logged and left unrecorded
    /// rather than holding the attempt's outcome back.
    fn ended_at(&mut self, size: u64) {
        self.end = summarize_logged(self.runner_id, &self.transcript.path, size);
    }

    /// Bring the control file to the latest desired state, if it is newer
    /// than the one written.
    pub fn apply_desired(&mut self, desired: Option<(u64, Want)>) {
        let Some((rev, want)) = desired else { return };
        if matches!(self.phase, Phase::Done) || !supersedes(self.control_rev, rev) {
            return;
        }
        let control = Control {
            rev,
            want: shim_want(want),
        };
        match write_control(&self.dir, &control) {
            Ok(()) => {
                self.control_rev = Some(rev);
                self.want = want;
            }
            Err(e) => {
                tracing::warn!(runner = %self.runner_id, error = %e, "cannot write the control file")
            }
        }
    }

    fn derived(&mut self, service: &Supervisor, events: Vec<DerivedEvent>) {
        for d in events {
            let entry = service.process_entry(&d.event, self.runner_id, self.attempt, d.version);
            self.pending.push(entry);
        }
    }

    fn failed(&mut self, service: &Supervisor, reason: String) {
        // Version 2: `started` never came, and the stream must stay gapless.
        let event = ProcessEvent::Failed(ProcessFailed {
            runner_id: self.runner_id,
            attempt: self.attempt,
            node: self.node.clone(),
            reason,
        });
        let entry = service.process_entry(&event, self.runner_id, self.attempt, STARTED_VERSION);
        self.pending.push(entry);
        self.phase = Phase::Done;
        let size = current_size(&self.transcript.path).unwrap_or(self.transcript.offset);
        self.ended_at(size);
    }

    /// One look at the runner directory: derive what it shows into
    /// `pending` and keep the transcript's summary once it ended (both
    /// recorded by the watcher, the summary first). Blocking file I/O, no
    /// database. Returns the transcript lines it read, for live output.
    pub fn observe(&mut self, service: &Supervisor) -> Option<LinesRead> {
        if matches!(self.phase, Phase::Launching) {
            self.step_launching(service);
        }
        let mut read = None;
        if let Phase::Running {
            deriver,
            reader,
            stall,
        } = &mut self.phase
        {
            // The exit record is written only once nothing of the tree
            // remains, so after it the transcript is complete.
            let exit = ExitRecord::read(&self.dir).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read exit.json yet");
                None
            });
            let from = reader.offset();
            let lines = match &exit {
                Some(_) => reader.remaining_lines(),
                None => reader.complete_lines(),
            };
            let lines = lines.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the transcript");
                Vec::new()
            });
            let first = from.saturating_sub(self.transcript.offset);
            let bytes_read = reader.offset().saturating_sub(from);
            let mut events: Vec<DerivedEvent> =
                lines.iter().flat_map(|l| deriver.feed_line(l)).collect();
            if exit.is_none()
                && let Some(watch) = stall
            {
                events.extend(watch_stall(
                    watch,
                    deriver,
                    &self.dir,
                    self.runner_id,
                    self.want == Want::Paused,
                ));
            }
            // The exit describes the transcript as the deriver read it: up
            // to its end, which a restart reads to again.
            let end = exit
                .as_ref()
                .map(|_| summarize_logged(self.runner_id, &self.transcript.path, reader.offset()));
            if let Some(exit) = &exit {
                if exit.reason == stratavore_agent_shim::runner_dir::ExitReason::LeaseExpired {
                    crate::metrics::lease_expired();
                }
                let file = end
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map(|s| s.file(&self.transcript.path));
                events.extend(deriver.finish(exit, file));
            }
            let stop_for_stall = events
                .iter()
                .any(|d| matches!(&d.event, ProcessEvent::Stalled(s) if s.policy == StallPolicy::Stop.name()));
            if !lines.is_empty() {
                read = Some(LinesRead {
                    runner_id: self.runner_id,
                    attempt: self.attempt,
                    first,
                    lines,
                    bytes_read,
                });
            }
            self.derived(service, events);
            if stop_for_stall {
                self.stop_stalled();
            }
            if let Some(end) = end {
                self.phase = Phase::Done;
                self.end = end;
            }
        }
        read
    }

    fn step_launching(&mut self, service: &Supervisor) {
        if let Ok(Some(pid)) = read_agent_pid(&self.dir) {
            self.agent_pid = u32::try_from(pid).ok();
            let event = ProcessEvent::Started(ProcessStarted {
                runner_id: self.runner_id,
                attempt: self.attempt,
                node: self.node.clone(),
                pid: u32::try_from(pid).unwrap_or(0),
            });
            let entry =
                service.process_entry(&event, self.runner_id, self.attempt, STARTED_VERSION);
            self.pending.push(entry);
            crate::metrics::spawned(self.launched_at.elapsed());
            let identity = AttemptIdentity {
                runner_id: self.runner_id,
                attempt: self.attempt,
                node: self.node.clone(),
            };
            let setup = self
                .setup
                .take()
                .unwrap_or_else(|| AttemptSetup::claude(String::new()));
            let now = boot_now();
            self.phase = Phase::Running {
                deriver: Box::new(TranscriptDeriver::new(identity, setup)),
                reader: TranscriptReader::at(self.transcript.path.clone(), self.transcript.offset),
                stall: self
                    .stall
                    .map(|(timeout, policy)| StallWatch::new(timeout, policy, now)),
            };
            return;
        }
        if let Ok(Some(exit)) = ExitRecord::read(&self.dir) {
            let reason = exit
                .detail
                .unwrap_or_else(|| "the agent could not be spawned".to_owned());
            self.failed(service, reason);
            return;
        }
        let shim_gone = self
            .shim
            .as_mut()
            .is_some_and(|s| matches!(s.try_wait(), Ok(Some(_))));
        // Checked again after seeing the shim gone: it writes exit.json
        // before it exits.
        if shim_gone && !matches!(ExitRecord::read(&self.dir), Ok(Some(_))) {
            self.failed(
                service,
                "the shim ended without recording an outcome".to_owned(),
            );
        }
    }

    /// The node stops an agent that stalled under the `stop` policy. The
    /// highest rev makes it final: no later desired state can revive it.
    fn stop_stalled(&mut self) {
        let control = Control {
            rev: u64::MAX,
            want: shim_want(Want::Stopped),
        };
        match write_control(&self.dir, &control) {
            Ok(()) => {
                self.control_rev = Some(u64::MAX);
                self.want = Want::Stopped;
            }
            Err(e) => {
                tracing::warn!(runner = %self.runner_id, error = %e, "cannot stop a stalled agent")
            }
        }
    }

    /// Record the transcript's final size and sha256. It goes before the
    /// events that wait in `pending`: once the exit is in the log the
    /// attempt is ended and a restart would not look at its transcript
    /// again, so the watcher calls this before it records `pending`.
    pub async fn record_end(&mut self, recorder: &Recorder) -> Result<(), RecordError> {
        if let Some(summary) = &self.end {
            transcripts::record_end(&recorder.pool, self.runner_id, self.attempt, summary).await?;
            self.end = None;
        }
        Ok(())
    }

    /// The events derived and not yet recorded. The watcher records every
    /// runner's at once after a scan, in one transaction.
    pub fn pending(&self) -> &[NewEntry] {
        &self.pending
    }

    /// The database took what was pending.
    pub fn recorded(&mut self) {
        self.pending.clear();
    }
}

use crate::liveness::boot_now;

/// The transcript's size and sha256 over its first `size` bytes; a file
/// that cannot be read is logged and left undescribed rather than holding
/// the attempt's outcome back.
fn summarize_logged(runner: Uuid, path: &std::path::Path, size: u64) -> Option<TranscriptSummary> {
    summarize(path, size)
        .inspect_err(|e| tracing::warn!(%runner, error = %e, "cannot hash the transcript"))
        .ok()
}

/// One look for a stall: its marker is kept in the runner directory before
/// its event is derived, so a restart derives the same event in the same
/// place. A marker that cannot be kept derives nothing (and stops nothing).
fn watch_stall(
    watch: &mut StallWatch,
    deriver: &mut TranscriptDeriver,
    dir: &std::path::Path,
    runner: Uuid,
    paused: bool,
) -> Vec<DerivedEvent> {
    let stats = deriver.stats();
    let Some(marker) = watch.observe(
        boot_now(),
        stats.last_progress_line,
        stats.lines_seen,
        paused,
    ) else {
        return Vec::new();
    };
    if let Err(e) = append_stall(dir, &marker) {
        tracing::error!(%runner, error = %e, "cannot record a stall");
        return Vec::new();
    }
    tracing::warn!(%runner, idle_ms = marker.idle_ms, policy = marker.policy.name(), "the agent stalled");
    crate::metrics::stalled(marker.policy);
    deriver.stall(marker)
}
