//! The nodes read model: folded from node events (a node's registration
//! from its own log; its loss and its drain from the orchestrator's), plus
//! the outcomes of drain commands (changed or refused). A node's view adds what the runners read
//! model says runs on it and, from this gateway's memory, its latest
//! heartbeat.
//!
//! The two logs reach the gateway in either order, so every fold is an
//! upsert that a later fact of the same kind wins: a later incarnation's
//! registration, a loss of a later incarnation, the drain applied last (one
//! orchestrator stream, applied in order). Which state a node is in is
//! decided on read, from those facts, by [`NodeFacts::state`].

use crate::heartbeats::SeenHeartbeat;
use crate::read_models::command_outcome;
use crate::runner_models::store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use stratavore_events::process::NodeEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

/// The runner states that hold a slot on a node.
pub const RUNNING_STATES: &[&str] = &["starting", "running", "paused", "stopping"];

/// What a node is doing, as far as the system decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Registered and taking offers.
    Up,
    /// Taking no new offers; its runners finish.
    Draining,
    /// Its current incarnation was declared lost.
    Lost,
}

/// A node's row: what the events said.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// Its id.
    pub node: String,
    /// Its latest registered incarnation (none: a loss or a drain arrived
    /// before its registration).
    pub incarnation: Option<Uuid>,
    /// Runners it takes at once.
    pub capacity: Option<i32>,
    /// The project roots it serves.
    pub roots: Vec<String>,
    /// Its HTTP address.
    pub address: Option<String>,
    /// When it registered (the event's time).
    pub registered_at: Option<DateTime<Utc>>,
    /// Whether the orchestrator set it to drain.
    pub draining: bool,
    /// The latest incarnation declared lost.
    pub lost_incarnation: Option<Uuid>,
    /// When that was (the event's time).
    pub lost_at: Option<DateTime<Utc>>,
    /// Runners in [`RUNNING_STATES`] placed on it.
    pub running: i64,
}

impl NodeFacts {
    /// Lost when the latest loss is of its current incarnation (or of a
    /// later one whose registration has not arrived); a node that
    /// registered again since is back. Otherwise draining or up.
    pub fn state(&self) -> NodeState {
        let lost = match (self.lost_incarnation, self.incarnation) {
            (Some(lost), Some(current)) => lost >= current,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if lost {
            NodeState::Lost
        } else if self.draining {
            NodeState::Draining
        } else {
            NodeState::Up
        }
    }
}

/// One runner's process in a node's latest heartbeat.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunnerSampleView {
    /// The runner.
    pub runner_id: Uuid,
    /// Its attempt.
    pub attempt: u32,
    /// The agent's pid.
    pub pid: u32,
    /// CPU time of the agent and its descendants, in seconds.
    pub cpu_seconds: f64,
    /// Their resident memory, in bytes.
    pub rss_bytes: u64,
}

/// A node as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    /// Its id.
    pub id: String,
    /// `up`, `draining` or `lost`.
    pub state: NodeState,
    /// Its current incarnation.
    pub incarnation: Option<Uuid>,
    /// Runners it takes at once.
    pub capacity: Option<i32>,
    /// Runners starting, running, paused or stopping on it.
    pub running: i64,
    /// The project roots it serves.
    pub roots: Vec<String>,
    /// Its HTTP address.
    pub address: Option<String>,
    /// When its current incarnation registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// When it was declared lost, while it is.
    pub lost_at: Option<DateTime<Utc>>,
    /// When this gateway last heard its heartbeat (none since it started:
    /// heartbeats are kept in memory, not stored).
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub heartbeat_age_seconds: Option<f64>,
    /// Its runners' processes in that heartbeat, when it is of the current
    /// incarnation.
    pub runners: Vec<RunnerSampleView>,
}

/// A node's view from its facts and its latest heartbeat, at `now`.
pub fn node_view(
    facts: NodeFacts,
    heartbeat: Option<&SeenHeartbeat>,
    now: DateTime<Utc>,
) -> NodeView {
    let state = facts.state();
    // A heartbeat of another incarnation says nothing of this one's
    // processes: an old one's are gone, a new one's registration is on
    // its way.
    let runners = heartbeat
        .filter(|seen| Some(seen.heartbeat.incarnation) == facts.incarnation)
        .map(|seen| {
            seen.heartbeat
                .runners
                .iter()
                .map(|r| RunnerSampleView {
                    runner_id: r.runner_id,
                    attempt: r.attempt,
                    pid: r.pid,
                    cpu_seconds: r.cpu_seconds,
                    rss_bytes: r.rss_bytes,
                })
                .collect()
        })
        .unwrap_or_default();
    NodeView {
        id: facts.node,
        state,
        incarnation: facts.incarnation,
        capacity: facts.capacity,
        running: facts.running,
        roots: facts.roots,
        address: facts.address,
        registered_at: facts.registered_at,
        lost_at: (state == NodeState::Lost)
            .then_some(facts.lost_at)
            .flatten(),
        last_heartbeat_at: heartbeat.map(|seen| seen.received_at),
        heartbeat_age_seconds: heartbeat.map(|seen| seen.age_seconds(now)),
        runners,
    }
}

/// Where a node is.
pub fn node_resource(node: &str) -> String {
    format!("/api/v1/nodes/{node}")
}

/// Fold a received message if it is about nodes; false when it is not.
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<bool, StoreError> {
    let Ok(event) = NodeEvent::from_data(&message.type_name, message.data.clone()) else {
        return Ok(false);
    };
    match &event {
        NodeEvent::Registered(r) => {
            sqlx::query(
                "INSERT INTO nodes (node, incarnation, capacity, roots, address, registered_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (node) DO UPDATE
                 SET incarnation = excluded.incarnation, capacity = excluded.capacity,
                     roots = excluded.roots, address = excluded.address,
                     registered_at = excluded.registered_at
                 WHERE nodes.incarnation IS NULL OR nodes.incarnation <= excluded.incarnation",
            )
            .bind(&r.node)
            .bind(r.incarnation)
            .bind(i32::try_from(r.capacity).unwrap_or(i32::MAX))
            .bind(&r.roots)
            .bind(&r.address)
            .bind(message.time)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a node's registration"))?;
        }
        NodeEvent::Lost(l) => {
            sqlx::query(
                "INSERT INTO nodes (node, lost_incarnation, lost_at) VALUES ($1, $2, $3)
                 ON CONFLICT (node) DO UPDATE
                 SET lost_incarnation = excluded.lost_incarnation, lost_at = excluded.lost_at
                 WHERE nodes.lost_incarnation IS NULL
                    OR nodes.lost_incarnation <= excluded.lost_incarnation",
            )
            .bind(&l.node)
            .bind(l.incarnation)
            .bind(message.time)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a lost node"))?;
        }
        NodeEvent::DrainChanged(d) => {
            sqlx::query(
                "INSERT INTO nodes (node, draining) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET draining = excluded.draining",
            )
            .bind(&d.node)
            .bind(d.draining)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a node's drain"))?;
            command_outcome(
                conn,
                d.command_id,
                message,
                None,
                Some(node_resource(&d.node)),
            )
            .await?;
        }
        NodeEvent::DrainRefused(r) => {
            let rejection = (r.reason.as_str(), None, r.message.as_str());
            command_outcome(conn, r.command_id, message, Some(rejection), None).await?;
        }
    }
    Ok(true)
}

const SELECT_NODES: &str = "SELECT n.node, n.incarnation, n.capacity, n.roots, n.address,
        n.registered_at, n.draining, n.lost_incarnation, n.lost_at,
        (SELECT count(*) FROM runners r WHERE r.node = n.node AND r.state = ANY($1)) AS running
    FROM nodes n";

fn facts(r: &sqlx::postgres::PgRow) -> NodeFacts {
    NodeFacts {
        node: r.get(0),
        incarnation: r.get(1),
        capacity: r.get(2),
        roots: r.get(3),
        address: r.get(4),
        registered_at: r.get(5),
        draining: r.get(6),
        lost_incarnation: r.get(7),
        lost_at: r.get(8),
        running: r.get(9),
    }
}

/// One node.
pub async fn get_node(pool: &PgPool, node: &str) -> Result<Option<NodeFacts>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_NODES} WHERE n.node = $2"
    )))
    .bind(RUNNING_STATES)
    .bind(node)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a node"))?;
    Ok(row.as_ref().map(facts))
}

/// Nodes in id order after `after`, at most `limit`.
pub async fn list_nodes(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<NodeFacts>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_NODES} WHERE ($2::text IS NULL OR n.node > $2) ORDER BY n.node LIMIT $3"
    )))
    .bind(RUNNING_STATES)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing nodes"))?;
    Ok(rows.iter().map(facts).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use stratavore_events::process::{NodeHeartbeat, RunnerSample};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn registered(incarnation: Uuid) -> NodeFacts {
        NodeFacts {
            node: "n1".into(),
            incarnation: Some(incarnation),
            capacity: Some(4),
            roots: vec!["/srv".into()],
            address: Some("127.0.0.1:7490".into()),
            registered_at: Some(at(0)),
            draining: false,
            lost_incarnation: None,
            lost_at: None,
            running: 2,
        }
    }

    fn heartbeat(incarnation: Uuid, received: i64) -> SeenHeartbeat {
        SeenHeartbeat {
            heartbeat: NodeHeartbeat {
                node: "n1".into(),
                incarnation,
                seq: 3,
                interval_ms: 2000,
                capacity: 4,
                draining: false,
                runners: vec![RunnerSample {
                    runner_id: Uuid::nil(),
                    attempt: 1,
                    pid: 42,
                    cpu_seconds: 0.5,
                    rss_bytes: 1024,
                }],
            },
            received_at: at(received),
        }
    }

    #[test]
    fn a_node_is_up_draining_or_lost_by_its_facts() {
        let first = Uuid::now_v7();
        let mut node = registered(first);
        assert_eq!(node.state(), NodeState::Up);
        node.draining = true;
        assert_eq!(node.state(), NodeState::Draining);
        node.lost_incarnation = Some(first);
        assert_eq!(node.state(), NodeState::Lost, "lost wins over draining");
        node.incarnation = Some(Uuid::now_v7());
        assert_eq!(
            node.state(),
            NodeState::Draining,
            "registered again since the loss; still drained"
        );
        node.draining = false;
        assert_eq!(node.state(), NodeState::Up);
    }

    #[test]
    fn a_loss_that_arrives_before_the_registration_of_its_incarnation_counts() {
        let earlier = Uuid::now_v7();
        let lost = Uuid::now_v7();
        let mut node = registered(earlier);
        node.lost_incarnation = Some(lost);
        assert_eq!(node.state(), NodeState::Lost);
        node.incarnation = None;
        assert_eq!(node.state(), NodeState::Lost);
    }

    #[test]
    fn the_view_shows_the_heartbeats_samples_only_for_the_current_incarnation() {
        let current = Uuid::now_v7();
        let view = node_view(registered(current), Some(&heartbeat(current, 10)), at(13));
        assert_eq!(view.state, NodeState::Up);
        assert_eq!(view.last_heartbeat_at, Some(at(10)));
        assert_eq!(view.heartbeat_age_seconds, Some(3.0));
        assert_eq!(view.runners.len(), 1);
        assert_eq!((view.runners[0].pid, view.runners[0].rss_bytes), (42, 1024));
        assert_eq!(view.running, 2);

        let other = Uuid::now_v7();
        let view = node_view(registered(current), Some(&heartbeat(other, 10)), at(13));
        assert_eq!(view.last_heartbeat_at, Some(at(10)), "the node is heard");
        assert!(view.runners.is_empty(), "but not this incarnation");

        let unheard = node_view(registered(current), None, at(13));
        assert_eq!(
            (unheard.last_heartbeat_at, unheard.heartbeat_age_seconds),
            (None, None)
        );
    }

    #[test]
    fn the_view_names_when_a_node_was_lost_only_while_it_is() {
        let first = Uuid::now_v7();
        let mut node = registered(first);
        node.lost_incarnation = Some(first);
        node.lost_at = Some(at(30));
        assert_eq!(node_view(node.clone(), None, at(40)).lost_at, Some(at(30)));
        node.incarnation = Some(Uuid::now_v7());
        assert_eq!(node_view(node, None, at(40)).lost_at, None);
    }

    #[test]
    fn a_view_serialises_with_the_api_field_names() {
        let current = Uuid::now_v7();
        let view = node_view(registered(current), Some(&heartbeat(current, 0)), at(1));
        let json = serde_json::to_value(view).unwrap();
        assert_eq!(json["id"], "n1");
        assert_eq!(json["state"], "up");
        assert_eq!(json["capacity"], 4);
        assert_eq!(json["runners"][0]["cpu_seconds"], 0.5);
        for key in [
            "incarnation",
            "running",
            "roots",
            "address",
            "registered_at",
            "lost_at",
            "last_heartbeat_at",
            "heartbeat_age_seconds",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
