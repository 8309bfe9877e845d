//! The relay SIGKILLed in the middle of batches, again and again: nothing
//! is missing afterwards, and the only extras are repeats of the batches
//! that were in flight at each kill (at most `BATCHES_IN_FLIGHT`).

use crate::support::*;
use outbox_relay::source_relay::BATCHES_IN_FLIGHT;
use rand::Rng;
use std::collections::HashSet;
use std::time::Duration;
use stratavore_provision::loopback::free_loopback_port;
use stratavore_testkit::{ServiceProcess, TestEnv};
use uuid::Uuid;

const BATCH: usize = 50;
const KILLS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_relay_killed_mid_batch_again_and_again_loses_nothing_and_repeats_only_its_batches_in_flight()
 {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_outbox-relay"));
    let mut vars = relay_env(&env, free_loopback_port().unwrap());
    vars.push(("STRATAVORE__RELAY__BATCH_SIZE".into(), BATCH.to_string()));
    let mut relay = ServiceProcess::start(bin, &format!("{}-relay", env.broker.prefix()), vars)
        .await
        .unwrap();

    let writer = spawn_writer(&pool, "r", 60, 40, Duration::from_millis(25));
    let mut received: Vec<Uuid> = Vec::new();
    for _ in 0..KILLS {
        let wait = Duration::from_millis(rand::rng().random_range(150..500));
        // Keep consuming while the relay runs, so the kill lands mid-stream.
        if let Some(d) = subscriber.next(wait).await.unwrap() {
            received.push(message_id(&d));
        }
        while let Some(d) = subscriber.next(Duration::from_millis(1)).await.unwrap() {
            received.push(message_id(&d));
        }
        relay.kill9().await.unwrap();
        relay.restart().await.unwrap();
    }
    let committed = writer.await.unwrap();
    let expected: HashSet<Uuid> = committed.iter().copied().collect();
    let rest = subscriber
        .collect_until(Duration::from_secs(120), |got| {
            let mut seen: HashSet<Uuid> = received.iter().copied().collect();
            seen.extend(got.iter().map(message_id));
            expected.is_subset(&seen)
        })
        .await
        .unwrap();
    received.extend(rest.iter().map(message_id));
    while let Some(d) = subscriber.next(Duration::from_millis(500)).await.unwrap() {
        received.push(message_id(&d));
    }

    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    let repeats = assert_published_in_order(&received, &in_order);
    assert!(
        repeats <= KILLS * BATCH * BATCHES_IN_FLIGHT,
        "{repeats} repeats after {KILLS} kills with batches of {BATCH}, \
         {BATCHES_IN_FLIGHT} in flight at most"
    );
    eprintln!("{} rows, {KILLS} kills, {repeats} repeats", in_order.len());

    relay.terminate().await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// SIGTERM lets the relay finish the batch in flight and advance its
/// cursor before it exits, so a relay restarted this way repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_relay_stopped_with_sigterm_finishes_its_batch_exits_cleanly_and_repeats_nothing()
{
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_outbox-relay"));
    let mut vars = relay_env(&env, free_loopback_port().unwrap());
    vars.push(("STRATAVORE__RELAY__BATCH_SIZE".into(), BATCH.to_string()));
    let mut relay = ServiceProcess::start(bin, &format!("{}-relay", env.broker.prefix()), vars)
        .await
        .unwrap();

    let writer = spawn_writer(&pool, "g", 40, 40, Duration::from_millis(25));
    let mut received: Vec<Uuid> = Vec::new();
    for _ in 0..3 {
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            if let Some(d) = subscriber.next(Duration::from_millis(20)).await.unwrap() {
                received.push(message_id(&d));
            }
        }
        let code = relay.terminate().await.unwrap();
        assert_eq!(code, Some(0), "a relay stopped by SIGTERM exits cleanly");
        relay.restart().await.unwrap();
    }
    let committed = writer.await.unwrap();
    let expected: HashSet<Uuid> = committed.iter().copied().collect();
    let rest = subscriber
        .collect_until(Duration::from_secs(120), |got| {
            let mut seen: HashSet<Uuid> = received.iter().copied().collect();
            seen.extend(got.iter().map(message_id));
            expected.is_subset(&seen)
        })
        .await
        .unwrap();
    received.extend(rest.iter().map(message_id));
    while let Some(d) = subscriber.next(Duration::from_millis(500)).await.unwrap() {
        received.push(message_id(&d));
    }
    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    let repeats = assert_published_in_order(&received, &in_order);
    assert_eq!(repeats, 0, "a graceful stop republishes nothing");

    relay.terminate().await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}
