//! Two relays for one schema: exactly one publishes; killing it hands the
//! lease to the other within a few seconds, with no loss.

use crate::support::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stratavore_provision::loopback::free_loopback_port;
use stratavore_testkit::{ServiceProcess, TestEnv, wait_until};
use uuid::Uuid;

/// Read one metric's value for the gateway source from a relay's /metrics.
pub async fn gateway_metric(port: u16, name: &str) -> anyhow::Result<Option<f64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name) && l.contains("source=\"gateway\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok()))
}

async fn lease_holders(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 2 AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_of_two_relays_exactly_one_publishes_and_the_other_takes_over_when_it_is_killed() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let admin = env.db.admin_pool().await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_outbox-relay"));
    let (port_a, port_b) = (free_loopback_port().unwrap(), free_loopback_port().unwrap());

    let mut a = ServiceProcess::start(
        bin,
        &format!("{}-relay-a", env.broker.prefix()),
        relay_env(&env, port_a),
    )
    .await
    .unwrap();
    wait_until(
        "relay A to hold the lease",
        Duration::from_secs(30),
        || async {
            Ok((gateway_metric(port_a, "stratavore_relay_lease_held")
                .await
                .ok()
                .flatten()
                == Some(1.0))
            .then_some(()))
        },
    )
    .await
    .unwrap();
    let _b = ServiceProcess::start(
        bin,
        &format!("{}-relay-b", env.broker.prefix()),
        relay_env(&env, port_b),
    )
    .await
    .unwrap();
    wait_until("relay B to stand by", Duration::from_secs(30), || async {
        Ok((gateway_metric(port_b, "stratavore_relay_lease_held")
            .await
            .ok()
            .flatten()
            == Some(0.0))
        .then_some(()))
    })
    .await
    .unwrap();

    let mut committed: Vec<Uuid> = Vec::new();
    for i in 0..200 {
        committed.extend(
            append_committed(&pool, &[project_created(&format!("first-{i}"), 1)])
                .await
                .unwrap(),
        );
    }
    let got = subscriber
        .collect_until(Duration::from_secs(60), |g| g.len() >= 200)
        .await
        .unwrap();
    assert_eq!(
        lease_holders(&admin).await.unwrap(),
        1,
        "exactly one lease is held"
    );
    assert_eq!(
        gateway_metric(port_a, "stratavore_relay_published_total")
            .await
            .unwrap(),
        Some(200.0)
    );
    assert_eq!(
        gateway_metric(port_b, "stratavore_relay_published_total")
            .await
            .unwrap()
            .unwrap_or(0.0),
        0.0,
        "the standby published nothing"
    );

    a.kill9().await.unwrap();
    let killed_at = Instant::now();
    for i in 0..200 {
        committed.extend(
            append_committed(&pool, &[project_created(&format!("second-{i}"), 1)])
                .await
                .unwrap(),
        );
    }
    wait_until(
        "relay B to take the lease",
        Duration::from_secs(10),
        || async {
            Ok((gateway_metric(port_b, "stratavore_relay_lease_held")
                .await
                .ok()
                .flatten()
                == Some(1.0))
            .then_some(()))
        },
    )
    .await
    .unwrap();
    let handover = killed_at.elapsed();
    assert!(
        handover < Duration::from_secs(5),
        "hand-over took {handover:?}"
    );

    let mut all: Vec<Uuid> = got.iter().map(message_id).collect();
    let rest = subscriber
        .collect_until(Duration::from_secs(60), |g| {
            g.iter().map(message_id).collect::<HashSet<_>>().len() >= 200
        })
        .await
        .unwrap();
    all.extend(rest.iter().map(message_id));
    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    assert_eq!(in_order, committed);
    assert_published_in_order(&all, &in_order);
    eprintln!("hand-over after SIGKILL: {handover:?}");

    drop(conn);
    pool.close().await;
    admin.close().await;
    env.cleanup().await.unwrap();
}
