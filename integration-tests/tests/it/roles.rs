//! Each service's role touches only its own schema; the relay's reads the
//! other schemas' logs and nothing else; nobody rewrites a log.

use sqlx::PgPool;
use stratavore_testkit::TestDatabase;

/// Run `sql` and return the SQLSTATE it failed with (None: it succeeded).
async fn sqlstate(pool: &PgPool, sql: &'static str) -> Option<String> {
    match sqlx::query(sql).execute(pool).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

const DENIED: Option<&str> = Some("42501");

#[tokio::test]
async fn a_service_role_cannot_read_or_write_another_services_schema() {
    let db = TestDatabase::create().await.unwrap();
    let orchestrator = db.service_pool("session-orchestrator").await.unwrap();
    assert_eq!(
        sqlstate(&orchestrator, "SELECT count(*) FROM orchestrator.log").await,
        None
    );
    assert_eq!(
        sqlstate(&orchestrator, "SELECT count(*) FROM gateway.log")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&orchestrator, "SELECT count(*) FROM gateway.inbox")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&orchestrator, "SELECT count(*) FROM relay.cursors")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&orchestrator, "CREATE TABLE gateway.intruder (x int)")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&orchestrator, "CREATE SCHEMA intruder")
            .await
            .as_deref(),
        DENIED
    );
    let gateway = db.service_pool("api-gateway").await.unwrap();
    assert_eq!(
        sqlstate(&gateway, "SELECT count(*) FROM orchestrator.inbox")
            .await
            .as_deref(),
        DENIED
    );
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn the_relay_role_reads_every_log_and_nothing_else() {
    let db = TestDatabase::create().await.unwrap();
    let relay = db.service_pool("outbox-relay").await.unwrap();
    for schema_log in [
        "SELECT count(*) FROM orchestrator.log",
        "SELECT count(*) FROM supervisor.log",
        "SELECT count(*) FROM registry.log",
        "SELECT count(*) FROM gateway.log",
        "SELECT count(*) FROM relay.cursors",
    ] {
        assert_eq!(sqlstate(&relay, schema_log).await, None, "{schema_log}");
    }
    assert_eq!(
        sqlstate(&relay, "SELECT count(*) FROM orchestrator.inbox")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(
            &relay,
            "INSERT INTO orchestrator.log (position, message_id, kind, stream, stream_version, type, \
             subject, source, routing_key, time, data) VALUES (1, gen_random_uuid(), 'event', 's', 1, \
             't', 's', 's', 'k', now(), '{}')"
        )
        .await
        .as_deref(),
        DENIED
    );
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn not_even_the_owner_can_update_delete_or_truncate_a_log() {
    let db = TestDatabase::create().await.unwrap();
    let gateway = db.service_pool("api-gateway").await.unwrap();
    sqlx::query(
        "INSERT INTO gateway.log (position, message_id, kind, stream, stream_version, type, subject, \
         source, routing_key, time, data) VALUES (nextval('gateway.log_position'), gen_random_uuid(), \
         'event', 's', 1, 'io.stratavore.project.created.v1', 's', '/stratavore/api-gateway', 'k', now(), '{}')",
    )
    .execute(&gateway)
    .await
    .unwrap();
    assert_eq!(
        sqlstate(&gateway, "UPDATE gateway.log SET subject = 'x'")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&gateway, "DELETE FROM gateway.log")
            .await
            .as_deref(),
        DENIED
    );
    assert_eq!(
        sqlstate(&gateway, "TRUNCATE gateway.log").await.as_deref(),
        DENIED
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.log")
        .fetch_one(&gateway)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    db.drop_now().await.unwrap();
}
