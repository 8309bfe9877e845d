//! What the shim does to the tree, decided without I/O: the commands, the
//! lease and the agent's exit come in, an [`Action`] comes out.
//!
//! Rules: a command applies only when its `rev` is above the last applied
//! one. Once the agent is being stopped or killed, only `killed` still does
//! something (it cuts the grace short). The first cause of the end is the
//! one reported. The lease is the last good deadline read; before any was
//! read, the shim's start plus the spec's `lease_grace_ms`.

use crate::runner_dir::{Control, ExitReason, Want};

/// How often a paused tree is checked for a process that escaped the freeze.
const REFREEZE_EVERY_NS: u64 = 1_000_000_000;

/// What to do to every process of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing this time.
    Nothing,
    /// SIGSTOP.
    Freeze,
    /// SIGCONT.
    Thaw,
    /// SIGTERM, then SIGCONT so that stopped processes can act on it.
    Terminate,
    /// SIGKILL (repeated on every tick until no process is left).
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Paused { refreeze_at_ns: u64 },
    Terminating { kill_at_ns: u64 },
    Killing,
}

/// The shim's decisions about one agent.
#[derive(Debug, Clone)]
pub struct Policy {
    term_grace_ns: u64,
    applied_rev: Option<u64>,
    phase: Phase,
    cause: Option<ExitReason>,
    lease_deadline_ns: u64,
}

impl Policy {
    /// A policy for an agent started at `start_ns` ([`crate::runner_dir::boottime_ns`]).
    pub fn new(start_ns: u64, term_grace_ms: u64, lease_grace_ms: u64) -> Self {
        Self {
            term_grace_ns: term_grace_ms.saturating_mul(1_000_000),
            applied_rev: None,
            phase: Phase::Running,
            cause: None,
            lease_deadline_ns: start_ns.saturating_add(lease_grace_ms.saturating_mul(1_000_000)),
        }
    }

    /// A command read from the control file.
    pub fn on_control(&mut self, control: Control, now_ns: u64) -> Action {
        if self
            .applied_rev
            .is_some_and(|applied| control.rev <= applied)
        {
            return Action::Nothing;
        }
        self.applied_rev = Some(control.rev);
        match (self.phase, control.want) {
            (Phase::Killing, _) => Action::Nothing,
            (_, Want::Killed) => self.kill(ExitReason::KilledOnRequest),
            (Phase::Terminating { .. }, _) => Action::Nothing,
            (_, Want::Stopped) => {
                self.cause.get_or_insert(ExitReason::StoppedOnRequest);
                self.phase = Phase::Terminating {
                    kill_at_ns: now_ns.saturating_add(self.term_grace_ns),
                };
                Action::Terminate
            }
            (_, Want::Paused) => {
                self.phase = Phase::Paused {
                    refreeze_at_ns: now_ns.saturating_add(REFREEZE_EVERY_NS),
                };
                Action::Freeze
            }
            (_, Want::Running) => {
                self.phase = Phase::Running;
                Action::Thaw
            }
        }
    }

    /// A deadline read from a valid lease file. A missing or garbled file
    /// is not reported, so the last good deadline stays.
    pub fn on_lease(&mut self, deadline_ns: u64) {
        self.lease_deadline_ns = deadline_ns;
    }

    /// The agent has been reaped: whatever is left of the tree goes.
    pub fn on_agent_exit(&mut self) -> Action {
        self.kill(ExitReason::Exited)
    }

    /// The periodic check of the deadlines.
    pub fn on_tick(&mut self, now_ns: u64) -> Action {
        if self.phase == Phase::Killing {
            return Action::Kill;
        }
        if now_ns >= self.lease_deadline_ns {
            return self.kill(ExitReason::LeaseExpired);
        }
        match self.phase {
            Phase::Terminating { kill_at_ns } if now_ns >= kill_at_ns => {
                self.kill(ExitReason::StoppedOnRequest)
            }
            Phase::Paused { refreeze_at_ns } if now_ns >= refreeze_at_ns => {
                self.phase = Phase::Paused {
                    refreeze_at_ns: now_ns.saturating_add(REFREEZE_EVERY_NS),
                };
                Action::Freeze
            }
            _ => Action::Nothing,
        }
    }

    /// Whether the tree is being killed, so ticks should come faster.
    pub fn is_killing(&self) -> bool {
        self.phase == Phase::Killing
    }

    /// Why the agent ended; `exited` when nothing else happened first.
    pub fn cause(&self) -> ExitReason {
        self.cause.unwrap_or(ExitReason::Exited)
    }

    fn kill(&mut self, cause: ExitReason) -> Action {
        self.cause.get_or_insert(cause);
        self.phase = Phase::Killing;
        Action::Kill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn policy() -> Policy {
        let mut policy = Policy::new(0, 300, 1_000);
        policy.on_lease(u64::MAX);
        policy
    }

    fn control(rev: u64, want: Want) -> Control {
        Control { rev, want }
    }

    #[test]
    fn pause_and_resume_follow_increasing_revs_only() {
        let mut policy = policy();
        assert_eq!(
            policy.on_control(control(1, Want::Paused), 0),
            Action::Freeze
        );
        assert_eq!(
            policy.on_control(control(1, Want::Paused), 0),
            Action::Nothing
        );
        assert_eq!(
            policy.on_control(control(2, Want::Running), 0),
            Action::Thaw
        );
        assert_eq!(
            policy.on_control(control(1, Want::Paused), 0),
            Action::Nothing
        );
    }

    #[test]
    fn a_paused_tree_is_frozen_again_every_second() {
        let mut policy = policy();
        policy.on_control(control(1, Want::Paused), 0);
        assert_eq!(policy.on_tick(500 * MS), Action::Nothing);
        assert_eq!(policy.on_tick(1_000 * MS), Action::Freeze);
        assert_eq!(policy.on_tick(1_500 * MS), Action::Nothing);
    }

    #[test]
    fn stop_terminates_then_kills_after_the_grace() {
        let mut policy = policy();
        assert_eq!(
            policy.on_control(control(1, Want::Stopped), 0),
            Action::Terminate
        );
        assert_eq!(policy.on_tick(299 * MS), Action::Nothing);
        assert_eq!(
            policy.on_control(control(2, Want::Running), 0),
            Action::Nothing
        );
        assert_eq!(policy.on_tick(300 * MS), Action::Kill);
        assert!(policy.is_killing());
        assert_eq!(policy.cause(), ExitReason::StoppedOnRequest);
    }

    #[test]
    fn kill_cuts_a_stop_short_and_the_first_cause_stays() {
        let mut policy = policy();
        policy.on_control(control(1, Want::Stopped), 0);
        assert_eq!(policy.on_control(control(2, Want::Killed), 0), Action::Kill);
        policy.on_agent_exit();
        assert_eq!(policy.cause(), ExitReason::StoppedOnRequest);
    }

    #[test]
    fn an_agent_that_ends_by_itself_exited() {
        let mut policy = policy();
        assert_eq!(policy.on_agent_exit(), Action::Kill);
        assert_eq!(policy.on_tick(0), Action::Kill);
        assert_eq!(policy.cause(), ExitReason::Exited);
    }

    #[test]
    fn the_lease_expires_at_its_deadline_even_while_paused() {
        let mut policy = policy();
        policy.on_lease(100 * MS);
        policy.on_control(control(1, Want::Paused), 0);
        assert_eq!(policy.on_tick(99 * MS), Action::Nothing);
        assert_eq!(policy.on_tick(100 * MS), Action::Kill);
        assert_eq!(policy.cause(), ExitReason::LeaseExpired);
    }

    #[test]
    fn without_any_lease_the_grace_counts_from_the_start() {
        let mut policy = Policy::new(10 * MS, 300, 1_000);
        assert_eq!(policy.on_tick(1_009 * MS), Action::Nothing);
        assert_eq!(policy.on_tick(1_010 * MS), Action::Kill);
        assert_eq!(policy.cause(), ExitReason::LeaseExpired);
    }
}
