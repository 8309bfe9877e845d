//! Folding runner and process events into the per-attempt facts of
//! `session_attempts` (and what runners were launched with, in
//! `session_runners`), then recomputing each session they touched.
//!
//! The orchestrator's runner events and a node's process events reach the
//! gateway in either order, so every fact is an upsert of its own columns:
//! a counter adds (the inbox applies each event once, and one attempt's
//! process events in their stream's order), an id or a node is set, an end
//! keeps the process's own time over the runner's. The session row is then
//! a function of its attempts' facts, whatever order they came in.

use super::text_pieces::{LastPiece, piece_effect};
use crate::runner_models::store;
use sqlx::{PgConnection, Row};
use stratavore_events::Envelope;
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An attempt's row as it stood before the event.
struct Before {
    session_id: Option<String>,
    last_piece: Option<LastPiece>,
}

/// Make sure the attempt's row exists and mark the event's time as its
/// latest activity; the row as it was.
async fn touch(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    at: &Envelope,
) -> Result<Before, StoreError> {
    let row = sqlx::query(
        "INSERT INTO session_attempts (runner_id, attempt, last_active_at) VALUES ($1, $2, $3)
         ON CONFLICT (runner_id, attempt) DO UPDATE
         SET last_active_at = greatest(session_attempts.last_active_at, excluded.last_active_at)
         RETURNING session_id, last_text_role, last_text_full",
    )
    .bind(runner)
    .bind(attempt_of(attempt))
    .bind(at.time)
    .fetch_one(conn)
    .await
    .map_err(store("recording a session attempt"))?;
    let role: Option<String> = row.get(1);
    Ok(Before {
        session_id: row.get(0),
        last_piece: role.map(|role| LastPiece {
            role,
            full: row.get(2),
        }),
    })
}

/// Run `update` (whose `$1` and `$2` are the attempt, returning its
/// `session_id`) on the attempt's row, then recompute the sessions it
/// belonged to before and after.
async fn update_attempt<'q>(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    at: &Envelope,
    update: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<(), StoreError> {
    let before = touch(conn, runner, attempt, at).await?;
    let after: Option<String> = update
        .fetch_one(&mut *conn)
        .await
        .map_err(store("updating a session attempt"))?
        .get(0);
    refresh_pair(conn, before.session_id, after).await
}

async fn refresh_pair(
    conn: &mut PgConnection,
    before: Option<String>,
    after: Option<String>,
) -> Result<(), StoreError> {
    if let Some(id) = &before {
        super::refresh::refresh_session(conn, id).await?;
    }
    if let Some(id) = after.filter(|a| Some(a) != before.as_ref()) {
        super::refresh::refresh_session(conn, &id).await?;
    }
    Ok(())
}

/// The attempt `attempt` of `runner` ended (the runner's word for it): the
/// process's own end, when it came first, is kept.
async fn attempt_ended(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    at: &Envelope,
) -> Result<(), StoreError> {
    // Attempt 0: the runner ended before any attempt was offered.
    if attempt == 0 {
        return Ok(());
    }
    let update = sqlx::query(
        "UPDATE session_attempts SET ended_at = coalesce(ended_at, $3)
         WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
    )
    .bind(runner)
    .bind(attempt_of(attempt))
    .bind(at.time);
    update_attempt(conn, runner, attempt, at, update).await
}

/// Fold a runner event.
pub(super) async fn runner_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &RunnerEvent,
) -> Result<(), StoreError> {
    use RunnerEvent as E;
    match event {
        E::LaunchApproved(a) => {
            sqlx::query(
                "INSERT INTO session_runners (runner_id, project, path, profile, prompt, launched_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (runner_id) DO NOTHING",
            )
            .bind(a.runner_id)
            .bind(&a.project)
            .bind(&a.path)
            .bind(&a.profile)
            .bind(&a.prompt)
            .bind(message.time)
            .execute(&mut *conn)
            .await
            .map_err(store("recording a launched runner's session facts"))?;
            // Its attempts' process events may have come first.
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT session_id FROM session_attempts
                 WHERE runner_id = $1 AND session_id IS NOT NULL",
            )
            .bind(a.runner_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(store("reading a runner's sessions"))?;
            for id in sessions {
                super::refresh::refresh_session(conn, &id).await?;
            }
            Ok(())
        }
        E::Offered(o) => {
            let update = sqlx::query(
                "UPDATE session_attempts SET offered_session = $3, resume = $4
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(o.runner_id)
            .bind(attempt_of(o.attempt))
            .bind(&o.session_id)
            .bind(o.resume);
            update_attempt(conn, o.runner_id, o.attempt, message, update).await
        }
        E::Placed(p) => set_node(conn, p.runner_id, p.attempt, &p.node, message).await,
        E::RestartScheduled(r) => attempt_ended(conn, r.runner_id, r.attempt, message).await,
        E::Relaunched(r) => attempt_ended(conn, r.runner_id, r.attempt, message).await,
        E::Exited(e) | E::Failed(e) | E::Lost(e) | E::Cancelled(e) => {
            attempt_ended(conn, e.runner_id, e.attempt, message).await
        }
        // The process stream says the same of the session with its attempt.
        E::SessionBound(_)
        | E::LaunchRejected(_)
        | E::Started(_)
        | E::Paused(_)
        | E::Resumed(_)
        | E::StopRequested(_)
        | E::WaitingQuota(_)
        | E::ControlDecided(_) => Ok(()),
    }
}

async fn set_node(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    node: &str,
    at: &Envelope,
) -> Result<(), StoreError> {
    let update = sqlx::query(
        "UPDATE session_attempts SET node = $3
         WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
    )
    .bind(runner)
    .bind(attempt_of(attempt))
    .bind(node.to_owned());
    update_attempt(conn, runner, attempt, at, update).await
}

/// Fold a process event.
pub(super) async fn process_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    let at = message.time;
    match event {
        ProcessEvent::Started(s) => {
            let update = sqlx::query(
                "UPDATE session_attempts SET node = $3, started_at = coalesce(started_at, $4)
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(s.runner_id)
            .bind(attempt_of(s.attempt))
            .bind(s.node.clone())
            .bind(at);
            update_attempt(conn, s.runner_id, s.attempt, message, update).await
        }
        ProcessEvent::SessionStarted(s) => {
            let update = sqlx::query(
                "UPDATE session_attempts SET agent_session = $3
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(s.runner_id)
            .bind(attempt_of(s.attempt))
            .bind(s.session_id.clone());
            update_attempt(conn, s.runner_id, s.attempt, message, update).await
        }
        ProcessEvent::SessionBound(b) => {
            let update = sqlx::query(
                "UPDATE session_attempts SET agent_session = $3, bound = true
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(b.runner_id)
            .bind(attempt_of(b.attempt))
            .bind(b.session_id.clone());
            update_attempt(conn, b.runner_id, b.attempt, message, update).await
        }
        ProcessEvent::UsageReported(u) => {
            // Usage names the session it was spent in (the launch's until the
            // agent names its own, which comes first in the stream).
            let update = sqlx::query(
                "UPDATE session_attempts
                 SET agent_session = coalesce(agent_session, nullif($3, '')), turns = turns + 1,
                     input_tokens = input_tokens + $4, output_tokens = output_tokens + $5,
                     cache_creation_tokens = cache_creation_tokens + $6,
                     cache_read_tokens = cache_read_tokens + $7, cost_usd = cost_usd + $8
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(u.runner_id)
            .bind(attempt_of(u.attempt))
            .bind(u.session_id.clone())
            .bind(count(u.input_tokens))
            .bind(count(u.output_tokens))
            .bind(count(u.cache_creation_input_tokens))
            .bind(count(u.cache_read_input_tokens))
            .bind(u.cost_usd);
            update_attempt(conn, u.runner_id, u.attempt, message, update).await
        }
        ProcessEvent::CostReconciled(c) => {
            // Applied once (the inbox), so adding the difference replaces
            // the attempt's priced cost by the agent's own exactly once.
            let update = sqlx::query(
                "UPDATE session_attempts SET cost_usd = cost_usd + ($3 - $4)
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(c.runner_id)
            .bind(attempt_of(c.attempt))
            .bind(c.reported_cost_usd)
            .bind(c.priced_cost_usd);
            update_attempt(conn, c.runner_id, c.attempt, message, update).await
        }
        ProcessEvent::TextChunked(t) => {
            let before = touch(conn, t.runner_id, t.attempt, message).await?;
            let effect = piece_effect(before.last_piece.as_ref(), &t.role, &t.text);
            // The latest result is the final one; a piece that continues a
            // result is the rest of it.
            let result = match (t.role.as_str(), effect.continues) {
                ("result", true) => Some(("append", t.text.clone())),
                ("result", false) => Some(("replace", t.text.clone())),
                _ => None,
            };
            let row = sqlx::query(
                "UPDATE session_attempts
                 SET agent_session = coalesce(agent_session, nullif($3, '')),
                     messages = messages + $4, last_text_role = $5, last_text_full = $6,
                     result_text = CASE $7 WHEN 'append' THEN coalesce(result_text, '') || $8
                                           WHEN 'replace' THEN $8 ELSE result_text END
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(t.runner_id)
            .bind(attempt_of(t.attempt))
            .bind(&t.session_id)
            .bind(i32::from(effect.new_message))
            .bind(&effect.last.role)
            .bind(effect.last.full)
            .bind(result.as_ref().map(|(how, _)| *how))
            .bind(result.map(|(_, text)| text))
            .fetch_one(&mut *conn)
            .await
            .map_err(store("recording session text"))?;
            refresh_pair(conn, before.session_id, row.get(0)).await
        }
        ProcessEvent::Exited(e) => {
            let transcript = e.transcript.as_ref();
            let update = sqlx::query(
                "UPDATE session_attempts SET node = $3, ended_at = $4,
                     transcript_path = coalesce($5, transcript_path),
                     transcript_bytes = coalesce($6, transcript_bytes),
                     transcript_sha256 = coalesce($7, transcript_sha256)
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(e.runner_id)
            .bind(attempt_of(e.attempt))
            .bind(e.node.clone())
            .bind(at)
            .bind(transcript.map(|t| t.path.clone()))
            .bind(transcript.map(|t| count(t.bytes)))
            .bind(transcript.map(|t| t.sha256.clone()));
            update_attempt(conn, e.runner_id, e.attempt, message, update).await
        }
        ProcessEvent::Failed(f) => {
            let update = sqlx::query(
                "UPDATE session_attempts SET node = $3, ended_at = $4
                 WHERE runner_id = $1 AND attempt = $2 RETURNING session_id",
            )
            .bind(f.runner_id)
            .bind(attempt_of(f.attempt))
            .bind(f.node.clone())
            .bind(at);
            update_attempt(conn, f.runner_id, f.attempt, message, update).await
        }
        // A claim is not a placement; errors and stalls change nothing a
        // session shows.
        ProcessEvent::Claimed(_)
        | ProcessEvent::Spawning(_)
        | ProcessEvent::ErrorReported(_)
        | ProcessEvent::Stalled(_) => Ok(()),
    }
}
