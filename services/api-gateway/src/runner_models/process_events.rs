//! What the nodes report about a runner's processes, folded into its row:
//! pid, the agent's session id, usage and cost, errors and stalls.
//!
//! Process events come from the nodes' logs, runner events from the
//! orchestrator's, so the two can arrive in either order. A fact about the
//! runner's current state is taken when its attempt is the row's or a later
//! one (whose offer has not arrived yet), never from an earlier attempt.

use super::store;
use sqlx::PgConnection;
use stratavore_events::Envelope;
use stratavore_events::process::ProcessEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Progress by `attempt` ends its stall, if it had one.
async fn clear_stall(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    at: &Envelope,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runners SET stalled_at = NULL, stalled_idle_ms = NULL, stalled_attempt = NULL,
             updated_at = $3
         WHERE runner_id = $1 AND stalled_attempt = $2",
    )
    .bind(runner)
    .bind(attempt_of(attempt))
    .bind(at.time)
    .execute(conn)
    .await
    .map_err(store("clearing a stall"))?;
    Ok(())
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
        ProcessEvent::UsageReported(u) => {
            // A turn is progress: it ends its attempt's stall, as in
            // `clear_stall`, in the same statement.
            sqlx::query(
                "UPDATE runners SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3,
                     cache_creation_tokens = cache_creation_tokens + $4,
                     cache_read_tokens = cache_read_tokens + $5, cost_usd = cost_usd + $6, updated_at = $7,
                     stalled_at = CASE WHEN stalled_attempt = $8 THEN NULL ELSE stalled_at END,
                     stalled_idle_ms = CASE WHEN stalled_attempt = $8 THEN NULL ELSE stalled_idle_ms END,
                     stalled_attempt = CASE WHEN stalled_attempt = $8 THEN NULL ELSE stalled_attempt END
                 WHERE runner_id = $1",
            )
            .bind(u.runner_id)
            .bind(count(u.input_tokens))
            .bind(count(u.output_tokens))
            .bind(count(u.cache_creation_input_tokens))
            .bind(count(u.cache_read_input_tokens))
            .bind(u.cost_usd)
            .bind(message.time)
            .bind(attempt_of(u.attempt))
            .execute(&mut *conn)
            .await
            .map_err(store("projecting usage"))?;
        }
        ProcessEvent::TextChunked(t) => {
            clear_stall(conn, t.runner_id, t.attempt, message).await?;
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
        ProcessEvent::Claimed(_)
        | ProcessEvent::Spawning(_)
        | ProcessEvent::SessionBound(_)
        | ProcessEvent::Exited(_)
        | ProcessEvent::Failed(_) => {}
    }
    Ok(())
}
