//! Every transaction that writes projections begins holding its service's
//! rebuild lock shared (`begin_shared`, one round trip with the `BEGIN`):
//! writers share it, a rebuild's exclusive hold waits for them, and a
//! writer that begins while a rebuild holds it waits for the rebuild.

use std::time::Duration;
use stratavore_consumer::{REBUILD_LOCK_SPACE, begin_shared, rebuild_lock_key};
use stratavore_testkit::TestEnv;

const SCHEMA: &str = "gateway";

async fn try_exclusive(admin: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(REBUILD_LOCK_SPACE)
        .bind(rebuild_lock_key(SCHEMA))
        .fetch_one(admin)
        .await
        .unwrap()
}

async fn unlock_exclusive(admin: &mut sqlx::PgConnection) {
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
        .bind(REBUILD_LOCK_SPACE)
        .bind(rebuild_lock_key(SCHEMA))
        .fetch_one(admin)
        .await
        .unwrap();
    assert!(released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_shared_holds_the_rebuild_lock_until_it_ends() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool("api-gateway").await.unwrap();
    let admin_pool = env.db.admin_pool().await.unwrap();
    let mut admin = admin_pool.acquire().await.unwrap();

    let mut one = begin_shared(&pool, SCHEMA, "one").await.unwrap();
    let two = begin_shared(&pool, SCHEMA, "two").await.unwrap();
    assert!(!try_exclusive(&mut admin).await, "writers hold it shared");
    // The transaction is usable after the lock, in the same BEGIN.
    let one_plus: i32 = sqlx::query_scalar("SELECT 1 + 1")
        .fetch_one(&mut *one)
        .await
        .unwrap();
    assert_eq!(one_plus, 2);
    one.commit().await.unwrap();
    assert!(
        !try_exclusive(&mut admin).await,
        "the second still holds it"
    );
    two.rollback().await.unwrap();
    assert!(try_exclusive(&mut admin).await, "free once both ended");

    // A rebuild holds it: a writer's begin waits until it lets go.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { begin_shared(&pool, SCHEMA, "waiting").await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a writer begins only after the rebuild"
    );
    unlock_exclusive(&mut admin).await;
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the writer began once the rebuild let go")
        .unwrap()
        .unwrap();
}
