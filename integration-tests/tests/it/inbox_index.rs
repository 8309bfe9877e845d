//! The drain's lookup of its streams' next inbox rows reads an index, not the
//! whole inbox: the inbox keeps every message it applied, so a scan would
//! slow every consumer down as its history grows (found by `make bench`).

use stratavore_testkit::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_rows_lookup_uses_an_index_at_twenty_thousand_inbox_rows() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool("api-gateway").await.unwrap();
    sqlx::query(
        "INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, message)
         SELECT gen_random_uuid(), 'orchestrator', 'project-' || (i % 2000), i / 2000, 'x',
                CASE WHEN i % 10 = 0 THEN 'received' ELSE 'applied' END, '{}'
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE inbox").execute(&pool).await.unwrap();
    // The drain's statement is prepared: after a few runs Postgres may
    // plan it once for any parameters. Both plans must look a stream up by
    // every column of the index.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            stratavore_consumer::inbox::LOCK_NEXT_ROWS_SQL
        )))
        .bind(vec!["orchestrator"; 3])
        .bind(vec!["project-7", "project-8", "project-1999"])
        .bind("")
        .bind(25_i64)
        .bind(100_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        sqlx::query("RESET plan_cache_mode")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{mode}: {plan}");
        let lookup = plan
            .split("Index Scan using inbox_next")
            .nth(1)
            .and_then(|after| after.lines().find(|l| l.contains("Index Cond")))
            .unwrap_or_else(|| panic!("{mode}: no lookup by inbox_next: {plan}"));
        for column in [
            "owner =",
            "source_log =",
            "stream =",
            "stream_version >",
            "stream_version <=",
        ] {
            assert!(
                lookup.contains(column),
                "{mode}: {column} is not in {lookup}\n{plan}"
            );
        }
    }
    // The sweep for waiting streams reads the waiting rows through the
    // same index (its own partial indexes were dropped: every index an
    // inbox row enters costs its insert and its applied mark).
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        stratavore_consumer::inbox::WAITING_STREAMS_SQL
    )))
    .bind(100_i64)
    .bind("")
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("inbox_next"), "{plan}");
    // So does the check, on receipt of every batch, for rows its streams
    // have waiting.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        stratavore_consumer::inbox::LOCK_STREAM_VERSIONS_SQL
    )))
    .bind(vec!["orchestrator"; 3])
    .bind(vec!["project-7", "project-8", "project-1999"])
    .bind("")
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    let waiting = plan
        .split("inbox_next")
        .nth(1)
        .and_then(|after| after.lines().find(|l| l.contains("Index Cond")))
        .unwrap_or_else(|| panic!("no lookup by inbox_next: {plan}"));
    for column in ["owner =", "source_log =", "stream ="] {
        assert!(
            waiting.contains(column),
            "{column} is not in {waiting}\n{plan}"
        );
    }
    assert!(!plan.contains("Seq Scan on inbox"), "{plan}");
    pool.close().await;
}
