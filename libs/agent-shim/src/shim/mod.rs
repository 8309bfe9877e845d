//! The shim: the parent of one agent and of everything the agent starts.
//!
//! [`run`] takes over the calling process: it leaves the caller's session,
//! becomes a child subreaper, spawns the agent from the runner directory's
//! spec, follows the control and lease files, and writes `exit.json` once
//! no process of the tree remains (see [`crate::runner_dir`]).

pub mod policy;
pub mod spawn;
pub mod supervise;
pub mod tree;

use std::error::Error;
use std::io::Write;
use std::path::Path;

use crate::runner_dir::{
    ExitReason, ExitRecord, RunnerDirError, ShimSpec, boottime_ns, write_agent_pid, write_shim_pid,
};

/// The shim could not record anything in its runner directory, so nobody
/// will learn the outcome from there; the binary exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("cannot record the runner's outcome in its directory")]
pub struct ShimError(#[from] RunnerDirError);

/// Runs the shim for the runner directory `dir` in the calling process and
/// returns the outcome it wrote to `exit.json`. Meant for the
/// `stratavore-shim` binary only: it calls `setsid` and makes the process a
/// child subreaper, which a test harness or a service must not undergo.
pub fn run(dir: &Path) -> Result<ExitRecord, ShimError> {
    leave_callers_session();
    let me = rustix::process::getpid();
    write_shim_pid(dir, me.as_raw_pid())?;
    let start_ns = boottime_ns();
    let spec = match ShimSpec::read(dir) {
        Ok(spec) => spec,
        Err(error) => return spawn_failed(dir, &error),
    };
    // Without this an orphaned grandchild would go to init and outlive the
    // runner unseen, so no agent may start when it fails.
    if let Err(errno) = rustix::process::set_child_subreaper(Some(me)) {
        let error = std::io::Error::from(errno);
        return spawn_failed(dir, &error);
    }
    let agent = match spawn::spawn_agent(dir, &spec) {
        Ok(agent) => agent,
        Err(error) => return spawn_failed(dir, &error),
    };
    if let Err(error) = write_agent_pid(dir, agent.as_raw_pid()) {
        // Only informational for the supervisor; the run goes on.
        warn(&describe(&error));
    }
    let record = supervise::supervise(dir, &spec, agent, start_ns);
    record.write(dir)?;
    Ok(record)
}

/// A session of its own, so that neither the supervisor's terminal nor a
/// signal to the supervisor's process group reaches the shim, and the shim
/// outlives the supervisor.
fn leave_callers_session() {
    if rustix::process::setsid().is_ok() {
        return;
    }
    // setsid fails for a process group leader; that is harmless when it
    // already leads its own session, worth a word on stderr otherwise.
    let me = rustix::process::getpid();
    if rustix::process::getsid(None) != Ok(me) {
        warn("setsid failed (started as a process group leader?); staying in the caller's session");
    }
}

fn spawn_failed(dir: &Path, error: &dyn Error) -> Result<ExitRecord, ShimError> {
    let record = ExitRecord {
        code: None,
        signal: None,
        reason: ExitReason::SpawnFailed,
        detail: Some(describe(error)),
        ended_boottime_ns: boottime_ns(),
    };
    record.write(dir)?;
    Ok(record)
}

/// A line on the shim's stderr. Unlike `eprintln!`, a stderr that is gone
/// (a pipe to a supervisor that died) cannot make the shim panic.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "stratavore-shim: {message}");
}

/// An error and its causes on one line, e.g. `cannot start "x" in "/": No such file or directory`.
pub fn describe(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
