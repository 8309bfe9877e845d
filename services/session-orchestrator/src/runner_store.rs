//! Reading and folding runners: a runner's state is folded from its own
//! stream in the log (decisions read the truth, not a projection), and the
//! `runners`, `runner_timers` and `sessions` tables are projections of the
//! runner events for the questions a stream cannot answer quickly (how many
//! run in a project, which timers are due, which session to continue).

use crate::domain::runners::{self, Runner, RunnerState, TimerChange, timer_change};
use sqlx::{PgConnection, Row};
use stratavore_events::runner::RunnerEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

/// The stream of a runner's lifecycle.
pub fn runner_stream(runner_id: Uuid) -> String {
    format!("runner-{runner_id}")
}

/// A runner's state and its stream's version, folded from the log.
pub async fn load_runner(
    conn: &mut PgConnection,
    runner_id: Uuid,
) -> Result<Option<(Runner, u64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT type, data, stream_version FROM log WHERE stream = $1 ORDER BY stream_version",
    )
    .bind(runner_stream(runner_id))
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("reading a runner's stream"))?;
    let mut state = None;
    let mut version = 0;
    for row in rows {
        let type_name: String = row.get(0);
        let data: serde_json::Value = row.get(1);
        version = u64::try_from(row.get::<i64, _>(2)).unwrap_or(0);
        // Every row of a runner stream is a runner event (one writer: us).
        if let Ok(event) = RunnerEvent::from_data(&type_name, data) {
            state = runners::apply(state, &event);
        }
    }
    Ok(state.map(|r| (r, version)))
}

/// The launches (project, profile) of the runners given that this
/// orchestrator launched, by runner.
pub async fn launches_of(
    conn: &mut PgConnection,
    runner_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, (String, String)>, StoreError> {
    let rows =
        sqlx::query("SELECT runner_id, project, profile FROM runners WHERE runner_id = ANY($1)")
            .bind(runner_ids)
            .fetch_all(conn)
            .await
            .map_err(StoreError::new("reading runners' launches"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

fn state_name(state: RunnerState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Fold one runner event (already appended or about to be, in the same
/// transaction) into the projections.
pub async fn project_runner_event(
    conn: &mut PgConnection,
    entry: &Envelope,
) -> Result<(), StoreError> {
    let Ok(event) = RunnerEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return Ok(());
    };
    let runner_id = match runner_id_of(&event) {
        Some(id) => id,
        None => return Ok(()),
    };
    let version = i64::try_from(entry.sequence).unwrap_or(i64::MAX);
    let now_ms = entry.time.timestamp_millis();
    let row = sqlx::query("SELECT project, snapshot FROM runners WHERE runner_id = $1")
        .bind(runner_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::new("reading a runner's snapshot"))?;
    let (project, previous) = match (&event, row) {
        (RunnerEvent::LaunchApproved(a), _) => (a.project.clone(), None),
        (_, Some(row)) => {
            let snapshot: serde_json::Value = row.get(1);
            (
                row.get::<String, _>(0),
                serde_json::from_value::<Runner>(snapshot).ok(),
            )
        }
        // A rejected launch has no runner row: nothing runs.
        (_, None) => return Ok(()),
    };
    let Some(next) = runners::apply(previous, &event) else {
        return Ok(());
    };
    let snapshot = serde_json::to_value(&next).map_err(|e| StoreError {
        context: "encoding a runner snapshot",
        source: sqlx::Error::Encode(Box::new(e)),
    })?;
    let profile = match &event {
        RunnerEvent::LaunchApproved(a) => a.profile.clone(),
        _ => String::new(),
    };
    sqlx::query(
        "INSERT INTO runners (runner_id, project, profile, state, attempt, node, session_id, version, snapshot)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (runner_id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
             node = excluded.node, session_id = excluded.session_id, version = excluded.version,
             snapshot = excluded.snapshot",
    )
    .bind(runner_id)
    .bind(&project)
    .bind(&profile)
    .bind(state_name(next.state))
    .bind(i32::try_from(next.attempt).unwrap_or(i32::MAX))
    .bind(next.placement.as_ref().map(|(n, _)| n.clone()))
    .bind(&next.session_id)
    .bind(version)
    .bind(snapshot)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::new("projecting a runner"))?;
    let active = (!next.state.is_terminal()).then_some(runner_id);
    // The session's files are where the attempt that bound it runs.
    let holder = match &event {
        RunnerEvent::SessionBound(_) => next.placement.as_ref().map(|(node, _)| node.as_str()),
        _ => None,
    };
    upsert_session(
        conn,
        &next.session_id,
        &project,
        SessionChange {
            bound: next.session_bound,
            active_runner: active,
            holder,
        },
        now_ms,
    )
    .await?;
    match timer_change(&event) {
        TimerChange::Set {
            kind,
            attempt,
            due_ms,
        } => {
            sqlx::query(
                "INSERT INTO runner_timers (runner_id, kind, attempt, due_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (runner_id) DO UPDATE SET kind = excluded.kind, attempt = excluded.attempt,
                     due_ms = excluded.due_ms",
            )
            .bind(runner_id)
            .bind(kind.as_str())
            .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
            .bind(due_ms)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("setting a runner timer"))?;
        }
        TimerChange::Clear => {
            sqlx::query("DELETE FROM runner_timers WHERE runner_id = $1")
                .bind(runner_id)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::new("clearing a runner timer"))?;
        }
        TimerChange::Keep => {}
    }
    Ok(())
}

/// What a runner event says of its session.
struct SessionChange<'a> {
    bound: bool,
    active_runner: Option<Uuid>,
    /// The node that now holds its files (only when it is bound there).
    holder: Option<&'a str>,
}

async fn upsert_session(
    conn: &mut PgConnection,
    session_id: &str,
    project: &str,
    change: SessionChange<'_>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (session_id, project, bound, active_runner, last_active_ms, node)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (session_id) DO UPDATE SET bound = sessions.bound OR excluded.bound,
             active_runner = excluded.active_runner, last_active_ms = excluded.last_active_ms,
             node = COALESCE(excluded.node, sessions.node)",
    )
    .bind(session_id)
    .bind(project)
    .bind(change.bound)
    .bind(change.active_runner)
    .bind(now_ms)
    .bind(change.holder)
    .execute(conn)
    .await
    .map_err(StoreError::new("projecting a session"))?;
    Ok(())
}

fn runner_id_of(event: &RunnerEvent) -> Option<Uuid> {
    use RunnerEvent as E;
    Some(match event {
        E::LaunchApproved(e) => e.runner_id,
        E::LaunchRejected(e) => e.runner_id,
        E::Offered(e) => e.runner_id,
        E::Placed(e) => e.runner_id,
        E::Started(e) => e.runner_id,
        E::Paused(e) | E::Resumed(e) => e.runner_id,
        E::StopRequested(e) => e.runner_id,
        E::SessionBound(e) => e.runner_id,
        E::RestartScheduled(e) => e.runner_id,
        E::Relaunched(e) => e.runner_id,
        E::WaitingQuota(e) => e.runner_id,
        E::Exited(e) | E::Failed(e) | E::Lost(e) | E::Cancelled(e) => e.runner_id,
        E::ControlDecided(e) => e.runner_id,
    })
}

/// Runners of a project that hold one of its slots: every runner that has
/// not ended, but for those waiting on a provider's quota, which may wait
/// for hours and are admitted again when the wait is over.
pub async fn active_runners(conn: &mut PgConnection, project: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM runners WHERE project = $1
         AND state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled', 'waiting_quota')",
    )
    .bind(project)
    .fetch_one(conn)
    .await
    .map_err(StoreError::new("counting a project's runners"))
}

/// A session as launches see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id.
    pub session_id: String,
    /// Its project.
    pub project: String,
    /// Whether a first turn was saved.
    pub bound: bool,
    /// The runner using it now.
    pub active_runner: Option<Uuid>,
}

/// One session.
pub async fn session(
    conn: &mut PgConnection,
    session_id: &str,
) -> Result<Option<SessionInfo>, StoreError> {
    let row = sqlx::query(
        "SELECT session_id, project, bound, active_runner FROM sessions WHERE session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("reading a session"))?;
    Ok(row.map(|r| SessionInfo {
        session_id: r.get(0),
        project: r.get(1),
        bound: r.get(2),
        active_runner: r.get(3),
    }))
}

/// The project's most recently active resumable session that is not in use.
pub async fn latest_resumable(
    conn: &mut PgConnection,
    project: &str,
) -> Result<Option<SessionInfo>, StoreError> {
    let row = sqlx::query(
        "SELECT session_id, project, bound, active_runner FROM sessions
         WHERE project = $1 AND bound AND active_runner IS NULL
         ORDER BY last_active_ms DESC, session_id LIMIT 1",
    )
    .bind(project)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("finding a resumable session"))?;
    Ok(row.map(|r| SessionInfo {
        session_id: r.get(0),
        project: r.get(1),
        bound: r.get(2),
        active_runner: r.get(3),
    }))
}

/// A due timer, locked for this transaction (another replica skips it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The runner.
    pub runner_id: Uuid,
    /// `launch_timeout` or `wait_over`.
    pub kind: String,
    /// The attempt it is about.
    pub attempt: u32,
}

/// Timers due at `now_ms`, oldest first (not locked).
pub async fn due_timers_peek(
    conn: &mut PgConnection,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<DueTimer>, StoreError> {
    let rows = sqlx::query(
        "SELECT runner_id, kind, attempt FROM runner_timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("finding due timers"))?;
    Ok(rows.iter().map(due_timer).collect())
}

/// The runner's timer, locked for this transaction, if it is still due
/// (another replica holding it makes this None at once).
pub async fn lock_due_timer(
    conn: &mut PgConnection,
    runner_id: Uuid,
    now_ms: i64,
) -> Result<Option<DueTimer>, StoreError> {
    let row = sqlx::query(
        "SELECT runner_id, kind, attempt FROM runner_timers WHERE runner_id = $1 AND due_ms <= $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(runner_id)
    .bind(now_ms)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("locking a due timer"))?;
    Ok(row.as_ref().map(due_timer))
}

/// Drop a runner's timer.
pub async fn delete_timer(conn: &mut PgConnection, runner_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM runner_timers WHERE runner_id = $1")
        .bind(runner_id)
        .execute(conn)
        .await
        .map_err(StoreError::new("deleting a timer"))?;
    Ok(())
}

fn due_timer(r: &sqlx::postgres::PgRow) -> DueTimer {
    DueTimer {
        runner_id: r.get(0),
        kind: r.get(1),
        attempt: u32::try_from(r.get::<i32, _>(2)).unwrap_or(0),
    }
}

/// Runners whose current attempt was placed on `node` and has not started.
pub async fn starting_on(conn: &mut PgConnection, node: &str) -> Result<Vec<Uuid>, StoreError> {
    sqlx::query_scalar(
        "SELECT runner_id FROM runners WHERE node = $1 AND state = 'starting' ORDER BY runner_id",
    )
    .bind(node)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("finding a node's unstarted runners"))
}
