//! Provisioning run twice changes nothing the second time, and leaves the
//! pinned agent CLIs installed and answering.

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::process::Command;
use std::time::Duration;
use stratavore_provision::agent_clis::{AGENT_CLIS, agent_bin_dir, ensure_installed};
use stratavore_provision::stack::{ProvisionRequest, provision};
use stratavore_store::migrate::migrate_service;
use stratavore_store::service_pool;
use stratavore_store::services::SERVICE_DBS;
use stratavore_testkit::database::{shared_server_url, url_with_database};
use stratavore_testkit::{TestBroker, agent_cli, paths};

/// Everything provisioning and migration decide, as one JSON value.
async fn snapshot(pool: &PgPool) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT json_build_object(
            'roles', (SELECT json_agg(json_build_array(rolname, rolcanlogin, rolsuper, rolcreatedb,
                                                       rolcreaterole, rolpassword IS NULL) ORDER BY rolname)
                      FROM pg_authid WHERE rolname LIKE 'stratavore\\_%'),
            'schemas', (SELECT json_agg(json_build_array(nspname, pg_get_userbyid(nspowner), nspacl::text)
                                        ORDER BY nspname)
                        FROM pg_namespace WHERE nspname IN
                        ('orchestrator', 'supervisor', 'registry', 'gateway', 'relay', 'public')),
            'extensions', (SELECT json_agg(json_build_array(extname, extversion) ORDER BY extname)
                           FROM pg_extension),
            'tables', (SELECT json_agg(json_build_array(schemaname, tablename, tableowner) ORDER BY 1, 2)
                       FROM pg_tables WHERE schemaname IN
                       ('orchestrator', 'supervisor', 'registry', 'gateway', 'relay')),
            'grants', (SELECT json_agg(json_build_array(table_schema, table_name, grantee, privilege_type)
                                       ORDER BY 1, 2, 3, 4)
                       FROM information_schema.role_table_grants WHERE table_schema IN
                       ('orchestrator', 'supervisor', 'registry', 'gateway', 'relay')),
            'migrations', (SELECT json_agg(json_build_array(n.nspname, c.relname) ORDER BY 1)
                           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.relname = '_sqlx_migrations'))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn migrate_all(url: &str) {
    for db in SERVICE_DBS {
        let pool = service_pool(url, db, None, 2, Duration::from_secs(30))
            .await
            .unwrap();
        migrate_service(&pool, db).await.unwrap();
        pool.close().await;
    }
}

#[tokio::test]
async fn provisioning_twice_changes_nothing_the_second_time() {
    let server = shared_server_url().await.unwrap();
    let name = format!("stv_p_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let mut admin = PgConnection::connect(&url_with_database(&server, "postgres").unwrap())
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = url_with_database(&server, &name).unwrap();
    let broker = TestBroker::create().await.unwrap();
    let request = ProvisionRequest {
        local_dir: paths::local_dir(),
        database_url: Some(url.clone()),
        role_password: None,
        broker_url: broker.url().to_owned(),
        prefix: broker.prefix().to_owned(),
        delivery_limit: stratavore_testkit::broker::test_delivery_limit(),
    };

    let provisioned = provision(&request).await.unwrap();
    assert_eq!(
        provisioned.agent_bin_dir,
        agent_bin_dir(&paths::local_dir())
    );
    migrate_all(&url).await;
    let pool = PgPool::connect(&url).await.unwrap();
    let first = snapshot(&pool).await;
    assert!(
        first["extensions"].to_string().contains("vector"),
        "pgvector is installed: {first}"
    );

    provision(&request).await.unwrap();
    migrate_all(&url).await;
    let second = snapshot(&pool).await;
    assert_eq!(first, second);
    pool.close().await;

    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn declaring_the_topology_again_with_the_same_settings_succeeds() {
    let broker = TestBroker::create().await.unwrap();
    let conn = broker.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    broker.topology().declare_all(&channel).await.unwrap();
    broker.topology().declare_all(&channel).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn after_provisioning_the_pinned_agent_clis_answer_with_their_versions() {
    // The step `provision` runs for the agent CLIs; `make test` has run it
    // already, so this is the fast path, and a second call installs nothing.
    let local_dir = paths::local_dir();
    let first = tokio::task::spawn_blocking({
        let local_dir = local_dir.clone();
        move || ensure_installed(&local_dir)
    })
    .await
    .unwrap()
    .unwrap();
    let again = tokio::task::spawn_blocking(move || ensure_installed(&local_dir))
        .await
        .unwrap()
        .unwrap();
    assert!(!again.installed_now);
    assert_eq!(again.bin_dir, first.bin_dir);

    for cli in AGENT_CLIS {
        let program = agent_cli(cli.program);
        let output = tokio::task::spawn_blocking(move || {
            Command::new(&program).arg("--version").output().unwrap()
        })
        .await
        .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && printed.split_whitespace().any(|word| word == cli.version),
            "{} --version: {} {printed}{}",
            cli.program,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
