//! A runner's row, and what each runner and process event does to it, as a
//! pure fold.
//!
//! Process events come from the nodes' logs, runner events from the
//! orchestrator's, so the two can arrive in either order. A fact about the
//! runner's current state is taken when its attempt is the row's or a later
//! one (whose offer has not arrived yet), never from an earlier attempt.
//! The row is made by the launch's approval; an event about a runner with
//! no row changes nothing.

use super::totals::Totals;
use crate::agent_events::AgentEvent;
use crate::progress::count;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::{LaunchApproved, RunnerEvent};
use uuid::Uuid;

/// A row of `runners`, its fields named as the columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunnerRow {
    pub runner_id: Uuid,
    pub project: String,
    pub profile: String,
    pub state: String,
    pub attempt: i32,
    pub node: Option<String>,
    pub pid: Option<i64>,
    pub session_id: Option<String>,
    pub last_error: Option<String>,
    pub exit_code: Option<i32>,
    /// Tokens, cost, when it last changed, and its stall.
    #[serde(flatten)]
    pub totals: Totals,
    pub created_at: DateTime<Utc>,
    pub model: Option<String>,
    pub permission: Option<String>,
    pub allowed_tools: Vec<String>,
    pub resume_at: Option<DateTime<Utc>>,
}

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// A time given in milliseconds since the epoch (none when it cannot be
/// one).
fn at_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The state a runner event leaves a runner in (None: no change).
fn state_after(event: &RunnerEvent) -> Option<&'static str> {
    use RunnerEvent as E;
    Some(match event {
        E::LaunchApproved(_) => "requested",
        E::Offered(_) | E::Placed(_) => "starting",
        E::Started(_) | E::Resumed(_) => "running",
        E::Paused(_) => "paused",
        E::StopRequested(_) => "stopping",
        E::RestartScheduled(_) | E::Relaunched(_) => "restarting",
        E::WaitingQuota(_) => "waiting_quota",
        E::Exited(_) => "exited",
        E::Failed(_) => "failed",
        E::Lost(_) => "lost",
        E::Cancelled(_) => "cancelled",
        E::LaunchRejected(_) | E::SessionBound(_) | E::ControlDecided(_) => return None,
    })
}

impl RunnerRow {
    /// The row an approved launch makes.
    fn approved(a: &LaunchApproved, at: DateTime<Utc>) -> Self {
        Self {
            runner_id: a.runner_id,
            project: a.project.clone(),
            profile: a.profile.clone(),
            state: "requested".into(),
            attempt: 0,
            node: None,
            pid: None,
            session_id: Some(a.session_id.clone()),
            last_error: None,
            exit_code: None,
            totals: Totals {
                usage: crate::progress::UsageSums::default(),
                updated_at: at,
                stalled_at: None,
                stalled_idle_ms: None,
                stalled_attempt: None,
            },
            created_at: at,
            model: a.model.clone(),
            permission: a.permission.clone(),
            allowed_tools: a.allowed_tools.clone(),
            resume_at: None,
        }
    }

    /// Fold `event` into the runner's row (`None`: it has none yet).
    pub(crate) fn fold(row: &mut Option<Self>, event: &AgentEvent) {
        match (row.as_mut(), event) {
            (Some(r), AgentEvent::Runner(s)) => r.runner_event(&s.event, s.time),
            (Some(r), AgentEvent::Progress(p)) => r.totals.apply(p),
            (Some(r), AgentEvent::Process(s)) => r.process_event(&s.event, s.time),
            (None, AgentEvent::Runner(s)) => {
                if let RunnerEvent::LaunchApproved(a) = &s.event {
                    *row = Some(Self::approved(a, s.time));
                }
            }
            (None, _) => {}
        }
    }

    /// The state changes (when the event says one) and the row is marked
    /// changed.
    fn touch(&mut self, state: Option<&str>, at: DateTime<Utc>) {
        if let Some(state) = state {
            state.clone_into(&mut self.state);
        }
        self.totals.updated_at = at;
    }

    fn runner_event(&mut self, event: &RunnerEvent, at: DateTime<Utc>) {
        use RunnerEvent as E;
        let state = state_after(event);
        match event {
            // The row exists: a redelivered approval changes nothing.
            E::LaunchApproved(_) | E::LaunchRejected(_) | E::ControlDecided(_) => return,
            E::Offered(o) => {
                let attempt = attempt_of(o.attempt);
                self.attempt = attempt;
                self.session_id = Some(o.session_id.clone());
                self.node = None;
                self.pid = None;
                self.resume_at = None;
                // A stall of an earlier attempt says nothing about this one.
                if self.totals.stalled_attempt.is_some_and(|s| s < attempt) {
                    self.totals.stalled_at = None;
                    self.totals.stalled_idle_ms = None;
                    self.totals.stalled_attempt = None;
                }
            }
            E::Placed(p) => self.node = Some(p.node.clone()),
            E::SessionBound(b) => self.session_id = Some(b.session_id.clone()),
            E::RestartScheduled(r) => {
                self.last_error = Some(r.reason.clone());
                self.resume_at = at_ms(r.not_before_ms);
            }
            E::Relaunched(r) => {
                // Only while the row is still at the lost attempt: the next
                // attempt's offer, when it came first, says more.
                if self.attempt != attempt_of(r.attempt) {
                    return self.touch(None, at);
                }
                self.last_error = Some(r.reason.clone());
                self.node = None;
                self.pid = None;
            }
            E::WaitingQuota(q) => {
                self.last_error = Some(q.message.clone());
                self.resume_at = at_ms(q.resume_at_ms);
            }
            E::Exited(e) | E::Failed(e) | E::Lost(e) | E::Cancelled(e) => {
                if e.exit_code.is_some() {
                    self.exit_code = e.exit_code;
                }
                if e.reason != "completed" && e.reason != "stopped" {
                    self.last_error = Some(e.reason.clone());
                }
                self.resume_at = None;
            }
            E::Started(_) | E::Paused(_) | E::Resumed(_) | E::StopRequested(_) => {}
        }
        self.touch(state, at);
    }

    fn process_event(&mut self, event: &ProcessEvent, at: DateTime<Utc>) {
        // Of this attempt or a later one (whose offer is yet to come).
        let current = |attempt: u32| self.attempt <= attempt_of(attempt);
        match event {
            ProcessEvent::Started(s) if self.attempt == attempt_of(s.attempt) => {
                self.pid = Some(i64::from(s.pid));
            }
            ProcessEvent::SessionStarted(s) if current(s.attempt) => {
                self.session_id = Some(s.session_id.clone());
            }
            ProcessEvent::ErrorReported(e) if current(e.attempt) => {
                self.last_error = Some(e.message.clone());
            }
            ProcessEvent::Stalled(s) if current(s.attempt) => {
                self.totals.stalled_at = Some(at);
                self.totals.stalled_idle_ms = Some(count(s.idle_ms));
                self.totals.stalled_attempt = Some(attempt_of(s.attempt));
            }
            // The inbox applies each event once, so adding the difference
            // replaces the attempt's priced cost exactly once.
            ProcessEvent::CostReconciled(c) => {
                self.totals.usage.cost_usd += c.reported_cost_usd - c.priced_cost_usd;
            }
            _ => return,
        }
        self.totals.updated_at = at;
    }
}

#[cfg(test)]
mod tests;
