//! Folding a batch of runner and process events into the runners' rows:
//! the rows the batch is about are locked and read in one statement,
//! folded in order by [`RunnerRow::fold`], and the changed ones written
//! back in one more.

use super::row::RunnerRow;
use crate::agent_events::AgentEvent;
use crate::rows;
use sqlx::PgConnection;
use std::collections::BTreeSet;
use stratavore_store::StoreError;
use uuid::Uuid;

/// The columns of `runners`, as [`RunnerRow`] names them.
pub(super) const COLUMNS: &[&str] = &[
    "runner_id",
    "project",
    "profile",
    "state",
    "attempt",
    "node",
    "pid",
    "session_id",
    "last_error",
    "exit_code",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "cost_usd",
    "created_at",
    "updated_at",
    "model",
    "permission",
    "allowed_tools",
    "stalled_at",
    "stalled_idle_ms",
    "stalled_attempt",
    "resume_at",
];

/// Fold `events` into the rows of the runners they are about.
pub(crate) async fn fold(conn: &mut PgConnection, events: &[AgentEvent]) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = events
        .iter()
        .map(AgentEvent::runner_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut runners = rows::Touched::lock(
        conn,
        "runners",
        "runner_id",
        ids,
        |r: &RunnerRow| r.runner_id,
        "reading runners",
    )
    .await?;
    for event in events {
        if let Some(row) = runners.get_mut(&event.runner_id()) {
            RunnerRow::fold(row, event);
        }
    }
    runners
        .write(conn, "runners", COLUMNS, "runner_id", "writing runners")
        .await
}
