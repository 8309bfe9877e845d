//! The supervisor's read tables, folded from its own log (claims, spawns,
//! process facts) and its applied inbox rows (offers, revokes, desired
//! states). Every fold is an upsert that only moves forward, so a rebuild
//! may replay either history first.

use crate::domain::desired_state::supersedes;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use stratavore_events::process::{ProcessCommand, ProcessEvent};
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;

/// Tables a rebuild empties and refills.
pub const TABLES: &[&str] = &["offers", "attempts", "desired_states", "node_drain"];

fn version_of(entry: &Envelope) -> i64 {
    i64::try_from(entry.sequence).unwrap_or(i64::MAX)
}

/// What a process fact does to its attempt's row: the state it moves to
/// (if any), the pid it learned (if any), and its version in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptChange {
    /// `started` or `ended`; None leaves the state.
    pub state: Option<&'static str>,
    /// The agent's pid, once started.
    pub pid: Option<i64>,
    /// The fact's version.
    pub version: i64,
}

impl AttemptChange {
    /// `self` then `next`, as one change with the same effect on any row:
    /// a state only moves forward (`ended` is never undone), the last pid
    /// given stands, and the version is the highest.
    #[must_use]
    pub fn then(self, next: Self) -> Self {
        Self {
            state: if self.state == Some(ENDED) {
                self.state
            } else {
                next.state.or(self.state)
            },
            pid: next.pid.or(self.pid),
            version: self.version.max(next.version),
        }
    }
}

const ENDED: &str = "ended";

/// What one of the supervisor's own log rows changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnEffect {
    /// A claim names the node and incarnation in the attempt's offer.
    Claim {
        /// The offer's key.
        key: (uuid::Uuid, u32),
        /// The claiming node.
        node: String,
        /// Its incarnation.
        incarnation: uuid::Uuid,
    },
    /// A spawn makes the attempt's row.
    Spawn {
        /// The attempt's key.
        key: (uuid::Uuid, u32),
        /// The node.
        node: String,
        /// Its incarnation.
        incarnation: uuid::Uuid,
        /// The spawn's version.
        version: i64,
    },
    /// Any other process fact moves its attempt's row.
    Attempt((uuid::Uuid, u32), AttemptChange),
    /// node.registered, dead-letter decisions: no table here.
    Nothing,
}

/// What `entry` changes; pure.
#[must_use]
pub fn own_effect(entry: &Envelope) -> OwnEffect {
    let Ok(event) = ProcessEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return OwnEffect::Nothing;
    };
    let version = version_of(entry);
    let (runner, attempt, state, pid) = match event {
        ProcessEvent::Claimed(c) => {
            return OwnEffect::Claim {
                key: (c.runner_id, c.attempt),
                node: c.node,
                incarnation: c.incarnation,
            };
        }
        ProcessEvent::Spawning(c) => {
            return OwnEffect::Spawn {
                key: (c.runner_id, c.attempt),
                node: c.node,
                incarnation: c.incarnation,
                version,
            };
        }
        ProcessEvent::Started(s) => (s.runner_id, s.attempt, Some("started"), Some(s.pid)),
        ProcessEvent::Exited(e) => (e.runner_id, e.attempt, Some(ENDED), None),
        ProcessEvent::Failed(f) => (f.runner_id, f.attempt, Some(ENDED), None),
        ProcessEvent::UsageReported(u) => (u.runner_id, u.attempt, None, None),
        ProcessEvent::SessionBound(b) => (b.runner_id, b.attempt, None, None),
        ProcessEvent::TextChunked(t) => (t.runner_id, t.attempt, None, None),
        ProcessEvent::SessionStarted(s) => (s.runner_id, s.attempt, None, None),
        ProcessEvent::ErrorReported(e) => (e.runner_id, e.attempt, None, None),
        ProcessEvent::CostReconciled(c) => (c.runner_id, c.attempt, None, None),
        ProcessEvent::Stalled(s) => (s.runner_id, s.attempt, None, None),
    };
    OwnEffect::Attempt(
        (runner, attempt),
        AttemptChange {
            state,
            pid: pid.map(i64::from),
            version,
        },
    )
}

/// Fold one of the supervisor's own log rows.
pub async fn project_own(conn: &mut PgConnection, entry: &Envelope) -> Result<(), StoreError> {
    project_own_batch(conn, &[entry]).await
}

/// Fold some of the supervisor's own log rows in their order. The process
/// facts between two claims or spawns are folded into one change per
/// attempt ([`AttemptChange::then`]) and written with one statement: a
/// scan records a fact or two for each of hundreds of runners, and a
/// statement each, every round trip waiting to be scheduled on a busy
/// node, made the scan, and so the usage it reports, seconds late
/// (`make bench`, supervision scale).
pub async fn project_own_batch(
    conn: &mut PgConnection,
    entries: &[&Envelope],
) -> Result<(), StoreError> {
    let mut changes: BTreeMap<(uuid::Uuid, u32), AttemptChange> = BTreeMap::new();
    for entry in entries {
        match own_effect(entry) {
            OwnEffect::Nothing => {}
            OwnEffect::Attempt(key, change) => {
                changes
                    .entry(key)
                    .and_modify(|c| *c = c.then(change))
                    .or_insert(change);
            }
            OwnEffect::Claim {
                key,
                node,
                incarnation,
            } => {
                write_changes(conn, &mut changes).await?;
                sqlx::query(
                    "UPDATE offers SET node = $3, incarnation = $4 WHERE runner_id = $1 AND attempt = $2",
                )
                .bind(key.0)
                .bind(i64::from(key.1))
                .bind(node)
                .bind(incarnation)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::new("projecting a claim"))?;
            }
            OwnEffect::Spawn {
                key,
                node,
                incarnation,
                version,
            } => {
                write_changes(conn, &mut changes).await?;
                sqlx::query(
                    "INSERT INTO attempts (runner_id, attempt, node, incarnation, state, version)
                     VALUES ($1, $2, $3, $4, 'spawning', $5)
                     ON CONFLICT (runner_id, attempt) DO NOTHING",
                )
                .bind(key.0)
                .bind(i64::from(key.1))
                .bind(node)
                .bind(incarnation)
                .bind(version)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::new("projecting a spawn"))?;
            }
        }
    }
    write_changes(conn, &mut changes).await
}

/// Apply and clear `changes`, in key order (so two transactions lock the
/// rows in the same order). A state only moves forward: `ended` is never
/// undone by a fact that happens to be folded after it.
async fn write_changes(
    conn: &mut PgConnection,
    changes: &mut BTreeMap<(uuid::Uuid, u32), AttemptChange>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let taken = std::mem::take(changes);
    let runners: Vec<uuid::Uuid> = taken.keys().map(|k| k.0).collect();
    let attempts: Vec<i64> = taken.keys().map(|k| i64::from(k.1)).collect();
    let states: Vec<Option<&str>> = taken.values().map(|c| c.state).collect();
    let pids: Vec<Option<i64>> = taken.values().map(|c| c.pid).collect();
    let versions: Vec<i64> = taken.values().map(|c| c.version).collect();
    // `= ANY` beside the join: the plan must not depend on statistics.
    sqlx::query(
        "UPDATE attempts a SET
             state = CASE WHEN a.state = 'ended' OR u.state IS NULL THEN a.state ELSE u.state END,
             pid = coalesce(u.pid, a.pid),
             version = greatest(a.version, u.version)
         FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[])
              AS u(runner_id, attempt, state, pid, version)
         WHERE a.runner_id = ANY($1) AND a.runner_id = u.runner_id AND a.attempt = u.attempt",
    )
    .bind(&runners)
    .bind(&attempts)
    .bind(&states)
    .bind(&pids)
    .bind(&versions)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(StoreError::new("projecting process facts"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn change(state: Option<&'static str>, pid: Option<i64>, version: i64) -> AttemptChange {
        AttemptChange {
            state,
            pid,
            version,
        }
    }

    /// The row as the per-fact statement leaves it.
    fn apply(
        row: (&'static str, Option<i64>, i64),
        c: AttemptChange,
    ) -> (&'static str, Option<i64>, i64) {
        let state = match c.state {
            Some(s) if row.0 != ENDED => s,
            _ => row.0,
        };
        (state, c.pid.or(row.1), row.2.max(c.version))
    }

    #[test]
    fn facts_folded_together_leave_the_row_as_one_at_a_time() {
        let facts = [
            change(None, None, 3),
            change(Some("started"), Some(41), 2),
            change(None, None, 5),
            change(Some(ENDED), None, 6),
            change(Some("started"), Some(42), 4),
            change(None, None, 7),
        ];
        for row in [
            ("spawning", None, 1),
            ("started", Some(7), 9),
            (ENDED, Some(7), 3),
        ] {
            for n in 1..=facts.len() {
                let each = facts[..n].iter().fold(row, |r, c| apply(r, *c));
                let folded = facts[1..n].iter().fold(facts[0], |a, c| a.then(*c));
                assert_eq!(apply(row, folded), each, "{row:?} after {n} facts");
            }
        }
    }

    #[test]
    fn ended_is_final_and_the_last_pid_stands() {
        let end = change(Some(ENDED), None, 2).then(change(Some("started"), Some(9), 3));
        assert_eq!(end, change(Some(ENDED), Some(9), 3));
        let none = change(Some("started"), Some(8), 5).then(change(None, None, 1));
        assert_eq!(none, change(Some("started"), Some(8), 5));
    }
}
