//! Registration, the one moment a node (re)starts from (DESIGN section 4):
//! kill every process that carries this node's mark, close every attempt a
//! previous run left open (so each still gets its outcome), declare the
//! node's queues, and record `node.registered` with the new incarnation.

use crate::config::SupervisorConfig;
use crate::domain::pricing::PriceTable;
use crate::domain::transcript_events::{
    AttemptIdentity, STARTED_VERSION, TranscriptDeriver, stream_name,
};
use crate::launch::runner_dir;
use crate::node_store::{self, LiveAttempt};
use crate::recording::{RecordError, Recorder};
use crate::transcript_reader::TranscriptReader;
use stratavore_agent_shim::runner_dir::{ExitRecord, NODE_ENV, STDOUT_FILE, read_agent_pid};
use stratavore_agent_shim::shim::tree::marked_processes;
use stratavore_bus::{BrokerError, Topology, connect};
use stratavore_events::process::{
    NodeEvent, NodeRegistered, ProcessEvent, ProcessExited, ProcessStarted, root_key,
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
    kill_marked(node);
    for left in open {
        close_attempt(recorder, &data_dir, left).await?;
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

/// SIGKILL every process whose environment carries this node's mark.
fn kill_marked(node: &str) {
    for pid in marked_processes(&format!("{NODE_ENV}={node}")) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            // Gone meanwhile (ESRCH) is what a kill wants.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            tracing::warn!(
                pid = pid.as_raw_pid(),
                "killed a process left by an earlier run"
            );
        }
    }
}

/// Record what is left of an attempt's transcript, then its end: the
/// shim's own record when it had written one, else the restart.
async fn close_attempt(
    recorder: &Recorder,
    data_dir: &std::path::Path,
    left: LeftOpen,
) -> Result<(), RegisterError> {
    let a = &left.attempt;
    let (runner, attempt) = (a.runner_id, a.attempt);
    let dir = runner_dir(data_dir, runner, attempt);
    let service = &recorder.service;
    let stream = stream_name(runner, attempt);
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
                let exited = restart_exit(service.me.node.clone(), runner, attempt);
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
        PriceTable::default(),
        a.offer.session_id.clone(),
    );
    let lines = TranscriptReader::new(dir.join(STDOUT_FILE))
        .remaining_lines()
        .unwrap_or_default();
    let mut derived: Vec<_> = lines.iter().flat_map(|l| deriver.feed_line(l)).collect();
    if let Some(exit) = &left.exit {
        derived.extend(deriver.finish(exit));
    }
    let entries: Vec<NewEntry> = derived
        .iter()
        .map(|d| service.process_entry(&d.event, runner, attempt, d.version))
        .collect();
    recorder.record_once(&entries).await?;
    if left.exit.is_none() {
        let version = recorder.stream_version(&stream).await? + 1;
        let exited = restart_exit(service.me.node.clone(), runner, attempt);
        recorder
            .record_once(&[service.process_entry(&exited, runner, attempt, version)])
            .await?;
    }
    tracing::warn!(%runner, attempt, "closed an attempt an earlier run left open");
    Ok(())
}

fn restart_exit(node: String, runner_id: uuid::Uuid, attempt: u32) -> ProcessEvent {
    ProcessEvent::Exited(ProcessExited {
        runner_id,
        attempt,
        node,
        code: None,
        signal: None,
        reason: SUPERVISOR_RESTART.to_owned(),
        outcome: "failed".to_owned(),
        message: Some("the supervisor restarted and ended the agent".to_owned()),
        resets_at: None,
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
