//! The relay sends batches while earlier ones wait for their confirms
//! (`BATCHES_IN_FLIGHT`). Its link to the broker is slowed, so that batches
//! are out unconfirmed, then cut mid-stream: every batch not yet confirmed
//! is sent again from the cursor once the link is back (what the broker had
//! taken before the cut arrives twice), nothing is lost, and the first
//! receipt of every row still follows position order.

use crate::support::*;
use std::collections::HashSet;
use std::time::Duration;
use stratavore_testkit::{CutMode, TcpProxy, TestEnv};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_when_the_broker_link_is_cut_are_all_sent_again_in_order() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let (proxy, through_proxy) = TcpProxy::for_url(env.broker.url()).await.unwrap();
    // Each confirm takes at least two delays, while the writer commits a
    // batch every 10 ms: batches go out before the last is confirmed.
    proxy.set_delay(Duration::from_millis(25));
    let mut config = relay_config(&env);
    config.broker.url = through_proxy;
    config.relay.batch_size = 20;
    config.relay.retry_backoff_ms = 100;
    let relay = start_relay(config).await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();

    let writer = spawn_writer(&pool, "c", 60, 10, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(250)).await;
    proxy.cut(CutMode::Reset);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.heal();

    let committed = writer.await.unwrap();
    let expected: HashSet<Uuid> = committed.iter().copied().collect();
    let mut received: Vec<Uuid> = subscriber
        .collect_until(Duration::from_secs(60), |got| {
            let seen: HashSet<Uuid> = got.iter().map(message_id).collect();
            expected.is_subset(&seen)
        })
        .await
        .unwrap()
        .iter()
        .map(message_id)
        .collect();
    while let Some(d) = subscriber.next(Duration::from_millis(300)).await.unwrap() {
        received.push(message_id(&d));
    }
    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    let repeats = assert_published_in_order(&received, &in_order);
    eprintln!(
        "{} rows, {repeats} sent again after the cut",
        in_order.len()
    );

    stop_relay(relay).await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}
