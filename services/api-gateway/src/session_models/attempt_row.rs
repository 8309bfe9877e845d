//! A session attempt's row, and what each runner and process event does to
//! it, as a pure fold.
//!
//! The orchestrator's runner events and a node's process events reach the
//! gateway in either order, so every fact is kept in its own columns: a
//! counter adds (the inbox applies each event once, and one attempt's
//! process events in their stream's order), an id or a node is set, an end
//! keeps the process's own time over the runner's. The session's row is a
//! function of its attempts' facts, whatever order they came in
//! (`super::refresh`). An event that is about an attempt makes its row
//! when it has none, and marks its time as the attempt's latest activity.

use super::attempt_progress::AttemptFacts;
use crate::agent_events::AgentEvent;
use crate::progress::count;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use uuid::Uuid;

/// A row of `session_attempts` (its generated `session_id` aside), its
/// fields named as the columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AttemptRow {
    pub runner_id: Uuid,
    pub attempt: i32,
    /// What progress changes, with the sessions offered and named.
    #[serde(flatten)]
    pub facts: AttemptFacts,
    /// Whether the offer was to resume the offered session.
    pub resume: Option<bool>,
    pub node: Option<String>,
    /// When its agent started (it got the runner's prompt).
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub bound: bool,
    pub transcript_path: Option<String>,
    pub transcript_bytes: Option<i64>,
    pub transcript_sha256: Option<String>,
}

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// The attempt an event is about, when it says anything of it.
pub(crate) fn attempt_changed(event: &AgentEvent) -> Option<i32> {
    let attempt = match event {
        AgentEvent::Progress(p) => return Some(p.attempt()),
        AgentEvent::Runner(s) => match &s.event {
            RunnerEvent::Offered(o) => o.attempt,
            RunnerEvent::Placed(p) => p.attempt,
            // Attempt 0: the runner ended before any attempt was offered.
            RunnerEvent::RestartScheduled(r) if r.attempt > 0 => r.attempt,
            RunnerEvent::Relaunched(r) if r.attempt > 0 => r.attempt,
            RunnerEvent::Exited(e)
            | RunnerEvent::Failed(e)
            | RunnerEvent::Lost(e)
            | RunnerEvent::Cancelled(e)
                if e.attempt > 0 =>
            {
                e.attempt
            }
            // The process stream says the same of the session with its
            // attempt.
            _ => return None,
        },
        AgentEvent::Process(s) => match &s.event {
            ProcessEvent::Started(e) => e.attempt,
            ProcessEvent::SessionStarted(e) => e.attempt,
            ProcessEvent::SessionBound(e) => e.attempt,
            ProcessEvent::CostReconciled(e) => e.attempt,
            ProcessEvent::Exited(e) => e.attempt,
            ProcessEvent::Failed(e) => e.attempt,
            // A claim is not a placement; errors and stalls change nothing
            // a session shows; progress is folded above.
            _ => return None,
        },
    };
    Some(attempt_of(attempt))
}

impl AttemptRow {
    /// The row of an attempt's first fact, at `at`, before the fact (as
    /// the fold makes it, in SQL).
    #[cfg(test)]
    pub(crate) fn new(runner_id: Uuid, attempt: i32, at: DateTime<Utc>) -> Self {
        Self {
            runner_id,
            attempt,
            facts: AttemptFacts {
                offered_session: None,
                agent_session: None,
                last_active_at: at,
                turns: 0,
                messages: 0,
                last_text_role: None,
                last_text_full: false,
                usage: crate::progress::UsageSums::default(),
                result_text: None,
            },
            resume: None,
            node: None,
            started_at: None,
            ended_at: None,
            bound: false,
            transcript_path: None,
            transcript_bytes: None,
            transcript_sha256: None,
        }
    }

    /// The session it is in (as the table's generated column).
    pub(crate) fn session_id(&self) -> Option<&str> {
        self.facts.session_id()
    }

    /// Fold an event about this attempt ([`attempt_changed`]).
    pub(crate) fn apply(&mut self, event: &AgentEvent) {
        let at = event.time();
        match event {
            AgentEvent::Progress(p) => return self.facts.apply(p),
            AgentEvent::Runner(s) => match &s.event {
                RunnerEvent::Offered(o) => {
                    self.facts.offered_session = Some(o.session_id.clone());
                    self.resume = Some(o.resume);
                }
                RunnerEvent::Placed(p) => self.node = Some(p.node.clone()),
                // The runner's word for the end: the process's own end,
                // when it came first, is kept.
                RunnerEvent::RestartScheduled(_)
                | RunnerEvent::Relaunched(_)
                | RunnerEvent::Exited(_)
                | RunnerEvent::Failed(_)
                | RunnerEvent::Lost(_)
                | RunnerEvent::Cancelled(_) => self.ended_at = self.ended_at.or(Some(at)),
                _ => {}
            },
            AgentEvent::Process(s) => match &s.event {
                ProcessEvent::Started(e) => {
                    self.node = Some(e.node.clone());
                    self.started_at = self.started_at.or(Some(at));
                }
                ProcessEvent::SessionStarted(e) => {
                    self.facts.agent_session = Some(e.session_id.clone());
                }
                ProcessEvent::SessionBound(e) => {
                    self.facts.agent_session = Some(e.session_id.clone());
                    self.bound = true;
                }
                // Applied once (the inbox), so adding the difference
                // replaces the attempt's priced cost by the agent's own
                // exactly once.
                ProcessEvent::CostReconciled(c) => {
                    self.facts.usage.cost_usd += c.reported_cost_usd - c.priced_cost_usd;
                }
                ProcessEvent::Exited(e) => {
                    self.node = Some(e.node.clone());
                    self.ended_at = Some(at);
                    if let Some(t) = &e.transcript {
                        self.transcript_path = Some(t.path.clone());
                        self.transcript_bytes = Some(count(t.bytes));
                        self.transcript_sha256 = Some(t.sha256.clone());
                    }
                }
                ProcessEvent::Failed(f) => {
                    self.node = Some(f.node.clone());
                    self.ended_at = Some(at);
                }
                _ => {}
            },
        }
        self.facts.last_active_at = self.facts.last_active_at.max(at);
    }
}

#[cfg(test)]
mod tests;
