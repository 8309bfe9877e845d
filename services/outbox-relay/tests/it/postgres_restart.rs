//! Postgres restarted under load, on an instance of the test's own: every
//! append that reported success is published afterwards.

use crate::support::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use stratavore_testkit::{TestBroker, TestDatabase, TestEnv, private_postgres};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_every_append_that_reported_success_before_or_after_a_postgres_restart_is_published()
{
    let private = Arc::new(private_postgres().await.unwrap());
    let db = TestDatabase::create_on(&private.cluster().url("postgres"))
        .await
        .unwrap();
    let broker = TestBroker::create().await.unwrap();
    let env = TestEnv { db, broker };
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let mut config = relay_config(&env);
    config.relay.retry_backoff_ms = 100;
    let relay = start_relay(config).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(
            stratavore_store::service_connect_options(
                &env.db.url(),
                "stratavore_gateway",
                "gateway",
                None,
            )
            .unwrap(),
        )
        .await
        .unwrap();

    let writer_pool = pool.clone();
    let writer = tokio::spawn(async move {
        let mut succeeded = Vec::new();
        let mut unknown = Vec::new();
        let mut failures = 0;
        for i in 0..3000 {
            let entry = project_created(&format!("s-{i}"), 1);
            let id = entry.envelope.id;
            let attempt = async {
                let mut tx = writer_pool.begin().await?;
                log().append(&mut tx, &[entry]).await?;
                anyhow::Ok(tx)
            }
            .await;
            match attempt {
                Ok(tx) => match tx.commit().await {
                    Ok(()) => succeeded.push(id),
                    // The commit may or may not have landed.
                    Err(_) => unknown.push(id),
                },
                Err(_) => failures += 1,
            }
            if failures + unknown.len() > 0 {
                // Give the server a moment to come back rather than spin.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        (succeeded, unknown, failures)
    });
    // A clean restart, then a crash (SIGKILL) and start: both under load.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cluster = private.clone();
    tokio::task::spawn_blocking(move || cluster.cluster().restart())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cluster = private.clone();
    tokio::task::spawn_blocking(move || {
        cluster.cluster().kill9()?;
        cluster.cluster().start()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        !writer.is_finished(),
        "the writer finished before the restarts; give it more work"
    );
    let (succeeded, unknown, failures) = writer.await.unwrap();
    assert!(
        succeeded.len() > 300,
        "only {} appends succeeded",
        succeeded.len()
    );

    let wanted: HashSet<Uuid> = succeeded.iter().copied().collect();
    let got = subscriber
        .collect_until(Duration::from_secs(120), |got| {
            let seen: HashSet<Uuid> = got.iter().map(message_id).collect();
            wanted.is_subset(&seen)
        })
        .await
        .unwrap();
    let received: Vec<Uuid> = got.iter().map(message_id).collect();
    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    let allowed: HashSet<Uuid> = succeeded.iter().chain(&unknown).copied().collect();
    assert!(in_order.iter().all(|id| allowed.contains(id)));
    assert_published_in_order(&received, &in_order);
    eprintln!(
        "{} succeeded, {} unknown, {failures} failed across the restart",
        succeeded.len(),
        unknown.len()
    );

    stop_relay(relay).await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}
