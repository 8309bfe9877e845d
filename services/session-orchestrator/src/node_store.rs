//! The `nodes` and `node_losses` projections, folded from registrations
//! (received) and from losses and drains (the orchestrator's own log), and
//! the questions decisions ask of them.
//!
//! Every fold is an upsert whose result does not depend on whether a
//! rebuild replays the log or the inbox first: the latest incarnation wins
//! (UUIDv7s sort by time), losses are kept per incarnation, drains by their
//! stream's version, and the state is computed from those three each time.

use crate::domain::nodes::NodeState;
use sqlx::{PgConnection, Row};
use stratavore_events::process::NodeEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

/// The stream of the loss of one node incarnation: version 1 is the only
/// one, so two replicas declaring the same loss conflict and one is kept.
pub fn node_lost_stream(node: &str, incarnation: Uuid) -> String {
    format!("node-lost-{node}-{incarnation}")
}

/// The stream of a node's drain decisions; its version is the `rev` the
/// node applies them by.
pub fn node_drain_stream(node: &str) -> String {
    format!("node-drain-{node}")
}

/// Recompute a node's state from its latest incarnation, its losses and
/// its drain.
async fn refresh_state(conn: &mut PgConnection, node: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE nodes SET state = CASE
             WHEN EXISTS (SELECT 1 FROM node_losses l
                          WHERE l.node = nodes.node AND l.incarnation = nodes.incarnation) THEN 'lost'
             WHEN draining THEN 'draining'
             ELSE 'up' END
         WHERE node = $1",
    )
    .bind(node)
    .execute(conn)
    .await
    .map_err(StoreError::new("computing a node's state"))?;
    Ok(())
}

/// Fold a node event (own or received) into the projections.
pub async fn project_node_event(
    conn: &mut PgConnection,
    entry: &Envelope,
) -> Result<(), StoreError> {
    let Ok(event) = NodeEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return Ok(());
    };
    let node = match &event {
        NodeEvent::Registered(r) => {
            sqlx::query(
                "INSERT INTO nodes (node, incarnation, state, capacity, roots, address, draining, drain_version)
                 VALUES ($1, $2, 'up', $3, $4, $5, false, 0)
                 ON CONFLICT (node) DO UPDATE SET incarnation = excluded.incarnation,
                     capacity = excluded.capacity, roots = excluded.roots, address = excluded.address
                 WHERE nodes.incarnation IS NULL OR nodes.incarnation <= excluded.incarnation",
            )
            .bind(&r.node)
            .bind(r.incarnation)
            .bind(i32::try_from(r.capacity).unwrap_or(i32::MAX))
            .bind(&r.roots)
            .bind(&r.address)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("projecting a node's registration"))?;
            r.node.clone()
        }
        NodeEvent::Lost(l) => {
            sqlx::query(
                "INSERT INTO node_losses (node, incarnation, missed) VALUES ($1, $2, $3)
                 ON CONFLICT (node, incarnation) DO NOTHING",
            )
            .bind(&l.node)
            .bind(l.incarnation)
            .bind(i32::try_from(l.missed).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("projecting a node's loss"))?;
            // Its registration may come later in a rebuild: it fills the
            // rest in.
            sqlx::query(
                "INSERT INTO nodes (node, incarnation, state, capacity, roots, address, draining, drain_version)
                 VALUES ($1, $2, 'lost', 0, '{}', '', false, 0)
                 ON CONFLICT (node) DO UPDATE SET incarnation = excluded.incarnation
                 WHERE nodes.incarnation IS NULL OR nodes.incarnation < excluded.incarnation",
            )
            .bind(&l.node)
            .bind(l.incarnation)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("projecting a node's loss"))?;
            l.node.clone()
        }
        NodeEvent::DrainChanged(c) => {
            let version = i64::try_from(entry.sequence).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO nodes (node, incarnation, state, capacity, roots, address, draining, drain_version)
                 VALUES ($1, NULL, 'up', 0, '{}', '', $2, $3)
                 ON CONFLICT (node) DO UPDATE SET draining = excluded.draining,
                     drain_version = excluded.drain_version
                 WHERE nodes.drain_version < excluded.drain_version",
            )
            .bind(&c.node)
            .bind(c.draining)
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("projecting a node's drain"))?;
            c.node.clone()
        }
        NodeEvent::DrainRefused(_) => return Ok(()),
    };
    refresh_state(conn, &node).await
}

/// A node's state, when it ever registered.
pub async fn node_state(
    conn: &mut PgConnection,
    node: &str,
) -> Result<Option<NodeState>, StoreError> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM nodes WHERE node = $1 AND incarnation IS NOT NULL")
            .bind(node)
            .fetch_optional(conn)
            .await
            .map_err(StoreError::new("reading a node's state"))?;
    Ok(state.as_deref().and_then(NodeState::parse))
}

/// The version of a node's drain stream, read from the log (decisions
/// read the truth).
pub async fn drain_version(conn: &mut PgConnection, node: &str) -> Result<u64, StoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(stream_version) FROM log WHERE stream = $1")
            .bind(node_drain_stream(node))
            .fetch_one(conn)
            .await
            .map_err(StoreError::new("reading a node's drain stream"))?;
    Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// Whether the loss of this incarnation is in the log already.
pub async fn loss_recorded(
    conn: &mut PgConnection,
    node: &str,
    incarnation: Uuid,
) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM log WHERE stream = $1)")
        .bind(node_lost_stream(node, incarnation))
        .fetch_one(conn)
        .await
        .map_err(StoreError::new("looking for a node's loss"))
}

/// A node as liveness counts it: its latest incarnation, and whether that
/// one is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    /// The node.
    pub node: String,
    /// Its latest incarnation.
    pub incarnation: Uuid,
    /// Whether that incarnation was declared lost.
    pub lost: bool,
}

/// Every registered node.
pub async fn known_nodes(conn: &mut PgConnection) -> Result<Vec<KnownNode>, StoreError> {
    let rows = sqlx::query(
        "SELECT node, incarnation, state = 'lost' FROM nodes WHERE incarnation IS NOT NULL ORDER BY node",
    )
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("listing nodes"))?;
    Ok(rows
        .iter()
        .map(|r| KnownNode {
            node: r.get(0),
            incarnation: r.get(1),
            lost: r.get(2),
        })
        .collect())
}

/// Runners that have not ended and that a loss of `node` may concern: their
/// attempt was placed there, or their session's files live there.
pub async fn runners_touching(
    conn: &mut PgConnection,
    node: &str,
) -> Result<Vec<Uuid>, StoreError> {
    sqlx::query_scalar(
        "SELECT runner_id FROM runners
         WHERE state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled')
           AND (node = $1 OR session_id IN (SELECT session_id FROM sessions WHERE node = $1))
         ORDER BY runner_id",
    )
    .bind(node)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("finding a node's runners"))
}

/// The node holding a session's files, when recorded.
pub async fn session_node(
    conn: &mut PgConnection,
    session_id: &str,
) -> Result<Option<String>, StoreError> {
    let node: Option<Option<String>> =
        sqlx::query_scalar("SELECT node FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(conn)
            .await
            .map_err(StoreError::new("reading a session's node"))?;
    Ok(node.flatten())
}

/// Of these sessions, those whose files live on a lost node, with the node.
pub async fn sessions_on_lost_nodes(
    conn: &mut PgConnection,
    sessions: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT s.session_id, s.node FROM sessions s JOIN nodes n ON n.node = s.node
         WHERE s.session_id = ANY($1) AND n.state = 'lost'",
    )
    .bind(sessions)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("finding sessions on lost nodes"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Nodes by state, for the gauge.
pub async fn count_by_state(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, StoreError> {
    sqlx::query_as("SELECT state, count(*) FROM nodes WHERE incarnation IS NOT NULL GROUP BY state")
        .fetch_all(conn)
        .await
        .map_err(StoreError::new("counting nodes"))
}
