//! A runner's lifecycle, decided: its state folded from its stream, and
//! what each client command or process fact leads to (events to record and
//! effects to send). Pure: ids and times come in with the input.
//!
//! Facts carry the attempt they are about. A fact of an attempt that is not
//! the current one decides nothing, except that a process of a stale attempt
//! that says it runs is killed on sight.

use stratavore_events::runner::{
    AttemptOffered, AttemptPlaced, AttemptRelaunched, AttemptRunning, PauseCause, PauseChanged,
    QuotaWait, RestartScheduled, RunnerEnded, RunnerEvent, SessionBound, StopRequested, Want,
};
use uuid::Uuid;

/// Where a runner is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Approved, not yet offered.
    Requested,
    /// An attempt is offered or placed and not yet running.
    Starting,
    /// The attempt's process runs.
    Running,
    /// Frozen (every process stopped).
    Paused,
    /// A stop or kill was sent; waiting for the exit.
    Stopping,
    /// Waiting for the backoff before the next attempt.
    Restarting,
    /// Waiting for a provider quota window to reset.
    WaitingQuota,
    /// Ended: the agent exited, cleanly or on request.
    Exited,
    /// Ended: it failed and may not restart.
    Failed,
    /// Ended: lost with its node.
    Lost,
    /// Ended: refused at launch.
    Rejected,
    /// Ended: cancelled before running, or while waiting.
    Cancelled,
}

impl RunnerState {
    /// Whether the runner has its terminal outcome.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Exited | Self::Failed | Self::Lost | Self::Rejected | Self::Cancelled
        )
    }
}

/// A runner, as its stream has made it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Runner {
    /// Its id.
    pub id: Uuid,
    /// Its state.
    pub state: RunnerState,
    /// The current attempt (0 before the first offer).
    pub attempt: u32,
    /// The node and incarnation of the current attempt, once placed.
    pub placement: Option<(String, Uuid)>,
    /// The session it runs.
    pub session_id: String,
    /// Whether the agent saved a first turn (the session can be resumed).
    pub session_bound: bool,
    /// Restarts used.
    pub restarts: u32,
    /// Restarts allowed.
    pub max_restarts: u32,
    /// Why it is paused.
    pub pause: Option<PauseCause>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The agent's last exit code.
    pub exit_code: Option<i32>,
    /// What every attempt is launched with.
    pub launch: LaunchSpec,
}

/// What every attempt of a runner is launched with.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    /// The project.
    pub project: String,
    /// Its path.
    pub path: String,
    /// The agent profile.
    pub profile: String,
    /// The prompt.
    pub prompt: String,
    /// Model, when chosen.
    pub model: Option<String>,
    /// Permission setting, when chosen.
    pub permission: Option<String>,
    /// Tools the agent may use without asking (default: none, as in
    /// snapshots written before launches chose tools).
    #[serde(default)]
    pub allowed_tools: Vec<String>,
}

/// Fold one event.
pub fn apply(state: Option<Runner>, event: &RunnerEvent) -> Option<Runner> {
    use RunnerEvent as E;
    let mut r = match (state, event) {
        (None, E::LaunchApproved(a)) => {
            return Some(Runner {
                id: a.runner_id,
                state: RunnerState::Requested,
                attempt: 0,
                placement: None,
                session_id: a.session_id.clone(),
                session_bound: a.resume,
                restarts: 0,
                max_restarts: a.max_restarts,
                pause: None,
                last_error: None,
                exit_code: None,
                launch: LaunchSpec {
                    project: a.project.clone(),
                    path: a.path.clone(),
                    profile: a.profile.clone(),
                    prompt: a.prompt.clone(),
                    model: a.model.clone(),
                    permission: a.permission.clone(),
                    allowed_tools: a.allowed_tools.clone(),
                },
            });
        }
        (None, E::LaunchRejected(r)) => {
            return Some(Runner {
                id: r.runner_id,
                state: RunnerState::Rejected,
                attempt: 0,
                placement: None,
                session_id: String::new(),
                session_bound: false,
                restarts: 0,
                max_restarts: 0,
                pause: None,
                last_error: Some(r.reason.clone()),
                exit_code: None,
                launch: LaunchSpec::default(),
            });
        }
        (None, _) => return None,
        (Some(r), _) => r,
    };
    match event {
        E::LaunchApproved(_) | E::LaunchRejected(_) | E::ControlDecided(_) => {}
        E::Offered(o) => {
            r.state = RunnerState::Starting;
            r.attempt = o.attempt;
            r.placement = None;
            r.session_id = o.session_id.clone();
            r.session_bound = o.resume;
        }
        E::Placed(p) => r.placement = Some((p.node.clone(), p.incarnation)),
        E::Started(_) => r.state = RunnerState::Running,
        E::Paused(p) => {
            r.state = RunnerState::Paused;
            r.pause = Some(p.cause);
        }
        E::Resumed(_) => {
            r.state = RunnerState::Running;
            r.pause = None;
        }
        E::StopRequested(_) => r.state = RunnerState::Stopping,
        E::SessionBound(b) => {
            r.session_bound = true;
            r.session_id = b.session_id.clone();
        }
        E::RestartScheduled(s) => {
            r.state = RunnerState::Restarting;
            r.restarts += 1;
            r.last_error = Some(s.reason.clone());
        }
        E::WaitingQuota(q) => {
            r.state = RunnerState::WaitingQuota;
            r.last_error = Some(q.message.clone());
        }
        // The next attempt's offer follows in the same decision; a pause
        // does not outlive the attempt it froze.
        E::Relaunched(l) => {
            r.last_error = Some(l.reason.clone());
            r.pause = None;
        }
        E::Exited(e) | E::Failed(e) | E::Lost(e) | E::Cancelled(e) => {
            r.state = match event {
                E::Exited(_) => RunnerState::Exited,
                E::Failed(_) => RunnerState::Failed,
                E::Lost(_) => RunnerState::Lost,
                _ => RunnerState::Cancelled,
            };
            r.exit_code = e.exit_code.or(r.exit_code);
            if e.reason != "completed" {
                r.last_error = Some(e.reason.clone());
            }
        }
    }
    Some(r)
}

/// What a decision sends beyond recording events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Offer the attempt for placement.
    Offer {
        /// The attempt.
        attempt: u32,
        /// Whether it resumes the session.
        resume: bool,
    },
    /// Tell the claiming node to spawn.
    Start {
        /// The node.
        node: String,
        /// Its incarnation (a `start` is honoured only by it).
        incarnation: Uuid,
        /// The attempt.
        attempt: u32,
    },
    /// Tell a claiming node not to spawn.
    Revoke {
        /// The node.
        node: String,
        /// Its incarnation.
        incarnation: Uuid,
        /// The attempt.
        attempt: u32,
    },
    /// Bring the attempt's process tree to `want` on its node.
    Control {
        /// The node.
        node: String,
        /// The attempt.
        attempt: u32,
        /// The desired state.
        want: Want,
    },
}

/// Events to record and effects to send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Appended to the runner's stream, in order.
    pub events: Vec<RunnerEvent>,
    /// Sent after the events are recorded.
    pub effects: Vec<Effect>,
}

/// A client's request that the runner's state does not allow (409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a runner that is {state:?} cannot be made {want:?}")]
pub struct IllegalTransition {
    /// The state it is in.
    pub state: RunnerState,
    /// What was asked.
    pub want: Want,
}

fn ended(r: &Runner, reason: &str, exit_code: Option<i32>) -> RunnerEnded {
    RunnerEnded {
        runner_id: r.id,
        attempt: r.attempt,
        exit_code,
        reason: reason.to_owned(),
    }
}

/// Decide a client's stop, kill, pause or resume.
pub fn decide_control(r: &Runner, want: Want) -> Result<Decision, IllegalTransition> {
    use RunnerState as S;
    let illegal = || IllegalTransition {
        state: r.state,
        want,
    };
    let control = |want| {
        r.placement.as_ref().map(|(node, _)| Effect::Control {
            node: node.clone(),
            attempt: r.attempt,
            want,
        })
    };
    let decision =
        |events: Vec<RunnerEvent>, effects: Vec<Effect>| Ok(Decision { events, effects });
    match (want, r.state) {
        (_, s) if s.is_terminal() => Err(illegal()),
        (Want::Stopped | Want::Killed, S::Requested | S::Restarting | S::WaitingQuota) => decision(
            vec![RunnerEvent::Cancelled(ended(r, "cancelled", None))],
            vec![],
        ),
        // Not placed yet: the offer in the queue is revoked when claimed.
        (Want::Stopped | Want::Killed, S::Starting) if r.placement.is_none() => decision(
            vec![RunnerEvent::Cancelled(ended(r, "cancelled", None))],
            vec![],
        ),
        (Want::Stopped, S::Stopping) => decision(vec![], vec![]),
        (Want::Stopped | Want::Killed, S::Starting | S::Running | S::Paused | S::Stopping) => {
            decision(
                vec![RunnerEvent::StopRequested(StopRequested {
                    runner_id: r.id,
                    want,
                })],
                control(want).into_iter().collect(),
            )
        }
        (Want::Paused, S::Paused) => decision(vec![], vec![]),
        (Want::Paused, S::Running) => decision(
            vec![RunnerEvent::Paused(PauseChanged {
                runner_id: r.id,
                cause: PauseCause::User,
            })],
            control(Want::Paused).into_iter().collect(),
        ),
        (Want::Running, S::Running) => decision(vec![], vec![]),
        // Only the cause that paused a runner lifts the pause.
        (Want::Running, S::Paused) if r.pause == Some(PauseCause::User) => decision(
            vec![RunnerEvent::Resumed(PauseChanged {
                runner_id: r.id,
                cause: PauseCause::User,
            })],
            control(Want::Running).into_iter().collect(),
        ),
        _ => Err(illegal()),
    }
}

/// How an attempt's process ended, as its parser and exit status say.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitOutcome {
    /// It finished its work.
    Clean,
    /// It failed (crash, error result, signal).
    Error(String),
    /// It ended on a provider quota or rate limit.
    RateLimited {
        /// When to resume (unix milliseconds).
        resume_at_ms: i64,
        /// The provider's message.
        message: String,
    },
    /// Its node, not the agent, ended it: the supervisor restarted, or its
    /// lease ran out (the node stalled or lost the broker). Decided as the
    /// node's loss would be, whichever of the two the orchestrator hears of
    /// first: the next attempt follows without using a restart.
    NodeFailure {
        /// Why, in the node's words.
        reason: String,
        /// A session id to start afresh under, when the session is not bound.
        fresh_session_id: String,
        /// When the next attempt's launch times out (unix milliseconds).
        launch_deadline_ms: i64,
    },
}

/// A fact about an attempt, from a supervisor or a durable timer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A node claimed an offer.
    Claimed {
        /// The attempt.
        attempt: u32,
        /// The node.
        node: String,
        /// Its incarnation.
        incarnation: Uuid,
    },
    /// The process was spawned.
    ProcessStarted {
        /// The attempt.
        attempt: u32,
        /// Where it runs (for killing a stale one).
        node: String,
        /// Its pid.
        pid: u32,
    },
    /// The process ended and no descendant of it remains.
    ProcessExited {
        /// The attempt.
        attempt: u32,
        /// Its exit code.
        code: Option<i32>,
        /// How it ended.
        outcome: ExitOutcome,
    },
    /// The agent saved its first turn.
    SessionBound {
        /// The attempt.
        attempt: u32,
        /// The agent's session id.
        session_id: String,
    },
    /// No node started the attempt in time.
    LaunchTimedOut {
        /// The attempt.
        attempt: u32,
    },
    /// A node registered again with a new incarnation: an attempt its old
    /// incarnation claimed and never started will never start.
    NodeReincarnated {
        /// The node.
        node: String,
        /// Its new incarnation.
        incarnation: Uuid,
        /// A session id to start afresh under, when the session is not bound.
        fresh_session_id: String,
        /// When the next attempt's launch times out (unix milliseconds).
        launch_deadline_ms: i64,
    },
    /// An incarnation of a node was declared lost: the attempt placed on
    /// it is gone, and a session whose files only that node holds cannot
    /// be resumed until the node is back.
    NodeLost {
        /// The node.
        node: String,
        /// Its incarnation declared lost.
        incarnation: Uuid,
        /// The node recorded as holding the runner's session files (the
        /// one the attempt that bound it ran on), when known.
        session_node: Option<String>,
        /// Whether the nodes share session storage (then any node resumes
        /// any session).
        shared_storage: bool,
        /// A session id to start afresh under, when the session is not bound.
        fresh_session_id: String,
        /// When the next attempt's launch times out (unix milliseconds).
        launch_deadline_ms: i64,
    },
    /// The restart backoff (or the quota wait) is over.
    WaitOver {
        /// The attempt that ended.
        attempt: u32,
        /// A session id to start afresh under, when the session is not bound.
        fresh_session_id: String,
        /// When the next attempt's launch times out (unix milliseconds).
        launch_deadline_ms: i64,
        /// Whether the project has a free slot now. A runner waiting on a
        /// quota gives its slot up (it may wait for hours), so its resume
        /// is admitted like a launch; a restart's backoff keeps its slot.
        slot_free: bool,
        /// When to look for a free slot again if there is none.
        slot_retry_at_ms: i64,
    },
}

/// Exponential backoff for restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The first wait.
    pub base_ms: i64,
    /// The longest wait.
    pub max_ms: i64,
}

impl RestartPolicy {
    /// The wait before restart number `restarts + 1`.
    pub fn backoff_ms(&self, restarts: u32) -> i64 {
        let factor = 1_i64.checked_shl(restarts.min(30)).unwrap_or(i64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }
}

fn placed_here(r: &Runner, attempt: u32) -> bool {
    attempt == r.attempt && r.placement.is_some()
}

/// Decide what a fact about an attempt leads to.
pub fn decide_fact(r: &Runner, fact: Fact, now_ms: i64, policy: RestartPolicy) -> Decision {
    use RunnerState as S;
    let mut d = Decision::default();
    match fact {
        Fact::Claimed {
            attempt,
            node,
            incarnation,
        } => {
            let first_claim =
                attempt == r.attempt && r.state == S::Starting && r.placement.is_none();
            if first_claim {
                d.events.push(RunnerEvent::Placed(AttemptPlaced {
                    runner_id: r.id,
                    attempt,
                    node: node.clone(),
                    incarnation,
                }));
                d.effects.push(Effect::Start {
                    node,
                    incarnation,
                    attempt,
                });
            } else {
                d.effects.push(Effect::Revoke {
                    node,
                    incarnation,
                    attempt,
                });
            }
        }
        Fact::ProcessStarted { attempt, node, pid } => {
            if attempt != r.attempt || r.state.is_terminal() {
                // A process nobody wants: kill it on sight.
                d.effects.push(Effect::Control {
                    node,
                    attempt,
                    want: Want::Killed,
                });
            } else if r.state == S::Starting && placed_here(r, attempt) {
                d.events.push(RunnerEvent::Started(AttemptRunning {
                    runner_id: r.id,
                    attempt,
                    pid,
                }));
            }
        }
        Fact::ProcessExited {
            attempt,
            code,
            outcome,
        } => {
            if attempt != r.attempt
                || !matches!(r.state, S::Starting | S::Running | S::Paused | S::Stopping)
            {
                return d;
            }
            if let (
                S::Starting | S::Running | S::Paused,
                ExitOutcome::NodeFailure {
                    reason,
                    fresh_session_id,
                    launch_deadline_ms,
                },
            ) = (r.state, &outcome)
            {
                // A bound session's next attempt is offered to the node that
                // holds it; if that node is then declared lost, the loss
                // decides the runner lost.
                d.events.push(RunnerEvent::Relaunched(AttemptRelaunched {
                    runner_id: r.id,
                    attempt,
                    node: r
                        .placement
                        .as_ref()
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default(),
                    reason: reason.clone(),
                }));
                reoffer(r, &mut d, fresh_session_id.clone(), *launch_deadline_ms);
                return d;
            }
            let event = match (r.state, outcome) {
                (S::Stopping, _) => RunnerEvent::Exited(ended(r, "stopped", code)),
                (_, ExitOutcome::Clean) => RunnerEvent::Exited(ended(r, "completed", code)),
                (
                    _,
                    ExitOutcome::RateLimited {
                        resume_at_ms,
                        message,
                    },
                ) => RunnerEvent::WaitingQuota(QuotaWait {
                    runner_id: r.id,
                    attempt,
                    resume_at_ms,
                    message,
                }),
                (_, ExitOutcome::Error(reason)) if r.restarts < r.max_restarts => {
                    RunnerEvent::RestartScheduled(RestartScheduled {
                        runner_id: r.id,
                        attempt,
                        not_before_ms: now_ms + policy.backoff_ms(r.restarts),
                        reason,
                    })
                }
                (_, ExitOutcome::Error(reason)) => RunnerEvent::Failed(ended(r, &reason, code)),
                // Decided above for every state but Stopping.
                (_, ExitOutcome::NodeFailure { .. }) => return d,
            };
            d.events.push(event);
        }
        Fact::SessionBound {
            attempt,
            session_id,
        } => {
            if attempt == r.attempt
                && !r.state.is_terminal()
                && !(r.session_bound && r.session_id == session_id)
            {
                d.events.push(RunnerEvent::SessionBound(SessionBound {
                    runner_id: r.id,
                    session_id,
                }));
            }
        }
        Fact::LaunchTimedOut { attempt } => {
            if attempt == r.attempt && r.state == S::Starting {
                d.events
                    .push(RunnerEvent::Failed(ended(r, "launch_timeout", None)));
                if let Some((node, _)) = &r.placement {
                    d.effects.push(Effect::Control {
                        node: node.clone(),
                        attempt,
                        want: Want::Killed,
                    });
                }
            }
        }
        Fact::NodeReincarnated {
            node,
            incarnation,
            fresh_session_id,
            launch_deadline_ms,
        } => {
            let stranded = r.state == S::Starting
                && r.placement
                    .as_ref()
                    .is_some_and(|(n, inc)| *n == node && *inc != incarnation);
            if stranded {
                // Claimed by an incarnation that is gone and never started:
                // offer it again as the next attempt.
                reoffer(r, &mut d, fresh_session_id, launch_deadline_ms);
            }
        }
        Fact::NodeLost {
            node,
            incarnation,
            session_node,
            shared_storage,
            fresh_session_id,
            launch_deadline_ms,
        } => {
            let loss = node_loss::NodeLoss {
                node,
                incarnation,
                session_node,
                shared_storage,
            };
            node_loss::decide(r, &loss, &mut d, fresh_session_id, launch_deadline_ms);
        }
        Fact::WaitOver {
            attempt,
            fresh_session_id,
            launch_deadline_ms,
            slot_free,
            slot_retry_at_ms,
        } => match r.state {
            _ if attempt != r.attempt => {}
            S::Restarting => reoffer(r, &mut d, fresh_session_id, launch_deadline_ms),
            S::WaitingQuota if slot_free => {
                reoffer(r, &mut d, fresh_session_id, launch_deadline_ms);
            }
            S::WaitingQuota => d.events.push(RunnerEvent::WaitingQuota(QuotaWait {
                runner_id: r.id,
                attempt,
                resume_at_ms: slot_retry_at_ms,
                message: format!(
                    "the provider's quota has reset; waiting for a free slot in project {}",
                    r.launch.project
                ),
            })),
            _ => {}
        },
    }
    d
}

/// Offer the next attempt: resuming the agent's session when a first turn
/// was saved, else starting afresh under a new id, never a failing resume.
fn reoffer(r: &Runner, d: &mut Decision, fresh_session_id: String, launch_deadline_ms: i64) {
    let resume = r.session_bound;
    let session_id = if resume {
        r.session_id.clone()
    } else {
        fresh_session_id
    };
    d.events.push(RunnerEvent::Offered(AttemptOffered {
        runner_id: r.id,
        attempt: r.attempt + 1,
        resume,
        session_id,
        launch_deadline_ms,
    }));
    d.effects.push(Effect::Offer {
        attempt: r.attempt + 1,
        resume,
    });
}

/// The one durable timer a runner has at a time, as its events set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Set (or replace) the runner's timer.
    Set {
        /// What fires.
        kind: TimerKind,
        /// The attempt it is about.
        attempt: u32,
        /// When (unix milliseconds, by the wall clock).
        due_ms: i64,
    },
    /// The runner has no timer any more.
    Clear,
    /// This event leaves the timer as it is.
    Keep,
}

/// What a due timer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// No node started the attempt in time.
    LaunchTimeout,
    /// A restart backoff or a quota wait is over.
    WaitOver,
}

impl TimerKind {
    /// Its name in the timers table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LaunchTimeout => "launch_timeout",
            Self::WaitOver => "wait_over",
        }
    }
}

/// How an event changes its runner's timer: a fold over the stream, so the
/// timers table is a projection like any other and survives restarts.
pub fn timer_change(event: &RunnerEvent) -> TimerChange {
    use RunnerEvent as E;
    match event {
        E::Offered(o) => TimerChange::Set {
            kind: TimerKind::LaunchTimeout,
            attempt: o.attempt,
            due_ms: o.launch_deadline_ms,
        },
        E::RestartScheduled(s) => TimerChange::Set {
            kind: TimerKind::WaitOver,
            attempt: s.attempt,
            due_ms: s.not_before_ms,
        },
        E::WaitingQuota(q) => TimerChange::Set {
            kind: TimerKind::WaitOver,
            attempt: q.attempt,
            due_ms: q.resume_at_ms,
        },
        E::Started(_)
        | E::Exited(_)
        | E::Failed(_)
        | E::Lost(_)
        | E::Cancelled(_)
        | E::LaunchRejected(_) => TimerChange::Clear,
        E::LaunchApproved(_)
        | E::ControlDecided(_)
        | E::Relaunched(_)
        | E::Placed(_)
        | E::Paused(_)
        | E::Resumed(_)
        | E::StopRequested(_)
        | E::SessionBound(_) => TimerChange::Keep,
    }
}

mod node_loss;
#[cfg(test)]
mod node_loss_tests;
#[cfg(test)]
mod tests;
