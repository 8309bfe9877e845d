//! Folding a batch of runner and process events into session attempts
//! (and what runners were launched with, in `session_runners`), then
//! recomputing each session they touched, with a few statements for the
//! whole batch: the attempts it is about are made when new, locked and
//! read in one statement, folded in order by [`AttemptRow::apply`], the
//! changed ones written back in one more, and the sessions they were and
//! are in recomputed in one more.

use super::attempt_row::{AttemptRow, attempt_changed};
use crate::agent_events::AgentEvent;
use crate::rows;
use crate::runner_models::store;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet};
use stratavore_events::runner::RunnerEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

type Key = (Uuid, i32);

/// The columns of `session_attempts` an [`AttemptRow`] holds (all but the
/// generated `session_id`).
pub(super) const COLUMNS: &[&str] = &[
    "runner_id",
    "attempt",
    "offered_session",
    "resume",
    "agent_session",
    "node",
    "started_at",
    "ended_at",
    "bound",
    "turns",
    "messages",
    "last_text_role",
    "last_text_full",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "cost_usd",
    "result_text",
    "last_active_at",
    "transcript_path",
    "transcript_bytes",
    "transcript_sha256",
];

/// What a launch's approval says of its sessions, named as the columns of
/// `session_runners`.
#[derive(Debug, serde::Serialize)]
struct SessionRunner<'a> {
    runner_id: Uuid,
    project: &'a str,
    path: &'a str,
    profile: &'a str,
    prompt: &'a str,
    launched_at: DateTime<Utc>,
}

/// Fold `events` into the attempts they are about and their sessions.
pub(crate) async fn fold(conn: &mut PgConnection, events: &[AgentEvent]) -> Result<(), StoreError> {
    // Each attempt with the time of its first event (a new row starts
    // there), in key order, so two folds lock rows in the same order.
    let mut first: BTreeMap<Key, DateTime<Utc>> = BTreeMap::new();
    for event in events {
        if let Some(attempt) = attempt_changed(event) {
            first
                .entry((event.runner_id(), attempt))
                .or_insert(event.time());
        }
    }
    let mut sessions = BTreeSet::new();
    if !first.is_empty() {
        let mut attempts = read_locked(conn, &first).await?;
        for event in events {
            if let Some(attempt) = attempt_changed(event)
                && let Some((_, after)) = attempts.get_mut(&(event.runner_id(), attempt))
            {
                after.apply(event);
            }
        }
        let mut changed = Vec::new();
        for (before, after) in attempts.into_values() {
            if before != after {
                // The sessions the changed attempts are in, and those they
                // left.
                sessions.extend(before.session_id().map(str::to_owned));
                sessions.extend(after.session_id().map(str::to_owned));
                changed.push(after);
            }
        }
        rows::upsert(
            conn,
            "session_attempts",
            COLUMNS,
            &["runner_id", "attempt"],
            &changed,
            "writing session attempts",
        )
        .await?;
    }
    sessions.extend(record_launches(conn, events).await?);
    let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
    super::refresh::refresh_sessions(conn, &sessions).await
}

/// The attempts, made when new, locked and read, each twice: as they were
/// and to fold into.
async fn read_locked(
    conn: &mut PgConnection,
    first: &BTreeMap<Key, DateTime<Utc>>,
) -> Result<BTreeMap<Key, (AttemptRow, AttemptRow)>, StoreError> {
    let runners: Vec<Uuid> = first.keys().map(|k| k.0).collect();
    let attempts: Vec<i32> = first.keys().map(|k| k.1).collect();
    // Made first, so that an attempt a concurrent drain makes is waited
    // for and then read as it committed, never written over.
    sqlx::query(
        "INSERT INTO session_attempts (runner_id, attempt, last_active_at)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[])
         ON CONFLICT (runner_id, attempt) DO NOTHING",
    )
    .bind(&runners)
    .bind(&attempts)
    .bind(first.values().copied().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(store("recording session attempts"))?;
    let found = sqlx::query(
        "SELECT to_jsonb(a) FROM session_attempts a
         JOIN unnest($1::uuid[], $2::int[]) AS k(runner_id, attempt) USING (runner_id, attempt)
         WHERE a.runner_id = ANY($1)
         ORDER BY a.runner_id, a.attempt FOR UPDATE OF a",
    )
    .bind(&runners)
    .bind(&attempts)
    .fetch_all(&mut *conn)
    .await
    .map_err(store("reading session attempts"))?;
    let found: Vec<AttemptRow> = rows::decode(&found, "reading session attempts")?;
    Ok(found
        .into_iter()
        .map(|row| ((row.runner_id, row.attempt), (row.clone(), row)))
        .collect())
}

/// Record what the launches approved in `events` say of their sessions;
/// the sessions their runners' attempts are in (which may have come
/// first) are to be recomputed.
async fn record_launches(
    conn: &mut PgConnection,
    events: &[AgentEvent],
) -> Result<Vec<String>, StoreError> {
    let launches: BTreeMap<Uuid, SessionRunner<'_>> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Runner(s) => match &s.event {
                RunnerEvent::LaunchApproved(a) => Some(SessionRunner {
                    runner_id: a.runner_id,
                    project: &a.project,
                    path: &a.path,
                    profile: &a.profile,
                    prompt: &a.prompt,
                    launched_at: s.time,
                }),
                _ => None,
            },
            _ => None,
        })
        .rev()
        // The first approval of a runner counts (a row is never replaced).
        .map(|r| (r.runner_id, r))
        .collect();
    if launches.is_empty() {
        return Ok(Vec::new());
    }
    let launches: Vec<SessionRunner<'_>> = launches.into_values().collect();
    sqlx::query(
        "INSERT INTO session_runners (runner_id, project, path, profile, prompt, launched_at)
         SELECT runner_id, project, path, profile, prompt, launched_at
         FROM jsonb_populate_recordset(NULL::session_runners, $1)
         ON CONFLICT (runner_id) DO NOTHING",
    )
    .bind(sqlx::types::Json(&launches))
    .execute(&mut *conn)
    .await
    .map_err(store("recording launched runners' session facts"))?;
    sqlx::query_scalar(
        "SELECT DISTINCT session_id FROM session_attempts
         WHERE runner_id = ANY($1) AND session_id IS NOT NULL",
    )
    .bind(launches.iter().map(|r| r.runner_id).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await
    .map_err(store("reading runners' sessions"))
}
