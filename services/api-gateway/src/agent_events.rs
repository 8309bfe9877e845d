//! What runners and their agents' processes report: the orchestrator's
//! runner events and the nodes' process events, most of what the gateway
//! receives. Each feeds several read models (the runner's row, its session
//! attempts, sessions' texts, budgets' spending, commands' outcomes).
//!
//! A batch of them (a drain's batch, a rebuild's page) is folded a model at
//! a time: each model locks the rows the batch touches with one statement,
//! folds every event into them in order with pure code, and writes each
//! changed row once. That is the same as folding each event alone, in the
//! same order, whatever slices a history is cut into, because every row
//! such an event changes belongs to its own runner (and the sessions, which
//! are recomputed from their attempts whatever order those changed in).
//! The models read nothing another one writes here but the runner's
//! project, which never changes once approved (see [`crate::search::texts`]).

use crate::progress::{Progress, Sorted};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

/// A runner or process event, parsed once, with the message that carried it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AgentEvent {
    /// One of the orchestrator's runner events.
    Runner(Said<RunnerEvent>),
    /// A usage report or a text piece.
    Progress(Progress),
    /// Any other process event.
    Process(Said<ProcessEvent>),
}

/// An event with its message's id, time and runner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Said<E> {
    /// The message's id.
    pub id: Uuid,
    /// The message's own time.
    pub time: DateTime<Utc>,
    /// The runner it is about.
    pub runner_id: Uuid,
    /// What it says.
    pub event: E,
}

#[cfg(test)]
pub(crate) mod test_events;

impl AgentEvent {
    /// The runner or process event `message` carries, when it is one that
    /// parses (a message of another family, or one that does not parse,
    /// is none: the latter changes nothing, as before it was folded).
    pub(crate) fn of(message: &Envelope) -> Option<Self> {
        let type_name = message.type_name.as_str();
        // Every runner and process event names its runner.
        let runner_id =
            || -> Option<Uuid> { message.data.get("runner_id")?.as_str()?.parse().ok() };
        if RunnerEvent::has_type(type_name) {
            let event = RunnerEvent::from_data(type_name, message.data.clone()).ok()?;
            return Some(Self::Runner(Said {
                id: message.id,
                time: message.time,
                runner_id: runner_id()?,
                event,
            }));
        }
        if ProcessEvent::has_type(type_name) {
            let event = ProcessEvent::from_data(type_name, message.data.clone()).ok()?;
            return Some(match Progress::of(message, event) {
                Sorted::Progress(progress) => Self::Progress(progress),
                Sorted::Other(event) => Self::Process(Said {
                    id: message.id,
                    time: message.time,
                    runner_id: runner_id()?,
                    event,
                }),
            });
        }
        None
    }

    /// The runner it is about.
    pub(crate) fn runner_id(&self) -> Uuid {
        match self {
            Self::Runner(s) => s.runner_id,
            Self::Progress(p) => p.runner_id(),
            Self::Process(s) => s.runner_id,
        }
    }

    /// When it happened.
    pub(crate) fn time(&self) -> DateTime<Utc> {
        match self {
            Self::Runner(s) => s.time,
            Self::Progress(p) => p.time,
            Self::Process(s) => s.time,
        }
    }
}

/// Fold `events`, in their order, into every model they feed.
pub(crate) async fn fold(conn: &mut PgConnection, events: &[AgentEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // The runners first: a text recorded here takes its project from its
    // runner's row when that is known.
    crate::runner_models::fold(conn, events).await?;
    crate::session_models::fold(conn, events).await?;
    crate::search::texts::fold(conn, events).await?;
    crate::budget_models::fold_spending(conn, events).await?;
    crate::read_models::fold_runner_outcomes(conn, events).await
}
