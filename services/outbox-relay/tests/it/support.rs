//! Helpers shared by the relay tests: events to append, a relay to run.

use chrono::Utc;
use outbox_relay::config::RelayConfig;
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;
use std::time::Duration;
use stratavore_events::project::{ProjectCreated, ProjectEvent};
use stratavore_events::{Envelope, Message, MessageKind};
use stratavore_runtime::Shutdown;
use stratavore_store::{Log, NewEntry};
use stratavore_testkit::TestEnv;
use uuid::Uuid;

/// The gateway's log: the source every relay test writes to.
pub const SOURCE: &str = "gateway";
pub const SERVICE: &str = "api-gateway";

pub fn log() -> Log {
    Log::new(SOURCE, Duration::from_secs(30)).unwrap()
}

/// A `project.created` event on its own stream, version `version`.
pub fn project_created(stream: &str, version: u64) -> NewEntry {
    let event = ProjectEvent::Created(ProjectCreated {
        command_id: Uuid::now_v7(),
        name: stream.to_owned(),
        path: format!("/srv/{stream}"),
        description: None,
        tags: vec![],
        max_concurrent_runners: 5,
    });
    NewEntry {
        envelope: Envelope {
            id: Uuid::now_v7(),
            source: "/stratavore/api-gateway".into(),
            type_name: event.type_name().into(),
            subject: stream.to_owned(),
            time: Utc::now(),
            data: event.to_data(),
            stream: stream.to_owned(),
            sequence: version,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            idempotency_key: None,
        },
        kind: MessageKind::Event,
        routing_key: event.routing_key(),
    }
}

/// Append in a transaction of its own and commit; returns the ids.
pub async fn append_committed(pool: &PgPool, entries: &[NewEntry]) -> anyhow::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    log().append(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(entries.iter().map(|e| e.envelope.id).collect())
}

/// A writer in the background: `rounds` appends of `per_round` new streams
/// named `<tag><round>-<i>`, each committed, `pause` apart; it ends with the
/// ids it committed, in order.
pub fn spawn_writer(
    pool: &PgPool,
    tag: &'static str,
    rounds: usize,
    per_round: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<Uuid>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for round in 0..rounds {
            let entries: Vec<_> = (0..per_round)
                .map(|i| project_created(&format!("{tag}{round}-{i}"), 1))
                .collect();
            ids.extend(append_committed(&pool, &entries).await.unwrap());
            tokio::time::sleep(pause).await;
        }
        ids
    })
}

/// The committed rows' ids in position order, read back from the log.
pub async fn ids_in_position_order(conn: &mut PgConnection) -> anyhow::Result<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT message_id FROM gateway.log ORDER BY position")
            .fetch_all(conn)
            .await?,
    )
}

/// The relay config for this test's database and prefix, relaying only the
/// gateway's log, with a short lease retry so hand-overs are quick.
pub fn relay_config(env: &TestEnv) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.database.url = Some(env.db.url());
    config.broker.url = env.broker.url().to_owned();
    config.broker.prefix = env.broker.prefix().to_owned();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.relay.sources = vec![SOURCE.into()];
    config.relay.lease_retry_ms = 200;
    config.relay.measure_interval_ms = 200;
    config
}

/// The same settings as environment variables, for a relay process.
pub fn relay_env(env: &TestEnv, health_port: u16) -> Vec<(String, String)> {
    let mut vars = env.service_env();
    vars.retain(|(k, _)| k != "STRATAVORE__HTTP__LISTEN");
    vars.push((
        "STRATAVORE__HTTP__LISTEN".into(),
        format!("127.0.0.1:{health_port}"),
    ));
    vars.push(("STRATAVORE__RELAY__SOURCES".into(), SOURCE.into()));
    vars.push(("STRATAVORE__RELAY__LEASE_RETRY_MS".into(), "200".into()));
    vars.push((
        "STRATAVORE__RELAY__MEASURE_INTERVAL_MS".into(),
        "200".into(),
    ));
    vars
}

/// Start a relay in this process; returns its shutdown handle.
pub async fn start_relay(config: RelayConfig) -> anyhow::Result<Shutdown> {
    let shutdown = Shutdown::new();
    outbox_relay::start(config, shutdown.clone()).await?;
    Ok(shutdown)
}

/// Stop an in-process relay and wait for its tasks.
pub async fn stop_relay(shutdown: Shutdown) -> anyhow::Result<()> {
    shutdown.trigger();
    shutdown.wait_for_tasks(Duration::from_secs(20)).await?;
    Ok(())
}

/// The message id of a delivery, read the way an outside subscriber would:
/// from the AMQP `message_id` property.
pub fn message_id(delivery: &lapin::message::Delivery) -> Uuid {
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .expect("every relayed message has an id");
    Uuid::parse_str(id.as_str()).expect("message ids are UUIDs")
}

/// Check the received ids against the committed ones: the first receipt of
/// each id must follow position order exactly, nothing foreign may appear,
/// and repeats are counted (returned).
pub fn assert_published_in_order(received: &[Uuid], committed_in_order: &[Uuid]) -> usize {
    let mut seen = HashSet::new();
    let mut first_receipts = Vec::new();
    let mut repeats = 0;
    for id in received {
        if seen.insert(*id) {
            first_receipts.push(*id);
        } else {
            repeats += 1;
        }
    }
    let committed: HashSet<_> = committed_in_order.iter().copied().collect();
    let foreign: Vec<_> = first_receipts
        .iter()
        .filter(|id| !committed.contains(id))
        .collect();
    assert!(
        foreign.is_empty(),
        "{} published ids were never committed",
        foreign.len()
    );
    assert_eq!(
        first_receipts.len(),
        committed_in_order.len(),
        "every committed row is published"
    );
    assert!(
        first_receipts == committed_in_order,
        "rows were published out of position order"
    );
    repeats
}
