//! What the nodes report about a runner's processes, folded into its row:
//! pid, the agent's session id, errors, stalls and reconciled costs (usage
//! and text, its progress, in `super::progress`).
//!
//! Process events come from the nodes' logs, runner events from the
//! orchestrator's, so the two can arrive in either order. A fact about the
//! runner's current state is taken when its attempt is the row's or a later
//! one (whose offer has not arrived yet), never from an earlier attempt.

use super::store;
use crate::progress::count;
use sqlx::PgConnection;
use stratavore_events::Envelope;
use stratavore_events::process::ProcessEvent;
use stratavore_store::StoreError;

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// Fold a process event.
pub(crate) async fn project_process_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    match event {
        ProcessEvent::Started(s) => {
            sqlx::query("UPDATE runners SET pid = $2, updated_at = $3 WHERE runner_id = $1 AND attempt = $4")
                .bind(s.runner_id)
                .bind(i64::from(s.pid))
                .bind(message.time)
                .bind(attempt_of(s.attempt))
                .execute(conn)
                .await
                .map_err(store("projecting a started process"))?;
        }
        ProcessEvent::SessionStarted(s) => {
            sqlx::query(
                "UPDATE runners SET session_id = $2, updated_at = $3 WHERE runner_id = $1 AND attempt <= $4",
            )
            .bind(s.runner_id)
            .bind(&s.session_id)
            .bind(message.time)
            .bind(attempt_of(s.attempt))
            .execute(conn)
            .await
            .map_err(store("projecting an agent's session"))?;
        }
        ProcessEvent::ErrorReported(e) => {
            sqlx::query(
                "UPDATE runners SET last_error = $2, updated_at = $3 WHERE runner_id = $1 AND attempt <= $4",
            )
            .bind(e.runner_id)
            .bind(&e.message)
            .bind(message.time)
            .bind(attempt_of(e.attempt))
            .execute(conn)
            .await
            .map_err(store("projecting an agent's error"))?;
        }
        ProcessEvent::Stalled(s) => {
            sqlx::query(
                "UPDATE runners SET stalled_at = $2, stalled_idle_ms = $3, stalled_attempt = $4, updated_at = $2
                 WHERE runner_id = $1 AND attempt <= $4",
            )
            .bind(s.runner_id)
            .bind(message.time)
            .bind(count(s.idle_ms))
            .bind(attempt_of(s.attempt))
            .execute(conn)
            .await
            .map_err(store("projecting a stall"))?;
        }
        ProcessEvent::CostReconciled(c) => {
            // The inbox applies each event once, so adding the difference
            // replaces the attempt's priced cost exactly once.
            sqlx::query(
                "UPDATE runners SET cost_usd = cost_usd + ($2 - $3), updated_at = $4 WHERE runner_id = $1",
            )
            .bind(c.runner_id)
            .bind(c.reported_cost_usd)
            .bind(c.priced_cost_usd)
            .bind(message.time)
            .execute(conn)
            .await
            .map_err(store("reconciling a cost"))?;
        }
        // Folded a run at a time, in `crate::progress`.
        ProcessEvent::UsageReported(_) | ProcessEvent::TextChunked(_) => {}
        ProcessEvent::Claimed(_)
        | ProcessEvent::Spawning(_)
        | ProcessEvent::SessionBound(_)
        | ProcessEvent::Exited(_)
        | ProcessEvent::Failed(_) => {}
    }
    Ok(())
}
