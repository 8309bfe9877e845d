//! A scan's file work must leave the runtime free: the heartbeat runs on
//! the same workers, and a late heartbeat ends the node's runners.
//!
//! Each test makes one file of a runner a FIFO, whose open blocks until the
//! test opens the other end, and runs the scan step on a current-thread
//! runtime (one thread polls every task) beside a task that ticks. The
//! ticks must go on while the step is stuck; a step run on the runtime's
//! thread would hold it until the FIFO's deadline and fail the test.

use super::*;
use crate::domain::node_commands::NodeIdentity;
use crate::domain::transcript_events::{AttemptIdentity, AttemptSetup};
use crate::launch::Launched;
use crate::transcripts::TranscriptStart;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use stratavore_agent_shim::runner_dir::{ExitReason, ExitRecord, write_agent_pid};
use stratavore_runtime::{BootInstant, Shutdown, SystemClock};

/// Ticks the other task must make while the step is stuck.
const TICKS: u32 = 20;
/// How long the test leaves the step stuck at most: far more than `TICKS`
/// ticks of a millisecond take on a free runtime.
const FIFO_DEADLINE: Duration = Duration::from_secs(10);

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stv-runner-set-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn make_fifo(path: &Path) {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
}

fn supervisor() -> Arc<Supervisor> {
    Arc::new(Supervisor {
        me: NodeIdentity {
            node: "n".to_owned(),
            incarnation: Uuid::nil(),
        },
        roots: Vec::new(),
        capacity: 1,
        clock: Arc::new(SystemClock),
    })
}

/// A set of one runner whose agent's pid is written, so the next look
/// finds it running, and whose transcript holds one line.
fn one_running_runner(scratch: &Path) -> (RunnerSet, PathBuf) {
    let dir = scratch.join("runner");
    std::fs::create_dir_all(&dir).unwrap();
    write_agent_pid(&dir, 4242).unwrap();
    let transcript = scratch.join("s.jsonl");
    std::fs::write(&transcript, b"{\"type\":\"unknown\"}\n").unwrap();
    let runner_id = Uuid::new_v4();
    let runner = ActiveRunner::launched(
        AttemptIdentity {
            runner_id,
            attempt: 1,
            node: "n".to_owned(),
        },
        AttemptSetup::claude("s"),
        None,
        Launched {
            dir: dir.clone(),
            // Never waited on: the agent's pid is already there.
            shim: std::process::Command::new("true").spawn().unwrap(),
        },
        TranscriptStart {
            path: transcript,
            offset: 0,
        },
        BootInstant::now(),
    );
    let mut set = RunnerSet::default();
    set.insert((runner_id, 1), runner);
    (set, dir)
}

/// How a step stuck on a FIFO went.
struct Stuck<T> {
    /// What the step returned.
    out: T,
    /// The other task ticked [`TICKS`] times while the step was stuck, so
    /// the test, not the deadline, opened the FIFO.
    ticked_meanwhile: bool,
    /// The step was still stuck when the ticks were counted: else the FIFO
    /// never held it and the test proves nothing.
    was_held: bool,
}

/// Run `step` on a current-thread runtime beside a ticking task while
/// `fifo` is stuck until `other_end` opens it: the test opens it once the
/// task ticked [`TICKS`] times, or after [`FIFO_DEADLINE`] regardless.
fn stuck_on_fifo<S, T>(
    fifo: PathBuf,
    other_end: impl FnOnce(&Path) + Send + 'static,
    step: impl FnOnce() -> S,
) -> Stuck<T>
where
    S: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (release, released) = std::sync::mpsc::channel::<()>();
    let opener = std::thread::spawn(move || {
        let on_time = released.recv_timeout(FIFO_DEADLINE).is_ok();
        other_end(&fifo);
        on_time
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (out, was_held) = runtime.block_on(async {
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let stepping = tokio::spawn(step());
        let give_up = Instant::now() + 2 * FIFO_DEADLINE;
        while ticks.load(Ordering::SeqCst) < TICKS && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let was_held = !stepping.is_finished();
        let _ = release.send(());
        let out = stepping.await.unwrap();
        ticker.abort();
        (out, was_held)
    });
    // A step that never opened the FIFO leaves the opener blocked on its
    // end for good: fail rather than hang on it.
    assert!(
        was_held || opener.is_finished(),
        "the step never opened the FIFO: the test proves nothing"
    );
    Stuck {
        out,
        ticked_meanwhile: opener.join().unwrap(),
        was_held,
    }
}

#[test]
fn a_scan_stuck_reading_a_runner_directory_does_not_hold_up_other_tasks() {
    let scratch = scratch();
    let (set, dir) = one_running_runner(&scratch);
    let exit_json = dir.join("exit.json");
    make_fifo(&exit_json);
    let exit = ExitRecord {
        code: Some(0),
        signal: None,
        reason: ExitReason::Exited,
        detail: None,
        ended_boottime_ns: 1,
    };
    let text = serde_json::to_vec(&exit).unwrap();
    let write_exit = move |fifo: &Path| {
        let mut file = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        file.write_all(&text).unwrap();
    };

    let stuck = stuck_on_fifo(exit_json, write_exit, || set.read(supervisor(), Vec::new()));

    assert!(
        stuck.ticked_meanwhile,
        "the other task stopped ticking while the scan read: the read ran on the runtime"
    );
    assert!(stuck.was_held, "the read did not wait for exit.json");
    let (mut set, lines) = stuck.out.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].lines, vec!["{\"type\":\"unknown\"}"]);
    let types: Vec<&str> = set.pending()[0]
        .iter()
        .map(|e| e.envelope.type_name.as_str())
        .collect();
    assert_eq!(
        (types.first().copied(), types.last().copied()),
        (
            Some("io.stratavore.process.started.v1"),
            Some("io.stratavore.process.exited.v1")
        ),
        "the look read the exit through the FIFO: {types:?}"
    );
    for runner in set.runners_mut() {
        if let Some(mut shim) = runner.shim.take() {
            shim.wait().unwrap();
        }
    }
    std::fs::remove_dir_all(scratch).unwrap();
}

#[test]
fn renewing_leases_stuck_on_a_runner_directory_does_not_hold_up_other_tasks() {
    let scratch = scratch();
    let (set, dir) = one_running_runner(&scratch);
    // A lease is rewritten in place: a FIFO there holds the writer.
    let lease = dir.join("lease");
    make_fifo(&lease);
    let liveness = Arc::new(Liveness::new(Duration::from_secs(60), Shutdown::new()));
    liveness.confirmed(crate::liveness::boot_now());
    let deadline = liveness.lease_deadline_nanos().unwrap();
    let read_lease = |fifo: &Path| {
        let mut text = String::new();
        std::fs::File::open(fifo)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
    };

    let stuck = stuck_on_fifo(lease, read_lease, {
        let liveness = liveness.clone();
        || set.upkeep(liveness)
    });

    assert!(
        stuck.ticked_meanwhile,
        "the other task stopped ticking while the leases were renewed: they were written on the runtime"
    );
    assert!(
        stuck.was_held,
        "the renewal did not wait for the lease FIFO"
    );
    let mut set = stuck.out.unwrap();
    assert_eq!(set.last_lease, Some(deadline));
    for runner in set.runners_mut() {
        if let Some(mut shim) = runner.shim.take() {
            shim.wait().unwrap();
        }
    }
    std::fs::remove_dir_all(scratch).unwrap();
}
