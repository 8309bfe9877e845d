//! The relay checks its lease in the statement that reads a batch: the
//! check says whether this very backend holds the lease, and says so only
//! when there is something to publish.

use crate::support::*;
use outbox_relay::source_relay::{LEASE_KEY_SPACE, lease_held_sql, lease_key};
use sqlx::Connection;
use stratavore_testkit::TestEnv;

async fn try_lease(conn: &mut sqlx::PgConnection, key: i32) -> bool {
    lease_call(conn, "pg_try_advisory_lock", key).await
}

/// Let go of the lease; whether this backend held it.
async fn release_lease(conn: &mut sqlx::PgConnection, key: i32) -> bool {
    lease_call(conn, "pg_advisory_unlock", key).await
}

async fn lease_call(conn: &mut sqlx::PgConnection, function: &str, key: i32) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {function}($1, $2)")))
        .bind(LEASE_KEY_SPACE)
        .bind(key)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The rows above `after` (at most ten) and whether `check` held.
async fn read(
    conn: &mut sqlx::PgConnection,
    after: i64,
    check: &str,
) -> (Vec<stratavore_store::LogRow>, bool) {
    log()
        .read_after_checking(conn, after, 10, check)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_read_with_whether_this_backend_holds_the_lease() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let key = lease_key(SOURCE);
    let check = lease_held_sql(key);
    let mut ours = pool.acquire().await.unwrap().detach();
    let mut theirs = pool.acquire().await.unwrap().detach();

    // Nothing to read: nothing to publish, and no verdict on the lease.
    let (rows, held) = read(&mut ours, 0, &check).await;
    assert!(rows.is_empty() && held);

    append_committed(&pool, &[project_created("a", 1), project_created("b", 1)])
        .await
        .unwrap();
    let (rows, held) = read(&mut ours, 0, &check).await;
    assert_eq!(rows.len(), 2);
    assert!(!held, "nobody holds the lease");

    // Another backend holds it: still not ours.
    assert!(try_lease(&mut theirs, key).await);
    let (_, held) = read(&mut ours, 0, &check).await;
    assert!(!held, "another backend holds the lease");
    // Let go explicitly: a closed connection's backend releases its locks
    // only as it exits, after `close` has returned.
    assert!(release_lease(&mut theirs, key).await);
    theirs.close().await.unwrap();

    // Ours now, and the rows above a cursor come with it.
    assert!(try_lease(&mut ours, key).await);
    let first = rows[0].position;
    let (rows, held) = read(&mut ours, first, &check).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].envelope.stream, "b");
    assert!(held, "this backend holds the lease");

    // The same key in another space (an append lock) is not the lease.
    assert!(release_lease(&mut ours, key).await);
    sqlx::query("SELECT pg_advisory_lock(1, $1)")
        .bind(key)
        .execute(&mut ours)
        .await
        .unwrap();
    let (_, held) = read(&mut ours, 0, &check).await;
    assert!(!held, "a lock of another key space is not the lease");
}
