//! Consumers killed at the worst moments, as real processes.

use crate::support::*;
use std::collections::HashMap;
use std::time::Duration;
use stratavore_provision::loopback::free_loopback_port;
use stratavore_testkit::process::workspace_binary;
use stratavore_testkit::{ServiceProcess, TestEnv, wait_until};

fn gateway_env(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = env.service_env();
    vars.retain(|(k, _)| k != "STRATAVORE__HTTP__LISTEN");
    vars.push((
        "STRATAVORE__HTTP__LISTEN".into(),
        format!("127.0.0.1:{}", free_loopback_port().unwrap()),
    ));
    vars.push(("STRATAVORE__RETRY_BACKOFF_MS".into(), "100".into()));
    vars.push((
        "STRATAVORE__SEARCH__MODEL_DIR".into(),
        stratavore_testkit::embedding_model_dir()
            .display()
            .to_string(),
    ));
    vars.push((
        "STRATAVORE__CONSUMER__SWEEP_INTERVAL_MS".into(),
        "200".into(),
    ));
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    vars
}

async fn applied(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gateway.inbox WHERE status = 'applied'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn descriptions(pool: &sqlx::PgPool) -> HashMap<String, String> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, description FROM gateway.projects")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(n, d)| (n, d.unwrap_or_default()))
        .collect()
}

/// The active consumer is SIGKILLed with a batch in flight; the standby
/// takes over (and in RabbitMQ 3.10 gets newer messages before the returned
/// ones). Every event is applied once, in order per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_the_active_consumer_killed_mid_batch_hands_over_and_every_event_is_applied_once_in_order()
 {
    let env = TestEnv::new().await.unwrap();
    let bin = workspace_binary("api-gateway").unwrap();
    let prefix = env.broker.prefix().to_owned();
    let pool = env.db.admin_pool().await.unwrap();
    let mut active =
        ServiceProcess::start(&bin, &format!("{prefix}-gateway-a"), gateway_env(&env, &[]))
            .await
            .unwrap();
    // Start the standby only once the first consumes, so the first is the
    // single active consumer.
    let fake = FakeOrchestrator::connect(&env.broker).await;
    fake.publish(&[FakeOrchestrator::event("warm", 1, "up")])
        .await;
    wait_until(
        "the first gateway consuming",
        Duration::from_secs(30),
        || async { Ok((applied(&pool).await == 1).then_some(())) },
    )
    .await
    .unwrap();
    let _standby =
        ServiceProcess::start(&bin, &format!("{prefix}-gateway-b"), gateway_env(&env, &[]))
            .await
            .unwrap();

    const STREAMS: u64 = 20;
    const VERSIONS: u64 = 25;
    let publisher = tokio::spawn(async move {
        for version in 1..=VERSIONS {
            let round: Vec<_> = (0..STREAMS)
                .map(|s| FakeOrchestrator::event(&format!("s{s}"), version, &format!("v{version}")))
                .collect();
            fake.publish(&round).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    active.kill9().await.unwrap();
    let applied_by_the_first = applied(&pool).await;
    publisher.await.unwrap();

    let total = (1 + STREAMS * VERSIONS) as i64;
    assert!(
        applied_by_the_first < total,
        "the kill landed mid-stream ({applied_by_the_first} of {total} applied before it)"
    );
    wait_until("every event applied", Duration::from_secs(90), || async {
        Ok((applied(&pool).await == total).then_some(()))
    })
    .await
    .unwrap();
    let statuses = inbox_statuses(&pool, "gateway").await;
    assert_eq!(statuses.get("applied"), Some(&total), "{statuses:?}");
    assert_eq!(statuses.len(), 1, "nothing dead or waiting: {statuses:?}");
    assert_applied_in_order(&pool, "gateway").await;
    let final_state = descriptions(&pool).await;
    for s in 0..STREAMS {
        assert_eq!(final_state[&format!("s{s}")], format!("v{VERSIONS}"));
    }
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// A consumer that dies after committing a batch to its inbox and before
/// acking it: the broker redelivers the batch, the inbox absorbs it,
/// nothing is applied twice and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_consumer_killed_between_commit_and_ack_absorbs_the_redelivery() {
    let env = TestEnv::new().await.unwrap();
    let bin = workspace_binary("api-gateway").unwrap();
    let prefix = env.broker.prefix().to_owned();
    let pool = env.db.admin_pool().await.unwrap();
    let fake = FakeOrchestrator::connect(&env.broker).await;
    let events: Vec<_> = (1..=10)
        .flat_map(|v| {
            (0..5).map(move |s| FakeOrchestrator::event(&format!("k{s}"), v, &format!("v{v}")))
        })
        .collect();
    fake.publish(&events).await;

    let mut doomed = ServiceProcess::start(
        &bin,
        &format!("{prefix}-gateway-doomed"),
        gateway_env(
            &env,
            &[("STRATAVORE_FAILPOINTS", "consumer_after_inbox_commit")],
        ),
    )
    .await
    .unwrap();
    let committed: i64 = wait_until(
        "a batch committed before the crash",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.inbox")
                .fetch_one(&pool)
                .await?;
            Ok((n > 0).then_some(n))
        },
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !doomed.has_exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the failpoint did not end the process"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(committed > 0);

    let _healthy = ServiceProcess::start(
        &bin,
        &format!("{prefix}-gateway-healthy"),
        gateway_env(&env, &[]),
    )
    .await
    .unwrap();
    wait_until("every event applied", Duration::from_secs(60), || async {
        Ok((applied(&pool).await == events.len() as i64).then_some(()))
    })
    .await
    .unwrap();
    let statuses = inbox_statuses(&pool, "gateway").await;
    assert_eq!(
        statuses.get("applied"),
        Some(&(events.len() as i64)),
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_applied_in_order(&pool, "gateway").await;
    for (name, description) in descriptions(&pool).await {
        assert_eq!(description, "v10", "{name}");
    }
    pool.close().await;
    env.cleanup().await.unwrap();
}
