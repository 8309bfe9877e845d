//! An agent's progress: its usage reports and the pieces of its text. A
//! running agent reports every turn, so these are most of what the gateway
//! receives, and each feeds four models (the runner's totals, its session
//! attempt, its budget spending, its searchable text).
//!
//! A run of them (consecutive in apply order) is folded a model at a time
//! with a few statements for the whole run: each model locks the rows the
//! run touches, folds the events into them in order with pure code, and
//! writes them back. That is the same as folding each event alone, whatever
//! slices a history is cut into, so a rebuild (pages of a thousand) gives
//! the rows the live drain (batches of its own size) gave. Events of other
//! kinds end a run and are folded alone, in their place.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use stratavore_events::Envelope;
use stratavore_events::process::{ProcessEvent, TextChunked, UsageReported};
use stratavore_store::StoreError;
use uuid::Uuid;

/// What an agent did: a turn's usage, or a piece of its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A turn, with its tokens and priced cost.
    Usage(UsageReported),
    /// A piece of a message or of the final result.
    Text(TextChunked),
}

/// A progress event, with the message that carried it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    /// The message's id (a spending's and a text's key).
    pub id: Uuid,
    /// The message's own time.
    pub time: DateTime<Utc>,
    /// What happened.
    pub step: Step,
}

impl Progress {
    /// The progress a process event is, if it is one.
    pub(crate) fn of(message: &Envelope, event: &ProcessEvent) -> Option<Self> {
        let step = match event {
            ProcessEvent::UsageReported(u) => Step::Usage(u.clone()),
            ProcessEvent::TextChunked(t) => Step::Text(t.clone()),
            _ => return None,
        };
        Some(Self {
            id: message.id,
            time: message.time,
            step,
        })
    }

    /// The runner it is about.
    pub(crate) fn runner_id(&self) -> Uuid {
        match &self.step {
            Step::Usage(u) => u.runner_id,
            Step::Text(t) => t.runner_id,
        }
    }

    /// Its attempt, as the read models store attempts.
    pub(crate) fn attempt(&self) -> i32 {
        let attempt = match &self.step {
            Step::Usage(u) => u.attempt,
            Step::Text(t) => t.attempt,
        };
        i32::try_from(attempt).unwrap_or(i32::MAX)
    }

    /// The session the node named with it ('' when none).
    pub(crate) fn session_id(&self) -> &str {
        match &self.step {
            Step::Usage(u) => &u.session_id,
            Step::Text(t) => &t.session_id,
        }
    }
}

/// A token count as the read models store it.
pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Fold a run of progress events, in their order, into every model they
/// feed. The models read nothing another one writes here, so their order
/// does not matter.
pub(crate) async fn fold_run(conn: &mut PgConnection, run: &[Progress]) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    crate::session_models::fold_progress(conn, run).await?;
    crate::search::texts::record_progress(conn, run).await?;
    crate::budget_models::record_progress(conn, run).await?;
    crate::runner_models::fold_progress(conn, run).await
}
