//! The supervisor's read tables, folded from its own log (claims, spawns,
//! process facts) and its applied inbox rows (offers, revokes, desired
//! states). Every fold is an upsert that only moves forward, so a rebuild
//! may replay either history first.

use crate::domain::desired_state::supersedes;
use sqlx::PgConnection;
use stratavore_events::process::{ProcessCommand, ProcessEvent};
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;

/// Tables a rebuild empties and refills.
pub const TABLES: &[&str] = &["offers", "attempts", "desired_states", "node_drain"];

fn version_of(entry: &Envelope) -> i64 {
    i64::try_from(entry.sequence).unwrap_or(i64::MAX)
}

/// Fold one of the supervisor's own log rows.
pub async fn project_own(conn: &mut PgConnection, entry: &Envelope) -> Result<(), StoreError> {
    // node.registered and dead-letter decisions change no table here.
    let Ok(event) = ProcessEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return Ok(());
    };
    let version = version_of(entry);
    let (runner, attempt, state, pid) = match &event {
        ProcessEvent::Claimed(c) => {
            return sqlx::query(
                "UPDATE offers SET node = $3, incarnation = $4 WHERE runner_id = $1 AND attempt = $2",
            )
            .bind(c.runner_id)
            .bind(i64::from(c.attempt))
            .bind(&c.node)
            .bind(c.incarnation)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(StoreError::new("projecting a claim"));
        }
        ProcessEvent::Spawning(c) => {
            return sqlx::query(
                "INSERT INTO attempts (runner_id, attempt, node, incarnation, state, version)
                 VALUES ($1, $2, $3, $4, 'spawning', $5)
                 ON CONFLICT (runner_id, attempt) DO NOTHING",
            )
            .bind(c.runner_id)
            .bind(i64::from(c.attempt))
            .bind(&c.node)
            .bind(c.incarnation)
            .bind(version)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(StoreError::new("projecting a spawn"));
        }
        ProcessEvent::Started(s) => (s.runner_id, s.attempt, Some("started"), Some(s.pid)),
        ProcessEvent::Exited(e) => (e.runner_id, e.attempt, Some("ended"), None),
        ProcessEvent::Failed(f) => (f.runner_id, f.attempt, Some("ended"), None),
        ProcessEvent::UsageReported(u) => (u.runner_id, u.attempt, None, None),
        ProcessEvent::SessionBound(b) => (b.runner_id, b.attempt, None, None),
        ProcessEvent::TextChunked(t) => (t.runner_id, t.attempt, None, None),
        ProcessEvent::SessionStarted(s) => (s.runner_id, s.attempt, None, None),
        ProcessEvent::ErrorReported(e) => (e.runner_id, e.attempt, None, None),
        ProcessEvent::CostReconciled(c) => (c.runner_id, c.attempt, None, None),
        ProcessEvent::Stalled(s) => (s.runner_id, s.attempt, None, None),
    };
    // A state only moves forward: `ended` is never undone by a fact that
    // happens to be folded after it.
    sqlx::query(
        "UPDATE attempts SET
             state = CASE WHEN state = 'ended' OR $3::text IS NULL THEN state ELSE $3 END,
             pid = coalesce($4, pid),
             version = greatest(version, $5)
         WHERE runner_id = $1 AND attempt = $2",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .bind(state)
    .bind(pid.map(i64::from))
    .bind(version)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(StoreError::new("projecting a process fact"))
}

/// Fold one applied received command.
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<(), StoreError> {
    let Ok(command) = ProcessCommand::from_data(&message.type_name, message.data.clone()) else {
        return Ok(());
    };
    match command {
        ProcessCommand::Offer(offer) => {
            let json = serde_json::to_value(&offer).unwrap_or(serde_json::Value::Null);
            sqlx::query(
                "INSERT INTO offers (runner_id, attempt, offer) VALUES ($1, $2, $3)
                 ON CONFLICT (runner_id, attempt) DO UPDATE SET offer = excluded.offer",
            )
            .bind(offer.runner_id)
            .bind(i64::from(offer.attempt))
            .bind(json)
            .execute(conn)
            .await
            .map_err(StoreError::new("projecting an offer"))?;
        }
        ProcessCommand::Revoke(answer) => {
            sqlx::query("UPDATE offers SET revoked = true WHERE runner_id = $1 AND attempt = $2")
                .bind(answer.runner_id)
                .bind(i64::from(answer.attempt))
                .execute(conn)
                .await
                .map_err(StoreError::new("projecting a revoke"))?;
        }
        ProcessCommand::Control(desired) => {
            let last = last_rev(conn, desired.runner_id, desired.attempt).await?;
            if supersedes(last, desired.rev) {
                let want = serde_json::to_value(desired.want)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO desired_states (runner_id, attempt, rev, want) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (runner_id, attempt) DO UPDATE SET rev = excluded.rev, want = excluded.want",
                )
                .bind(desired.runner_id)
                .bind(i64::from(desired.attempt))
                .bind(i64::try_from(desired.rev).unwrap_or(i64::MAX))
                .bind(want)
                .execute(conn)
                .await
                .map_err(StoreError::new("projecting a desired state"))?;
            }
        }
        // The TTL of the orchestrator's liveness, which the node's leases
        // and fence count in.
        ProcessCommand::Start(answer) => {
            sqlx::query("UPDATE offers SET ttl_ms = $3 WHERE runner_id = $1 AND attempt = $2")
                .bind(answer.runner_id)
                .bind(i64::from(answer.attempt))
                .bind(i64::try_from(answer.ttl_ms).unwrap_or(i64::MAX))
                .execute(conn)
                .await
                .map_err(StoreError::new("projecting a start"))?;
        }
        ProcessCommand::Drain(drain) => {
            sqlx::query(
                "INSERT INTO node_drain (node, draining, rev) VALUES ($1, $2, $3)
                 ON CONFLICT (node) DO UPDATE SET draining = excluded.draining, rev = excluded.rev
                 WHERE node_drain.rev < excluded.rev",
            )
            .bind(&drain.node)
            .bind(drain.draining)
            .bind(i64::try_from(drain.rev).unwrap_or(i64::MAX))
            .execute(conn)
            .await
            .map_err(StoreError::new("projecting a drain"))?;
        }
    }
    Ok(())
}

/// The rev of the desired state applied last for an attempt.
pub async fn last_rev(
    conn: &mut PgConnection,
    runner: uuid::Uuid,
    attempt: u32,
) -> Result<Option<u64>, StoreError> {
    let rev: Option<i64> =
        sqlx::query_scalar("SELECT rev FROM desired_states WHERE runner_id = $1 AND attempt = $2")
            .bind(runner)
            .bind(i64::from(attempt))
            .fetch_optional(conn)
            .await
            .map_err(StoreError::new("reading a desired state"))?;
    Ok(rev.and_then(|r| u64::try_from(r).ok()))
}
