//! The supervision loop: reap, read the runner directory, act on the tree,
//! and produce the outcome once no process of the tree is left.

use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use super::policy::{Action, Policy};
use super::tree;
use crate::runner_dir::{
    ExitRecord, RUNNER_MARK_ENV, ShimSpec, boottime_ns, read_control, read_lease,
};

/// The pace of the loop while the agent runs: how late a command, a lease
/// expiry or an exit can be noticed. Every tick wakes the shim and reads
/// two files: at 50 ms, a thousand idle shims took most of a core of a
/// two-core node (`make bench`, supervision scale); at 200 ms a stop or a
/// pause still lands well within the round trip of the command that asked
/// for it, and a lease is far longer.
const TICK: Duration = Duration::from_millis(200);
/// The pace of the first kill passes, so the last process is reaped soon
/// after it dies; a process stuck in the kernel (state D) can outlast them,
/// and is then waited for at the normal pace rather than by scanning /proc
/// two hundred times a second.
const KILL_TICK: Duration = Duration::from_millis(5);
const FAST_KILL_PASSES: u32 = 40;
/// How long one freeze keeps chasing processes forked meanwhile; what it
/// misses, the periodic refreeze of the policy catches.
const FREEZE_BUDGET: Duration = Duration::from_millis(200);

/// Supervises the agent `agent`, a child of the calling process (which must
/// be a child subreaper), until neither it nor any other descendant remains.
/// `start_ns` is when the shim started, on `CLOCK_BOOTTIME`.
pub fn supervise(dir: &Path, spec: &ShimSpec, agent: Pid, start_ns: u64) -> ExitRecord {
    let me = rustix::process::getpid().as_raw_pid();
    let mut policy = Policy::new(start_ns, spec.term_grace_ms, spec.lease_grace_ms);
    let mut agent_status: Option<WaitStatus> = None;
    let mut kill_passes: u32 = 0;
    loop {
        let had_status = agent_status.is_some();
        let children_left = reap_children(agent, &mut agent_status);
        if agent_status.is_some() && !had_status {
            apply(me, policy.on_agent_exit());
        }
        if !children_left {
            break;
        }
        let now = boottime_ns();
        // A garbled or half-replaced control file, or a lease record torn by
        // a renewal in progress, is read again on the next tick (the lease
        // kept meanwhile is the earlier one); both are rare, not worth a report.
        if let Ok(Some(control)) = read_control(dir) {
            apply(me, policy.on_control(control, now));
        }
        if let Ok(Some(deadline_ns)) = read_lease(dir) {
            policy.on_lease(deadline_ns);
        }
        apply(me, policy.on_tick(now));
        let fast = policy.is_killing() && kill_passes < FAST_KILL_PASSES;
        kill_passes = kill_passes.saturating_add(u32::from(policy.is_killing()));
        std::thread::sleep(if fast { KILL_TICK } else { TICK });
    }
    kill_marked_strays(me, spec);
    ExitRecord {
        code: agent_status.and_then(WaitStatus::exit_status),
        signal: agent_status.and_then(WaitStatus::terminating_signal),
        reason: policy.cause(),
        detail: agent_status
            .is_none()
            .then(|| "the agent's exit status was lost".to_owned()),
        ended_boottime_ns: boottime_ns(),
    }
}

/// Reaps every child that has ended, keeping the agent's status; returns
/// whether any child is left (false once waitpid says ECHILD). Every
/// descendant descends from a child, so no child means no descendant.
fn reap_children(agent: Pid, agent_status: &mut Option<WaitStatus>) -> bool {
    loop {
        // `wait` is waitpid(-1): any child. rustix's `waitpid(None, ..)` is
        // waitpid(0), which misses the agent since it has a group of its own.
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if pid == agent {
                    *agent_status = Some(status);
                }
            }
            Ok(None) => return true,
            Err(Errno::CHILD) => return false,
            Err(Errno::INTR) => {}
            // Nothing else is expected of waitpid; assume children remain
            // and try again on the next tick rather than end early.
            Err(_) => return true,
        }
    }
}

fn apply(me: i32, action: Action) {
    match action {
        Action::Nothing => {}
        Action::Freeze => {
            tree::stop_tree(me, FREEZE_BUDGET);
        }
        Action::Thaw => tree::signal_tree(me, Signal::CONT),
        Action::Terminate => {
            let processes = tree::descendants(me);
            tree::signal_each(&processes, Signal::TERM);
            // A frozen process only acts on its pending SIGTERM once it runs.
            tree::signal_each(&processes, Signal::CONT);
        }
        Action::Kill => tree::signal_tree(me, Signal::KILL),
    }
}

/// The second net: a process that carries this attempt's mark but is no
/// longer below the shim (which a subreaper should make impossible) is
/// killed too. It is not the shim's to reap, so this does not wait for it.
fn kill_marked_strays(me: i32, spec: &ShimSpec) {
    let entry = format!("{RUNNER_MARK_ENV}={}", spec.runner_mark());
    for pid in tree::marked_processes(&entry) {
        if pid != me
            && let Some(pid) = Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
}
