//! The runners read model: folded from the orchestrator's runner events and
//! the nodes' process events (in `process_events`), plus the outcomes of
//! runner commands.

mod process_events;
mod progress;
mod totals;

use crate::read_models::{command_outcome, project_resource_of_runner};
pub(crate) use process_events::project_process_event;
pub(crate) use progress::fold_progress;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use stratavore_events::Envelope;
use stratavore_events::runner::RunnerEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

/// Token counts of a runner, summed over its attempts and turns.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens.
    pub input: i64,
    /// Output tokens.
    pub output: i64,
    /// Tokens written to the prompt cache.
    pub cache_creation: i64,
    /// Tokens read from the prompt cache.
    pub cache_read: i64,
}

/// A runner as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunnerView {
    /// Its id.
    pub id: Uuid,
    /// Its project.
    pub project: String,
    /// Its agent profile.
    pub profile: String,
    /// Its state.
    pub state: String,
    /// The current attempt.
    pub attempt: i32,
    /// The node of the current attempt.
    pub node: Option<String>,
    /// The agent's pid there.
    pub pid: Option<i64>,
    /// The session: the agent's own id as soon as it names it (a Codex
    /// thread id shows while the first attempt runs).
    pub session_id: Option<String>,
    /// The model it was launched with (none: the agent's own default).
    pub model: Option<String>,
    /// The permission setting it was launched with.
    pub permission: Option<String>,
    /// Tools the agent may use without asking.
    pub allowed_tools: Vec<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The agent's last exit code.
    pub exit_code: Option<i32>,
    /// When the current attempt's agent was found stalled (no progress for
    /// its profile's stall timeout); none once it makes progress again.
    pub stalled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How long it had gone without progress then, in milliseconds.
    pub stalled_idle_ms: Option<i64>,
    /// Tokens used.
    pub tokens: Tokens,
    /// Cost in USD (priced per model while running; an attempt's priced
    /// cost is replaced by the agent's own figure once it reports one).
    pub cost_usd: f64,
    /// While it waits (a restart's backoff, a provider's quota window):
    /// when the orchestrator will offer its next attempt.
    pub resume_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was launched.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
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

async fn touch(
    conn: &mut PgConnection,
    runner: Uuid,
    state: Option<&str>,
    at: &Envelope,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runners SET state = coalesce($2, state), updated_at = $3 WHERE runner_id = $1",
    )
    .bind(runner)
    .bind(state)
    .bind(at.time)
    .execute(conn)
    .await
    .map_err(store("updating a runner"))?;
    Ok(())
}

/// Fold a runner event.
pub async fn project_runner_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &RunnerEvent,
) -> Result<(), StoreError> {
    use RunnerEvent as E;
    let state = state_after(event);
    match event {
        E::LaunchApproved(a) => {
            sqlx::query(
                "INSERT INTO runners (runner_id, project, profile, state, session_id, created_at, updated_at,
                     model, permission, allowed_tools)
                 VALUES ($1, $2, $3, 'requested', $4, $5, $5, $6, $7, $8)
                 ON CONFLICT (runner_id) DO NOTHING",
            )
            .bind(a.runner_id)
            .bind(&a.project)
            .bind(&a.profile)
            .bind(&a.session_id)
            .bind(message.time)
            .bind(&a.model)
            .bind(&a.permission)
            .bind(&a.allowed_tools)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a launched runner"))?;
            command_outcome(
                conn,
                a.command_id,
                message,
                None,
                project_resource_of_runner(a.runner_id),
            )
            .await
        }
        E::LaunchRejected(r) => {
            let rejection = (r.reason.as_str(), r.field.as_deref(), r.message.as_str());
            command_outcome(conn, r.command_id, message, Some(rejection), None).await
        }
        E::ControlDecided(c) => {
            let rejection = c
                .refused
                .as_deref()
                .map(|reason| (reason, None, c.message.as_str()));
            let resource = rejection
                .is_none()
                .then(|| project_resource_of_runner(c.runner_id))
                .flatten();
            command_outcome(conn, c.command_id, message, rejection, resource).await
        }
        E::Offered(o) => {
            // A stall of an earlier attempt says nothing about this one.
            sqlx::query(
                "UPDATE runners SET attempt = $2, session_id = $3, node = NULL, pid = NULL, resume_at = NULL,
                     stalled_at = CASE WHEN stalled_attempt < $2 THEN NULL ELSE stalled_at END,
                     stalled_idle_ms = CASE WHEN stalled_attempt < $2 THEN NULL ELSE stalled_idle_ms END,
                     stalled_attempt = CASE WHEN stalled_attempt < $2 THEN NULL ELSE stalled_attempt END
                 WHERE runner_id = $1",
            )
            .bind(o.runner_id)
            .bind(i32::try_from(o.attempt).unwrap_or(i32::MAX))
            .bind(&o.session_id)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting an offer"))?;
            touch(conn, o.runner_id, state, message).await
        }
        E::Placed(p) => {
            sqlx::query("UPDATE runners SET node = $2 WHERE runner_id = $1")
                .bind(p.runner_id)
                .bind(&p.node)
                .execute(&mut *conn)
                .await
                .map_err(store("projecting a placement"))?;
            touch(conn, p.runner_id, state, message).await
        }
        E::SessionBound(b) => {
            sqlx::query("UPDATE runners SET session_id = $2 WHERE runner_id = $1")
                .bind(b.runner_id)
                .bind(&b.session_id)
                .execute(&mut *conn)
                .await
                .map_err(store("projecting a bound session"))?;
            touch(conn, b.runner_id, state, message).await
        }
        E::RestartScheduled(r) => {
            sqlx::query(
                "UPDATE runners SET last_error = $2, resume_at = to_timestamp($3 / 1000.0) WHERE runner_id = $1",
            )
            .bind(r.runner_id)
            .bind(&r.reason)
            .bind(r.not_before_ms as f64)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a restart"))?;
            touch(conn, r.runner_id, state, message).await
        }
        E::Relaunched(r) => {
            // Only while the row is still at the lost attempt: the next
            // attempt's offer, when it came first, says more.
            let relaunched = sqlx::query(
                "UPDATE runners SET last_error = $3, node = NULL, pid = NULL
                 WHERE runner_id = $1 AND attempt = $2",
            )
            .bind(r.runner_id)
            .bind(i32::try_from(r.attempt).unwrap_or(i32::MAX))
            .bind(&r.reason)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a relaunch"))?;
            let state = (relaunched.rows_affected() > 0).then_some("restarting");
            touch(conn, r.runner_id, state, message).await
        }
        E::WaitingQuota(q) => {
            sqlx::query(
                "UPDATE runners SET last_error = $2, resume_at = to_timestamp($3 / 1000.0) WHERE runner_id = $1",
            )
            .bind(q.runner_id)
            .bind(&q.message)
            .bind(q.resume_at_ms as f64)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a quota wait"))?;
            touch(conn, q.runner_id, state, message).await
        }
        E::Exited(e) | E::Failed(e) | E::Lost(e) | E::Cancelled(e) => {
            let error =
                (e.reason != "completed" && e.reason != "stopped").then_some(e.reason.as_str());
            sqlx::query(
                "UPDATE runners SET exit_code = coalesce($2, exit_code), last_error = coalesce($3, last_error),
                     resume_at = NULL
                 WHERE runner_id = $1",
            )
            .bind(e.runner_id)
            .bind(e.exit_code)
            .bind(error)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a runner's end"))?;
            touch(conn, e.runner_id, state, message).await
        }
        E::Started(s) => touch(conn, s.runner_id, state, message).await,
        E::Paused(p) | E::Resumed(p) => touch(conn, p.runner_id, state, message).await,
        E::StopRequested(s) => touch(conn, s.runner_id, state, message).await,
    }
}

const COLUMNS: &str = "runner_id, project, profile, state, attempt, node, pid, session_id, last_error, exit_code,
    input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, cost_usd, created_at, updated_at,
    model, permission, allowed_tools, stalled_at, stalled_idle_ms, resume_at";

fn view(r: &sqlx::postgres::PgRow) -> RunnerView {
    RunnerView {
        id: r.get(0),
        project: r.get(1),
        profile: r.get(2),
        state: r.get(3),
        attempt: r.get(4),
        node: r.get(5),
        pid: r.get(6),
        session_id: r.get(7),
        model: r.get(17),
        permission: r.get(18),
        allowed_tools: r.get(19),
        last_error: r.get(8),
        exit_code: r.get(9),
        stalled_at: r.get(20),
        stalled_idle_ms: r.get(21),
        resume_at: r.get(22),
        tokens: Tokens {
            input: r.get(10),
            output: r.get(11),
            cache_creation: r.get(12),
            cache_read: r.get(13),
        },
        cost_usd: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
    }
}

/// One runner.
pub async fn get_runner(pool: &PgPool, id: Uuid) -> Result<Option<RunnerView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runners WHERE runner_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a runner"))?;
    Ok(row.as_ref().map(view))
}

/// Filters of the runner list.
#[derive(Debug, Clone, Default)]
pub struct RunnerFilter {
    /// Only this project's.
    pub project: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
    /// Only on this node.
    pub node: Option<String>,
}

/// Runners in id order (UUIDv7: launch order) after `after`.
pub async fn list_runners(
    pool: &PgPool,
    filter: &RunnerFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RunnerView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runners
         WHERE ($1::text IS NULL OR project = $1) AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR node = $3) AND ($4::uuid IS NULL OR runner_id > $4)
         ORDER BY runner_id LIMIT $5"
    )))
    .bind(&filter.project)
    .bind(&filter.state)
    .bind(&filter.node)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing runners"))?;
    Ok(rows.iter().map(view).collect())
}
