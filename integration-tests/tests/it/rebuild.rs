//! `rebuild-projections` run on the live system, while a standby replica
//! is up and messages keep arriving, gives the same tables as a rebuild of
//! the same log and inbox into a fresh database, and as the live tables.

use crate::support::*;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};
use std::time::{Duration, Instant};
use stratavore_consumer::rebuild::rebuild;
use stratavore_runtime::Shutdown;
use stratavore_testkit::{TestDatabase, TestEnv, wait_until};

/// Every projection of the gateway and the orchestrator, as JSON.
async fn projections(pool: &PgPool) -> serde_json::Value {
    let tables = [
        ("gateway.projects", "name"),
        ("gateway.commands", "command_id"),
        ("gateway.idempotency_keys", "key"),
        ("gateway.stream_versions", "source_log, stream"),
        ("gateway.runners", "runner_id"),
        ("gateway.nodes", "node"),
        ("gateway.session_runners", "runner_id"),
        ("gateway.session_attempts", "runner_id, attempt"),
        ("gateway.sessions", "session_id"),
        ("gateway.budgets", "budget_id"),
        ("gateway.budget_alerts", "budget_id, period_start, kind"),
        ("gateway.budget_spend", "message_id"),
        ("orchestrator.projects", "name"),
        ("orchestrator.runners", "runner_id"),
        ("orchestrator.runner_timers", "runner_id"),
        ("orchestrator.sessions", "session_id"),
        ("orchestrator.session_usage", "session_id"),
        ("orchestrator.nodes", "node"),
        ("orchestrator.node_losses", "node, incarnation"),
        ("orchestrator.budgets", "budget_id"),
        (
            "orchestrator.budget_alerts",
            "budget_id, period_start, kind",
        ),
        ("orchestrator.budget_spend", "message_id"),
        ("orchestrator.stream_versions", "source_log, stream"),
    ];
    let mut out = serde_json::Map::new();
    for (table, order) in tables {
        let rows: Option<serde_json::Value> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT json_agg(t ORDER BY {order}) FROM {table} t"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(table.to_owned(), rows.unwrap_or(serde_json::Value::Null));
    }
    serde_json::Value::Object(out)
}

/// The live tables once they stop changing: a test that waited for the
/// orchestrator's state may still have events on their way to the gateway
/// (the relay and the gateway's consumer run on), and a snapshot taken then
/// would miss what the copied history holds.
async fn settled_projections(admin: &PgPool) -> serde_json::Value {
    let mut last = projections(admin).await;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = projections(admin).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM gateway.inbox WHERE status = 'received')
                  + (SELECT count(*) FROM orchestrator.inbox WHERE status = 'received')",
        )
        .fetch_one(admin)
        .await
        .unwrap();
        if now == last && waiting == 0 {
            return now;
        }
        last = now;
    }
    panic!("the projections never settled");
}

/// Copy a schema's log and inbox from one database to another.
async fn copy_history(from: &PgPool, to: &PgPool, schema: &str) {
    for (table, order) in [("log", "position"), ("inbox", "message_id")] {
        let rows: Option<serde_json::Value> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT json_agg(t ORDER BY {order}) FROM {schema}.{table} t"
        )))
        .fetch_one(from)
        .await
        .unwrap();
        if let Some(rows) = rows {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {schema}.{table} SELECT * FROM jsonb_populate_recordset(NULL::{schema}.{table}, $1)"
            )))
            .bind(rows)
            .execute(to)
            .await
            .unwrap();
        }
    }
}

async fn rebuild_both(pool_gateway: PgPool, pool_orchestrator: PgPool, env: &TestEnv) {
    let g = api_gateway::drainer(&gateway_config(env), pool_gateway);
    rebuild(&g.pool, &g.log, g.service.as_ref(), "api-gateway")
        .await
        .unwrap();
    let o = session_orchestrator::drainer(&orchestrator_config(env), pool_orchestrator);
    rebuild(&o.pool, &o.log, o.service.as_ref(), "session-orchestrator")
        .await
        .unwrap();
}

/// With the system quiet: a rebuild of the same log and inbox into a fresh
/// database, and a rebuild of the live one, both equal the live tables.
pub async fn assert_rebuilds_match_live(env: &TestEnv) {
    let admin = env.db.admin_pool().await.unwrap();
    let live = settled_projections(&admin).await;
    let fresh = TestDatabase::create().await.unwrap();
    let fresh_admin = fresh.admin_pool().await.unwrap();
    for schema in ["gateway", "orchestrator"] {
        copy_history(&admin, &fresh_admin, schema).await;
    }
    rebuild_both(
        fresh.service_pool("api-gateway").await.unwrap(),
        fresh.service_pool("session-orchestrator").await.unwrap(),
        env,
    )
    .await;
    assert_eq!(
        projections(&fresh_admin).await,
        live,
        "a fresh rebuild equals the live tables"
    );
    rebuild_both(
        env.db.service_pool("api-gateway").await.unwrap(),
        env.db.service_pool("session-orchestrator").await.unwrap(),
        env,
    )
    .await;
    assert_eq!(
        projections(&admin).await,
        live,
        "a live rebuild equals the live tables"
    );
    fresh_admin.close().await;
    fresh.drop_now().await.unwrap();
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_with_a_standby_up_equals_a_fresh_rebuild_and_the_live_tables() {
    let stack = Stack::start().await;
    // Standby replicas of both consumers (single active consumer: they wait).
    let standby = Shutdown::new();
    api_gateway::start(gateway_config(&stack.env), standby.clone())
        .await
        .unwrap()
        .unwrap();
    session_orchestrator::start(orchestrator_config(&stack.env), standby.clone())
        .await
        .unwrap()
        .unwrap();
    let gateway_pool = stack.env.db.service_pool("api-gateway").await.unwrap();
    let orchestrator_pool = stack
        .env
        .db
        .service_pool("session-orchestrator")
        .await
        .unwrap();

    let load = async {
        let mut accepted = Vec::new();
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(3) {
            i += 1;
            let name = format!("r{i}");
            let r = post(
                &stack,
                "/api/v1/projects?wait=0",
                json!({"name": name, "path": format!("{ROOT}/{name}"), "tags": ["t"]}),
                Some(&format!("k{i}")),
            )
            .await;
            accepted.push(r.headers["location"].to_str().unwrap().to_owned());
            if i % 3 == 0 {
                let r = post(
                    &stack,
                    &format!("/api/v1/projects/r{}/archive?wait=0", i - 1),
                    json!({}),
                    None,
                )
                .await;
                accepted.push(r.headers["location"].to_str().unwrap().to_owned());
            }
            if i % 4 == 0 {
                // Rejected: a name taken, so outcomes of both kinds exist.
                let r = post(
                    &stack,
                    "/api/v1/projects?wait=0",
                    json!({"name": "r1", "path": format!("{ROOT}/x")}),
                    None,
                )
                .await;
                accepted.push(r.headers["location"].to_str().unwrap().to_owned());
            }
        }
        accepted
    };
    let rebuilds = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            rebuild_both(gateway_pool.clone(), orchestrator_pool.clone(), &stack.env).await;
        }
    };
    let (accepted, ()) = tokio::join!(load, rebuilds);
    for location in &accepted {
        wait_until("every command decided", Duration::from_secs(60), || async {
            Ok((get(&stack, location).await.body["status"] != "pending").then_some(()))
        })
        .await
        .unwrap();
    }
    let admin = stack.env.db.admin_pool().await.unwrap();
    wait_until("both inboxes drained", Duration::from_secs(30), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM gateway.inbox WHERE status <> 'applied')
                  + (SELECT count(*) FROM orchestrator.inbox WHERE status <> 'applied')",
        )
        .fetch_one(&admin)
        .await?;
        Ok((waiting == 0).then_some(()))
    })
    .await
    .unwrap();
    let live = projections(&admin).await;
    assert!(
        live["gateway.projects"]
            .as_array()
            .is_some_and(|a| a.len() > 10),
        "{live}"
    );
    assert_rebuilds_match_live(&stack.env).await;
    standby.trigger();
    standby
        .wait_for_tasks(Duration::from_secs(20))
        .await
        .unwrap();
    admin.close().await;
    gateway_pool.close().await;
    orchestrator_pool.close().await;
    stack.cleanup().await;
}
