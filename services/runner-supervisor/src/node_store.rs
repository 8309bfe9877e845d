//! What the node's background work reads from its tables: the attempts it
//! must run, what is left unfinished after a restart, and how many slots
//! are in use.

use sqlx::{PgPool, Row};
use stratavore_events::process::OfferAttempt;
use stratavore_events::runner::Want;
use stratavore_store::StoreError;
use uuid::Uuid;

/// An attempt this node accepted and has not seen end.
#[derive(Debug, Clone)]
pub struct LiveAttempt {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// `spawning` or `started`.
    pub state: String,
    /// The offer it was spawned from.
    pub offer: OfferAttempt,
    /// The latest desired state (rev, want), if any came.
    pub desired: Option<(u64, Want)>,
    /// The liveness TTL its `start` carried.
    pub ttl_ms: Option<u64>,
}

fn attempt_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The live attempts of `node`, of `incarnation` only (`None`: of any, as
/// registration wants them).
pub async fn live_attempts(
    pool: &PgPool,
    node: &str,
    incarnation: Option<Uuid>,
) -> Result<Vec<LiveAttempt>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.runner_id, a.attempt, a.state, o.offer, d.rev, d.want, o.ttl_ms
         FROM attempts a
         JOIN offers o ON o.runner_id = a.runner_id AND o.attempt = a.attempt
         LEFT JOIN desired_states d ON d.runner_id = a.runner_id AND d.attempt = a.attempt
         WHERE a.node = $1 AND a.state <> 'ended' AND ($2::uuid IS NULL OR a.incarnation = $2)
         ORDER BY a.runner_id, a.attempt",
    )
    .bind(node)
    .bind(incarnation)
    .fetch_all(pool)
    .await
    .map_err(StoreError::new("reading live attempts"))?;
    let mut live = Vec::with_capacity(rows.len());
    for r in rows {
        let offer: serde_json::Value = r.get(3);
        let Ok(offer) = serde_json::from_value::<OfferAttempt>(offer) else {
            tracing::error!(runner = %r.get::<Uuid, _>(0), "an offer in the table does not read back");
            continue;
        };
        let desired = match (r.get::<Option<i64>, _>(4), r.get::<Option<String>, _>(5)) {
            (Some(rev), Some(want)) => serde_json::from_value(serde_json::Value::String(want))
                .ok()
                .map(|w| (u64::try_from(rev).unwrap_or(0), w)),
            _ => None,
        };
        live.push(LiveAttempt {
            runner_id: r.get(0),
            attempt: attempt_of(r.get(1)),
            state: r.get(2),
            offer,
            desired,
            ttl_ms: r
                .get::<Option<i64>, _>(6)
                .and_then(|t| u64::try_from(t).ok()),
        });
    }
    Ok(live)
}

/// Whether the orchestrator set `node` to drain.
pub async fn draining(db: impl sqlx::PgExecutor<'_>, node: &str) -> Result<bool, StoreError> {
    let draining: Option<bool> =
        sqlx::query_scalar("SELECT draining FROM node_drain WHERE node = $1")
            .bind(node)
            .fetch_optional(db)
            .await
            .map_err(StoreError::new("reading the drain"))?;
    Ok(draining.unwrap_or(false))
}

/// Slots in use: offers this incarnation claimed that are neither revoked
/// nor spawned yet, plus attempts not ended.
pub async fn used_slots(
    db: impl sqlx::PgExecutor<'_>,
    node: &str,
    incarnation: Uuid,
) -> Result<u64, StoreError> {
    let used: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM offers o
                 WHERE o.node = $1 AND o.incarnation = $2 AND NOT o.revoked
                   AND NOT EXISTS (SELECT 1 FROM attempts a
                                   WHERE a.runner_id = o.runner_id AND a.attempt = o.attempt))
              + (SELECT count(*) FROM attempts WHERE node = $1 AND state <> 'ended')",
    )
    .bind(node)
    .bind(incarnation)
    .fetch_one(db)
    .await
    .map_err(StoreError::new("counting used slots"))?;
    Ok(u64::try_from(used).unwrap_or(0))
}
