//! What an append refuses, and that a refused append leaves nothing: the
//! errors are raised inside `log_append` (one round trip for the lock and
//! the rows) and must still reach the writer as the right `AppendError`.

use crate::support::*;
use std::time::{Duration, Instant};
use stratavore_store::{AppendError, Log};
use stratavore_testkit::TestEnv;

async fn rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gateway.log")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_version_a_repeated_id_and_a_held_lock_are_refused_by_name_and_append_nothing() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let first = project_created("taken", 1);
    append_committed(&pool, std::slice::from_ref(&first))
        .await
        .unwrap();

    // Version 1 of the stream again, behind a new entry of another stream:
    // the whole batch is refused.
    let mut tx = pool.begin().await.unwrap();
    let err = log()
        .append(
            &mut tx,
            &[project_created("fresh", 1), project_created("taken", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppendError::VersionConflict { version: 1, .. }),
        "{err:?}"
    );
    tx.rollback().await.unwrap();

    // The same message id as a new version.
    let mut again = project_created("taken", 2);
    again.envelope.id = first.envelope.id;
    let mut tx = pool.begin().await.unwrap();
    let err = log().append(&mut tx, &[again]).await.unwrap_err();
    assert!(
        matches!(&err, AppendError::DuplicateMessage(id) if *id == first.envelope.id),
        "{err:?}"
    );
    tx.rollback().await.unwrap();

    // Another writer holds the lock: the wait is bounded, and the session's
    // own lock_timeout is what it was.
    let mut holder = pool.begin().await.unwrap();
    log()
        .append(&mut holder, &[project_created("holder", 1)])
        .await
        .unwrap();
    let short = Log::new(SOURCE, Duration::from_millis(200)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let started = Instant::now();
    let err = short
        .append(&mut tx, &[project_created("waiter", 1)])
        .await
        .unwrap_err();
    assert!(matches!(&err, AppendError::LockTimeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.rollback().await.unwrap();
    holder.rollback().await.unwrap();

    assert_eq!(rows(&pool).await, 1, "only the first append is in the log");
    let mut tx = pool.begin().await.unwrap();
    let positions = short
        .append(
            &mut tx,
            &[project_created("after", 1), project_created("after", 2)],
        )
        .await
        .unwrap();
    let timeout: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(timeout, "0", "the append's bounded wait did not outlive it");
    assert_eq!(positions.len(), 2);
    assert!(positions[0] < positions[1], "{positions:?}");
    assert_eq!(rows(&pool).await, 3);
    pool.close().await;
}
