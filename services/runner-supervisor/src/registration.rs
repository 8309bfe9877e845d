//! Registration, the one moment a node (re)starts from (DESIGN section 4):
//! kill every process that carries this node's mark, close every attempt a
//! previous run left open (so each still gets its outcome), declare the
//! node's queues, and record `node.registered` with the new incarnation.

use crate::attempt_setup::attempt_setup;
use crate::config::SupervisorConfig;
use crate::domain::transcript_events::{
    AttemptIdentity, STARTED_VERSION, TranscriptDeriver, stream_name,
};
use crate::launch::runner_dir;
use crate::node_store::{self, LiveAttempt};
use crate::recording::{RecordError, Recorder};
use crate::transcript_reader::TranscriptReader;
use crate::transcripts::{self, TranscriptStart};
use stratavore_agent_shim::runner_dir::{
    ExitReason, ExitRecord, NODE_ENV, STDOUT_FILE, read_agent_pid,
};
use stratavore_agent_shim::shim::tree::marked_processes;
use stratavore_bus::{BrokerError, Topology, connect};
use stratavore_events::process::{
    NodeEvent, NodeRegistered, ProcessEvent, ProcessExited, ProcessStarted, TranscriptFile,
    root_key,
};
use stratavore_store::{NewEntry, StoreError};

/// Registration could not finish (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Recording failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The reason of `process.exited` for an attempt a restart ended.
pub const SUPERVISOR_RESTART: &str = "supervisor_restart";

/// An attempt left open, and whether its shim had recorded its end before
/// this node killed anything.
struct LeftOpen {
    attempt: LiveAttempt,
    exit: Option<ExitRecord>,
}

/// Register: the recorder's service carries the new incarnation.
pub async fn register(
    config: &SupervisorConfig,
    topology: &Topology,
    recorder: &Recorder,
    address: String,
) -> Result<(), RegisterError> {
    let node = &config.node.id;
    let data_dir = config.node.data_dir();
    // Which attempts had ended by themselves is read before the kill, so
    // that an end the kill causes is reported as the restart it is.
    let open: Vec<LeftOpen> = node_store::live_attempts(&recorder.pool, node, None)
        .await?
        .into_iter()
        .map(|attempt| {
            let dir = runner_dir(&data_dir, attempt.runner_id, attempt.attempt);
            let exit = ExitRecord::read(&dir).ok().flatten();
            LeftOpen { attempt, exit }
        })
        .collect();
    kill_marked(node).await;
    for left in open {
        close_attempt(config, recorder, left).await?;
    }
    declare_queues(config, topology).await?;
    let registered = NodeEvent::Registered(NodeRegistered {
        node: node.clone(),
        incarnation: recorder.service.me.incarnation,
        capacity: config.node.capacity,
        roots: config.node.root_names(),
        address,
    });
    let stream = format!("node-{node}");
    let version = recorder.stream_version(&stream).await? + 1;
    let entry = NewEntry::of(
        &registered,
        &recorder.service.source(),
        stream,
        version,
        node.clone(),
        recorder.service.clock.now(),
    );
    recorder.record(&[entry]).await?;
    tracing::info!(%node, incarnation = %recorder.service.me.incarnation, "registered");
    Ok(())
}

/// How long registration waits for the processes it killed to be gone.
const KILLED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGKILL every process whose environment carries this node's mark, and
/// wait (boundedly) until none is left: a transcript is read only once no
/// killed agent can still be writing to it.
async fn kill_marked(node: &str) {
    let mark = format!("{NODE_ENV}={node}");
    kill_each(&mark, true);
    let deadline = tokio::time::Instant::now() + KILLED_WITHIN;
    // A killed process whose parent has not reaped it yet is a zombie with
    // an empty environment, so it no longer matches the mark.
    while !marked_processes(&mark).is_empty() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%node, "processes of this node outlived their SIGKILL");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // One started between the scan and the kill is killed too.
        kill_each(&mark, false);
    }
}

fn kill_each(mark: &str, log: bool) {
    for pid in marked_processes(mark) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            // Gone meanwhile (ESRCH) is what a kill wants.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            if log {
                tracing::warn!(
                    pid = pid.as_raw_pid(),
                    "killed a process left by an earlier run"
                );
            }
        }
    }
}

/// Record what is left of an attempt's transcript, then its end: the
/// shim's own record when it had written one, else the restart.
async fn close_attempt(
    config: &SupervisorConfig,
    recorder: &Recorder,
    left: LeftOpen,
) -> Result<(), RegisterError> {
    let a = &left.attempt;
    let (runner, attempt) = (a.runner_id, a.attempt);
    let dir = runner_dir(&config.node.data_dir(), runner, attempt);
    let service = &recorder.service;
    let stream = stream_name(runner, attempt);
    // An attempt spawned before transcripts were kept per session wrote
    // to its runner directory.
    let start = transcripts::start_of(&recorder.pool, runner, attempt)
        .await?
        .unwrap_or_else(|| TranscriptStart {
            path: dir.join(STDOUT_FILE),
            offset: 0,
        });
    if recorder.stream_version(&stream).await? < STARTED_VERSION {
        match read_agent_pid(&dir).ok().flatten() {
            // The agent ran but its start was not recorded yet.
            Some(pid) => {
                let started = ProcessEvent::Started(ProcessStarted {
                    runner_id: runner,
                    attempt,
                    node: service.me.node.clone(),
                    pid: u32::try_from(pid).unwrap_or(0),
                });
                recorder
                    .record_once(&[service.process_entry(
                        &started,
                        runner,
                        attempt,
                        STARTED_VERSION,
                    )])
                    .await?;
            }
            None => {
                let size = transcripts::current_size(&start.path).unwrap_or(start.offset);
                let file = record_transcript_end(recorder, runner, attempt, &start, size).await?;
                let exited = restart_exit(service.me.node.clone(), runner, attempt, None, file);
                recorder
                    .record_once(&[service.process_entry(
                        &exited,
                        runner,
                        attempt,
                        STARTED_VERSION,
                    )])
                    .await?;
                return Ok(());
            }
        }
    }
    let mut deriver = TranscriptDeriver::new(
        AttemptIdentity {
            runner_id: runner,
            attempt,
            node: service.me.node.clone(),
        },
        attempt_setup(&config.profiles, &config.pricing, &a.offer, &dir),
    );
    let mut reader = TranscriptReader::at(start.path.clone(), start.offset);
    let lines = reader.remaining_lines().unwrap_or_else(|e| {
        tracing::warn!(%runner, attempt, error = %e, "cannot read the transcript");
        Vec::new()
    });
    let mut derived: Vec<_> = lines.iter().flat_map(|l| deriver.feed_line(l)).collect();
    let file = record_transcript_end(recorder, runner, attempt, &start, reader.offset()).await?;
    derived.extend(match &left.exit {
        Some(exit) if exit.reason != ExitReason::LeaseExpired => deriver.finish(exit, file),
        // The kill here, or a lease that ran out because no supervisor was
        // there to renew it: either way the restart ended the attempt. A
        // turn it interrupted was spent all the same, and is billed.
        ended => {
            if ended.is_some() {
                crate::metrics::lease_expired();
            }
            deriver.finish_interrupted(restart_exit(
                service.me.node.clone(),
                runner,
                attempt,
                ended.as_ref(),
                file,
            ))
        }
    });
    let entries: Vec<NewEntry> = derived
        .iter()
        .map(|d| service.process_entry(&d.event, runner, attempt, d.version))
        .collect();
    recorder.record_once(&entries).await?;
    tracing::warn!(%runner, attempt, "closed an attempt an earlier run left open");
    Ok(())
}

/// Record the transcript's size and sha256 over its first `size` bytes,
/// and describe the file for the attempt's exit; an unreadable file is
/// logged and left unrecorded rather than keep the attempt from its outcome.
async fn record_transcript_end(
    recorder: &Recorder,
    runner: uuid::Uuid,
    attempt: u32,
    start: &TranscriptStart,
    size: u64,
) -> Result<Option<TranscriptFile>, RegisterError> {
    match transcripts::summarize(&start.path, size) {
        Ok(summary) => {
            transcripts::record_end(&recorder.pool, runner, attempt, &summary).await?;
            Ok(Some(summary.file(&start.path)))
        }
        Err(e) => {
            tracing::warn!(%runner, attempt, error = %e, "cannot hash the transcript");
            Ok(None)
        }
    }
}

/// The end of an attempt this node's absence ended: its own kill at
/// registration (`lease_ended` None), or the shim's when the lease ran out
/// while no supervisor renewed it (its record gives the code or signal).
fn restart_exit(
    node: String,
    runner_id: uuid::Uuid,
    attempt: u32,
    lease_ended: Option<&ExitRecord>,
    transcript: Option<TranscriptFile>,
) -> ProcessEvent {
    let message = match lease_ended {
        Some(_) => "the supervisor was away past the lease and the shim ended the agent",
        None => "the supervisor restarted and ended the agent",
    };
    ProcessEvent::Exited(ProcessExited {
        runner_id,
        attempt,
        node,
        code: lease_ended.and_then(|e| e.code),
        signal: lease_ended.and_then(|e| e.signal),
        reason: SUPERVISOR_RESTART.to_owned(),
        outcome: "failed".to_owned(),
        message: Some(message.to_owned()),
        resets_at: None,
        transcript,
    })
}

/// Declare the node's control queue, its own offer queue and one shared
/// offer queue per root.
async fn declare_queues(
    config: &SupervisorConfig,
    topology: &Topology,
) -> Result<(), RegisterError> {
    let conn = connect(&config.base.broker.url, "runner-supervisor registration").await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|source| BrokerError::Operation {
            operation: "channel.open",
            source,
        })?;
    let keys: Vec<String> = config
        .node
        .root_names()
        .iter()
        .map(|r| root_key(r))
        .collect();
    for spec in topology.node_queues(&config.node.id, &keys) {
        topology
            .declare_queue(&channel, &spec)
            .await
            .map_err(BrokerError::from)?;
    }
    let _ = conn.close(200, "declared".into()).await;
    Ok(())
}
