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

use super::refresh::{ATTEMPT_COLUMNS, UPSERT, computed};
use crate::progress::count;
use crate::runner_models::store;
use sqlx::{PgConnection, Row};
use std::sync::LazyLock;
use stratavore_events::Envelope;
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The statement of [`change_attempt`], before and after its `SET` items.
/// `before` is the attempt's row, locked (so a change of the same row by
/// another stream's drain is seen whole: the lock waits for it and reads
/// the row as it committed), as it was before the change. The session's
/// other attempts are read as they were before the statement, so the
/// changed one is taken from the change itself.
static CHANGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let head = "WITH before AS (
             SELECT session_id AS before_session, last_text_role AS before_role,
                    last_text_full AS before_full
             FROM session_attempts WHERE runner_id = $1 AND attempt = $2 FOR UPDATE),
         changed AS (
             UPDATE session_attempts a
             SET last_active_at = greatest(a.last_active_at, $3), "
        .to_owned();
    let changed_columns: Vec<String> = ATTEMPT_COLUMNS
        .split(',')
        .map(|c| format!("a.{}", c.trim()))
        .collect();
    let tail = format!(
        "
             FROM before b WHERE a.runner_id = $1 AND a.attempt = $2
             RETURNING b.before_session, {changed}),
         attempts AS (
             SELECT {ATTEMPT_COLUMNS} FROM session_attempts
             WHERE session_id = (SELECT session_id FROM changed)
               AND (runner_id, attempt) <> ($1, $2)
             UNION ALL SELECT {ATTEMPT_COLUMNS} FROM changed),
         computed AS ({computed}),
         upserted AS ({UPSERT})
         SELECT before_session, session_id FROM changed",
        changed = changed_columns.join(", "),
        computed = computed("= (SELECT session_id FROM changed)", "attempts"),
    );
    (head, tail)
});

/// Apply a change to the attempt's row (made first when it is the
/// attempt's first fact) and recompute the session it is in, in one
/// statement; the session it was in before, when that was another,
/// is recomputed after.
///
/// `set` holds the change's `SET` items, beside marking the event's time as
/// the attempt's latest activity. Their right-hand sides read the row as it
/// was (`a.`) and the `before` row (`b.before_session`, `b.before_role`,
/// `b.before_full`); `$1`, `$2` and `$3` are the runner, the attempt and
/// the event's time, and `bind` binds the change's own values, `$4` on.
async fn change_attempt<'q>(
    conn: &mut PgConnection,
    runner: Uuid,
    attempt: u32,
    at: &Envelope,
    set: &str,
    bind: impl Fn(Query<'q>) -> Query<'q>,
) -> Result<(), StoreError> {
    let (head, tail) = &*CHANGE;
    let sql = format!("{head}{set}{tail}");
    for _ in 0..2 {
        let changed = bind(
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(runner)
                .bind(attempt_of(attempt))
                .bind(at.time),
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(store("updating a session attempt"))?;
        if let Some(row) = changed {
            let (before, after): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            if let Some(left) = before.filter(|b| after.as_ref() != Some(b)) {
                super::refresh::refresh_sessions(conn, &[left.as_str()]).await?;
            }
            return Ok(());
        }
        // The attempt's first fact: make its row, then change it.
        sqlx::query(
            "INSERT INTO session_attempts (runner_id, attempt, last_active_at) VALUES ($1, $2, $3)
             ON CONFLICT (runner_id, attempt) DO NOTHING",
        )
        .bind(runner)
        .bind(attempt_of(attempt))
        .bind(at.time)
        .execute(&mut *conn)
        .await
        .map_err(store("recording a session attempt"))?;
    }
    Err(StoreError::new("updating a session attempt")(
        sqlx::Error::RowNotFound,
    ))
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
    change_attempt(
        conn,
        runner,
        attempt,
        at,
        "ended_at = coalesce(a.ended_at, $3)",
        |q| q,
    )
    .await
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
            let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
            super::refresh::refresh_sessions(conn, &sessions).await
        }
        E::Offered(o) => {
            change_attempt(
                conn,
                o.runner_id,
                o.attempt,
                message,
                "offered_session = $4, resume = $5",
                |q| q.bind(&o.session_id).bind(o.resume),
            )
            .await
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
    change_attempt(conn, runner, attempt, at, "node = $4", |q| q.bind(node)).await
}

/// Fold a process event.
pub(super) async fn process_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    match event {
        ProcessEvent::Started(s) => {
            change_attempt(
                conn,
                s.runner_id,
                s.attempt,
                message,
                "node = $4, started_at = coalesce(a.started_at, $3)",
                |q| q.bind(&s.node),
            )
            .await
        }
        ProcessEvent::SessionStarted(s) => {
            change_attempt(
                conn,
                s.runner_id,
                s.attempt,
                message,
                "agent_session = $4",
                |q| q.bind(&s.session_id),
            )
            .await
        }
        ProcessEvent::SessionBound(b) => {
            change_attempt(
                conn,
                b.runner_id,
                b.attempt,
                message,
                "agent_session = $4, bound = true",
                |q| q.bind(&b.session_id),
            )
            .await
        }
        ProcessEvent::CostReconciled(c) => {
            // Applied once (the inbox), so adding the difference replaces
            // the attempt's priced cost by the agent's own exactly once.
            change_attempt(
                conn,
                c.runner_id,
                c.attempt,
                message,
                "cost_usd = a.cost_usd + ($4 - $5)",
                |q| q.bind(c.reported_cost_usd).bind(c.priced_cost_usd),
            )
            .await
        }
        ProcessEvent::Exited(e) => {
            let transcript = e.transcript.as_ref();
            change_attempt(
                conn,
                e.runner_id,
                e.attempt,
                message,
                "node = $4, ended_at = $3,
                 transcript_path = coalesce($5, a.transcript_path),
                 transcript_bytes = coalesce($6, a.transcript_bytes),
                 transcript_sha256 = coalesce($7, a.transcript_sha256)",
                |q| {
                    q.bind(&e.node)
                        .bind(transcript.map(|t| t.path.as_str()))
                        .bind(transcript.map(|t| count(t.bytes)))
                        .bind(transcript.map(|t| t.sha256.as_str()))
                },
            )
            .await
        }
        ProcessEvent::Failed(f) => {
            change_attempt(
                conn,
                f.runner_id,
                f.attempt,
                message,
                "node = $4, ended_at = $3",
                |q| q.bind(&f.node),
            )
            .await
        }
        // Folded a run at a time, in `super::progress`.
        ProcessEvent::UsageReported(_) | ProcessEvent::TextChunked(_) => Ok(()),
        // A claim is not a placement; errors and stalls change nothing a
        // session shows.
        ProcessEvent::Claimed(_)
        | ProcessEvent::Spawning(_)
        | ProcessEvent::ErrorReported(_)
        | ProcessEvent::Stalled(_) => Ok(()),
    }
}
