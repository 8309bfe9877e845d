//! The relay checks its lease in the statement that reads a batch: the
//! check says whether this very backend holds the lease, and says so only
//! when there is something to publish.

use crate::support::*;
use outbox_relay::source_relay::{LEASE_KEY_SPACE, lease_held_sql, lease_key};
use sqlx::Connection;
use stratavore_testkit::TestEnv;

async fn try_lease(conn: &mut sqlx::PgConnection, key: i32) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LEASE_KEY_SPACE)
        .bind(key)
        .fetch_one(conn)
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
    let (rows, held) = log()
        .read_after_checking(&mut ours, 0, 10, &check)
        .await
        .unwrap();
    assert!(rows.is_empty() && held);

    append_committed(&pool, &[project_created("a", 1), project_created("b", 1)])
        .await
        .unwrap();
    let (rows, held) = log()
        .read_after_checking(&mut ours, 0, 10, &check)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(!held, "nobody holds the lease");

    // Another backend holds it: still not ours.
    assert!(try_lease(&mut theirs, key).await);
    let (_, held) = log()
        .read_after_checking(&mut ours, 0, 10, &check)
        .await
        .unwrap();
    assert!(!held, "another backend holds the lease");
    // Let go explicitly: a closed connection's backend releases its locks
    // only as it exits, after `close` has returned.
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
        .bind(LEASE_KEY_SPACE)
        .bind(key)
        .fetch_one(&mut theirs)
        .await
        .unwrap();
    assert!(released);
    theirs.close().await.unwrap();

    // Ours now, and the rows above a cursor come with it.
    assert!(try_lease(&mut ours, key).await);
    let first = rows[0].position;
    let (rows, held) = log()
        .read_after_checking(&mut ours, first, 10, &check)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].envelope.stream, "b");
    assert!(held, "this backend holds the lease");

    // The same key in another space (an append lock) is not the lease.
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(LEASE_KEY_SPACE)
        .bind(key)
        .execute(&mut ours)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock(1, $1)")
        .bind(key)
        .execute(&mut ours)
        .await
        .unwrap();
    let (_, held) = log()
        .read_after_checking(&mut ours, 0, 10, &check)
        .await
        .unwrap();
    assert!(!held, "a lock of another key space is not the lease");
}
