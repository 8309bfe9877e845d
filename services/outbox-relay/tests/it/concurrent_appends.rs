//! Many writers on one log while the relay runs: every committed row is
//! published in position order, and nothing rolled back ever is.

use crate::support::*;
use rand::Rng;
use std::collections::HashSet;
use std::time::Duration;
use stratavore_testkit::TestEnv;
use uuid::Uuid;

/// How a writer's transaction behaves.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Append and commit.
    Plain,
    /// Append, then roll back: must never be published.
    RolledBack,
    /// Write an inbox row first (taking a transaction id early), then
    /// append after others that started later.
    InboxFirst,
    /// Wait a second before appending (a slow decision).
    Slow,
}

async fn writer(
    pool: sqlx::PgPool,
    writer: usize,
    transactions: usize,
) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let mut committed = Vec::new();
    let mut rolled_back = Vec::new();
    for t in 0..transactions {
        let shape = {
            let mut rng = rand::rng();
            match rng.random_range(0..100) {
                0..=69 => Shape::Plain,
                70..=84 => Shape::RolledBack,
                85..=98 => Shape::InboxFirst,
                _ => Shape::Slow,
            }
        };
        let size = rand::rng().random_range(1..=4);
        let stream = format!("w{writer}-t{t}");
        let entries: Vec<_> = (1..=size).map(|v| project_created(&stream, v)).collect();
        let ids: Vec<Uuid> = entries.iter().map(|e| e.envelope.id).collect();
        let mut tx = pool.begin().await?;
        match shape {
            Shape::InboxFirst => {
                sqlx::query(
                    "INSERT INTO gateway.inbox (message_id, source_log, stream, stream_version, type, message)
                     VALUES ($1, 'orchestrator', $2, 1, 'io.stratavore.project.created.v1', '{}')",
                )
                .bind(Uuid::now_v7())
                .bind(&stream)
                .execute(&mut *tx)
                .await?;
                let pause = Duration::from_millis(rand::rng().random_range(1..20));
                tokio::time::sleep(pause).await;
            }
            Shape::Slow => tokio::time::sleep(Duration::from_secs(1)).await,
            Shape::Plain | Shape::RolledBack => {}
        }
        log().append(&mut tx, &entries).await?;
        if matches!(shape, Shape::RolledBack) {
            tx.rollback().await?;
            rolled_back.extend(ids);
        } else {
            tx.commit().await?;
            committed.extend(ids);
        }
    }
    Ok((committed, rolled_back))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_committed_append_is_published_in_position_order_and_no_rolled_back_one_is() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let relay = start_relay(relay_config(&env)).await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();

    const WRITERS: usize = 12;
    const TRANSACTIONS: usize = 120;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(pool.clone(), w, TRANSACTIONS)))
        .collect();
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for h in handles {
        let (c, r) = h.await.unwrap().unwrap();
        committed.extend(c);
        rolled_back.extend(r);
    }
    assert!(
        !rolled_back.is_empty() && committed.len() > 1000,
        "{} committed",
        committed.len()
    );

    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    assert_eq!(
        in_order.len(),
        committed.len(),
        "the log holds exactly the committed rows"
    );
    assert!(in_order.iter().all(|id| committed.contains(id)));

    let expected = in_order.len();
    let deliveries = subscriber
        .collect_until(Duration::from_secs(120), |got| {
            got.iter().map(message_id).collect::<HashSet<_>>().len() >= expected
        })
        .await
        .unwrap();
    // Anything late would show up now.
    let extra = subscriber.next(Duration::from_millis(500)).await.unwrap();
    let mut received: Vec<Uuid> = deliveries.iter().map(message_id).collect();
    received.extend(extra.iter().map(message_id));
    assert!(
        received.iter().all(|id| !rolled_back.contains(id)),
        "a rolled-back row was published"
    );
    let repeats = assert_published_in_order(&received, &in_order);
    assert_eq!(
        repeats, 0,
        "a relay that never crashed publishes each row once"
    );

    stop_relay(relay).await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// The interleaving that defeats "publish below pg_snapshot_xmin, cursor on
/// position" (DESIGN.md section 3): transaction A takes its transaction id
/// first (an inbox insert), B draws a position and is still open, and A
/// appends after. Under the append lock A waits for B's commit and so draws
/// the higher position; both are published, B's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_transaction_that_appends_late_is_still_published_after_the_one_it_waited_for() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let relay = start_relay(relay_config(&env)).await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();

    let mut a = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO gateway.inbox (message_id, source_log, stream, stream_version, type, message)
         VALUES ($1, 'orchestrator', 'x', 1, 'io.stratavore.project.created.v1', '{}')",
    )
    .bind(Uuid::now_v7())
    .execute(&mut *a)
    .await
    .unwrap();
    let xid_a: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *a)
        .await
        .unwrap();

    let mut b = pool.begin().await.unwrap();
    let xid_b: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *b)
        .await
        .unwrap();
    let entry_b = project_created("stream-b", 1);
    let position_b = log()
        .append(&mut b, std::slice::from_ref(&entry_b))
        .await
        .unwrap()[0];

    let entry_a = project_created("stream-a", 1);
    let id_a = entry_a.envelope.id;
    let a_appends = tokio::spawn(async move {
        let position = log().append(&mut a, &[entry_a]).await.unwrap()[0];
        a.commit().await.unwrap();
        position
    });
    // A must be waiting on B's append lock, not drawing a position now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a_appends.is_finished(),
        "A drew a position while B held the log's lock"
    );

    b.commit().await.unwrap();
    let position_a = a_appends.await.unwrap();
    assert!(xid_a < xid_b, "A took its transaction id first");
    assert!(position_a > position_b, "A's position follows B's commit");

    let got = subscriber
        .collect_until(Duration::from_secs(30), |got| got.len() >= 2)
        .await
        .unwrap();
    let ids: Vec<Uuid> = got.iter().map(message_id).collect();
    assert_eq!(ids, vec![entry_b.envelope.id, id_a]);

    stop_relay(relay).await.unwrap();
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// A backlog larger than many batches drains in order; the rate it drains
/// at is printed (the figure `make bench` will measure properly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_backlog_of_twenty_thousand_rows_is_published_in_position_order() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env.broker.subscribe_events("#").await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    const ROWS: usize = 20_000;
    for chunk in 0..ROWS / 500 {
        let entries: Vec<_> = (0..500)
            .map(|i| project_created(&format!("b{chunk}-{i}"), 1))
            .collect();
        append_committed(&pool, &entries).await.unwrap();
    }
    let started = std::time::Instant::now();
    let relay = start_relay(relay_config(&env)).await.unwrap();
    let admin = env.db.admin_pool().await.unwrap();
    stratavore_testkit::wait_until(
        "the relay's cursor to pass the backlog",
        Duration::from_secs(300),
        || async {
            let cursor: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM relay.cursors WHERE source_schema = 'gateway'",
            )
            .fetch_optional(&admin)
            .await?;
            Ok((cursor.unwrap_or(0) >= ROWS as i64).then_some(()))
        },
    )
    .await
    .unwrap();
    let confirmed = started.elapsed();
    admin.close().await;
    let got = subscriber
        .collect_until(Duration::from_secs(300), |got| got.len() >= ROWS)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let received: Vec<Uuid> = got.iter().map(message_id).collect();
    let mut conn = pool.acquire().await.unwrap();
    let in_order = ids_in_position_order(&mut conn).await.unwrap();
    assert_eq!(assert_published_in_order(&received, &in_order), 0);
    eprintln!(
        "{ROWS} rows confirmed by the broker in {confirmed:?} ({:.0} rows/s), received by a subscriber in \
         {elapsed:?} ({:.0} rows/s)",
        ROWS as f64 / confirmed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64()
    );
    stop_relay(relay).await.unwrap();
    drop(conn);
    pool.close().await;
    env.cleanup().await.unwrap();
}
