//! The consuming half: idempotence, dead rows, waiting streams, replay and
//! skip, against real RabbitMQ and Postgres.

use crate::support::*;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use stratavore_runtime::Shutdown;
use stratavore_testkit::{TestBroker, TestDatabase, TestEnv, wait_until};

async fn start_gateway(
    env: &TestEnv,
    tune: impl FnOnce(&mut api_gateway::config::GatewayConfig),
) -> Shutdown {
    let shutdown = Shutdown::new();
    let mut config = gateway_config(env);
    tune(&mut config);
    api_gateway::start(config, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    shutdown
}

async fn stop(shutdown: Shutdown) {
    shutdown.trigger();
    shutdown
        .wait_for_tasks(Duration::from_secs(20))
        .await
        .unwrap();
}

fn operator_command(env: &TestEnv, args: &[&str]) -> tokio::process::Command {
    let bin = stratavore_testkit::process::workspace_binary("session-orchestrator").unwrap();
    let mut command = tokio::process::Command::new(bin);
    command
        .args(args)
        .envs(env.service_env())
        .env("STRATAVORE__PROJECTS__ALLOWED_ROOTS", ROOT)
        .env("RUST_LOG", "warn");
    command
}

/// Run an operator subcommand of the orchestrator binary; its stdout.
async fn operator(env: &TestEnv, args: &[&str]) -> String {
    let out = operator_command(env, args).output().await.unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn operator_status(env: &TestEnv, args: &[&str]) -> std::process::ExitStatus {
    operator_command(env, args).output().await.unwrap().status
}

async fn description(pool: &sqlx::PgPool, name: &str) -> Option<String> {
    sqlx::query_scalar("SELECT description FROM gateway.projects WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_is_applied_once() {
    let env = TestEnv::new().await.unwrap();
    let gateway = start_gateway(&env, |_| {}).await;
    let fake = FakeOrchestrator::connect(&env.broker).await;
    let pool = env.db.admin_pool().await.unwrap();
    let created = FakeOrchestrator::event("twice", 1, "v1");
    fake.publish(&[created.clone(), created.clone()]).await;
    let updated = FakeOrchestrator::event("twice", 2, "v2");
    fake.publish(std::slice::from_ref(&updated)).await;
    fake.publish(&[created.clone(), updated]).await;
    wait_until("both versions applied", Duration::from_secs(20), || async {
        Ok((description(&pool, "twice").await.as_deref() == Some("v2")).then_some(()))
    })
    .await
    .unwrap();
    // Let the late duplicates arrive, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses = inbox_statuses(&pool, "gateway").await;
    assert_eq!(statuses.get("applied"), Some(&2), "{statuses:?}");
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_applied_in_order(&pool, "gateway").await;
    stop(gateway).await;
    pool.close().await;
    env.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_and_one_the_handler_keeps_refusing_become_dead_rows_while_other_streams_go_on()
 {
    let env = TestEnv::new().await.unwrap();
    let shutdown = Shutdown::new();
    let mut config = orchestrator_config(&env);
    config.consumer.max_attempts = 3;
    config.consumer.sweep_interval_ms = 100;
    session_orchestrator::start(config, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let conn = env.broker.connect().await.unwrap();
    let publisher = stratavore_bus::Publisher::open_owning(conn).await.unwrap();
    let commands = env.broker.topology().commands_exchange();

    // Not a CloudEvent at all.
    let garbage = stratavore_bus::OutgoingMessage {
        exchange: commands.clone(),
        routing_key: "session-orchestrator.project.create".into(),
        message: stratavore_bus::AmqpMessage {
            properties: lapin::BasicProperties::default()
                .with_content_type("application/json".into()),
            body: b"{\"this is\": \"not an event\"".to_vec(),
        },
        persistent: true,
    };
    // A well-formed CloudEvent whose command the handler refuses every
    // time (its payload lacks the path).
    let mut unknown = FakeOrchestrator::event("x", 1, "x");
    unknown.type_name = "io.stratavore.command.project.create.v1".into();
    unknown.data = serde_json::json!({"name": "x"});
    unknown.source = "/stratavore/api-gateway".into();
    unknown.stream = format!("command-{}", unknown.id);
    let unknown_out = stratavore_bus::OutgoingMessage {
        exchange: commands.clone(),
        routing_key: "session-orchestrator.project.create".into(),
        message: stratavore_bus::encode_event(unknown.to_cloudevent().unwrap()).unwrap(),
        persistent: true,
    };
    // A good command behind them, on a stream of its own.
    let create = stratavore_events::project::ProjectCommand::Create(
        stratavore_events::project::CreateProject {
            name: "fine".into(),
            path: format!("{ROOT}/fine"),
            description: None,
            tags: vec![],
            max_concurrent_runners: None,
        },
    );
    let good = stratavore_store::NewEntry::of(
        &create,
        "/stratavore/api-gateway",
        "command-good",
        1,
        "fine",
        chrono::Utc::now(),
    );
    let good_out = stratavore_bus::OutgoingMessage {
        exchange: commands,
        routing_key: good.routing_key.clone(),
        message: stratavore_bus::encode_event(good.envelope.to_cloudevent().unwrap()).unwrap(),
        persistent: true,
    };
    publisher
        .publish_batch(&[garbage, unknown_out, good_out])
        .await
        .unwrap();

    let pool = env.db.admin_pool().await.unwrap();
    wait_until(
        "the good command decided",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orchestrator.projects WHERE name = 'fine'",
            )
            .fetch_one(&pool)
            .await?;
            Ok((n == 1).then_some(()))
        },
    )
    .await
    .unwrap();
    let dead: Vec<(String, i32, Option<String>)> = wait_until("two dead rows", Duration::from_secs(20), || async {
        let rows: Vec<(String, i32, Option<String>)> = sqlx::query_as(
            "SELECT type, attempts, last_error FROM orchestrator.inbox WHERE status = 'dead' ORDER BY type",
        )
        .fetch_all(&pool)
        .await?;
        Ok((rows.len() == 2).then_some(rows))
    })
    .await
    .unwrap();
    let (refused, unreadable) = (&dead[0], &dead[1]);
    assert_eq!(refused.0, "io.stratavore.command.project.create.v1");
    assert_eq!(refused.1, 3, "it was tried max_attempts times");
    assert!(
        refused
            .2
            .as_deref()
            .unwrap_or("")
            .contains("missing field `path`"),
        "{refused:?}"
    );
    assert_eq!(unreadable.0, "unknown");
    assert!(
        unreadable.2.as_deref().unwrap_or("").contains("CloudEvent"),
        "{unreadable:?}"
    );

    // Operators list and skip through the service binary's subcommands;
    // skipping the refused command answers it `rejected`, so it still has
    // an outcome.
    let id = unknown.id;
    let listed = operator(&env, &["dead-letters", "list"]).await;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains(&id.to_string()), "{listed}");
    let skipped = operator(&env, &["dead-letters", "skip", &id.to_string()]).await;
    assert!(skipped.starts_with(&format!("skipped {id}")), "{skipped}");
    let again = operator_status(&env, &["dead-letters", "skip", &id.to_string()]).await;
    assert!(
        !again.success(),
        "a row that is no longer dead cannot be skipped again"
    );
    let answered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log WHERE type = 'io.stratavore.project.rejected.v1'
         AND data->>'reason' = 'skipped_by_operator' AND data->>'command_id' = $1",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(answered, 1, "the skipped command is answered rejected");
    let types: Vec<String> =
        sqlx::query_scalar("SELECT type FROM orchestrator.log ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        types.contains(&"io.stratavore.inbox.dead_letter_skipped.v1".to_owned()),
        "{types:?}"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM orchestrator.inbox WHERE message_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "skipped");
    stop(shutdown).await;
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// The broker dead-letters a message past its delivery limit (here a test
/// consumer keeps returning it); the gateway records it as a dead row from
/// its DLQ, the next version of its stream waits behind it, and replaying
/// the dead row applies both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_dead_letters_is_a_dead_row_its_stream_waits_and_a_replay_applies_both_in_order()
 {
    let db = TestDatabase::create().await.unwrap();
    let broker =
        TestBroker::create_with_delivery_limit(&stratavore_testkit::broker::shared_amqp_url(), 2)
            .await
            .unwrap();
    let env = TestEnv { db, broker };
    let fake = FakeOrchestrator::connect(&env.broker).await;
    let first = FakeOrchestrator::event("stuck", 1, "v1");
    fake.publish(std::slice::from_ref(&first)).await;

    // Return the message until the broker gives up on it.
    let conn = env.broker.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = env.broker.topology().service_queue("api-gateway");
    let mut returns = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), returns.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();

    let gateway = start_gateway(&env, |c| c.base.broker.delivery_limit = 2).await;
    let pool = env.db.admin_pool().await.unwrap();
    let reason: String = wait_until(
        "the dead letter recorded",
        Duration::from_secs(20),
        || async {
            Ok(sqlx::query_scalar::<_, Option<String>>(
                "SELECT last_error FROM gateway.inbox WHERE message_id = $1 AND status = 'dead'",
            )
            .bind(first.id)
            .fetch_optional(&pool)
            .await?
            .flatten())
        },
    )
    .await
    .unwrap();
    assert!(reason.contains("delivery_limit"), "{reason}");

    let second = FakeOrchestrator::event("stuck", 2, "v2");
    fake.publish(std::slice::from_ref(&second)).await;
    let waiting = wait_until(
        "the next version waiting",
        Duration::from_secs(20),
        || async {
            let s: Option<String> =
                sqlx::query_scalar("SELECT status FROM gateway.inbox WHERE message_id = $1")
                    .bind(second.id)
                    .fetch_optional(&pool)
                    .await?;
            Ok(s)
        },
    )
    .await
    .unwrap();
    assert_eq!(waiting, "received", "it waits behind the dead row");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        description(&pool, "stuck").await,
        None,
        "nothing of the stream is applied yet"
    );

    let drainer = api_gateway::drainer(
        &gateway_config(&env),
        env.db.service_pool("api-gateway").await.unwrap(),
    );
    let outcome = stratavore_consumer::dead_letters::replay(
        &drainer,
        &stratavore_runtime::SystemClock,
        first.id,
    )
    .await
    .unwrap();
    assert_eq!(outcome.applied, 2, "the replayed row and the one behind it");
    assert_eq!(description(&pool, "stuck").await.as_deref(), Some("v2"));
    assert_applied_in_order(&pool, "gateway").await;
    let decisions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gateway.log WHERE type = 'io.stratavore.inbox.dead_letter_replayed.v1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(decisions, 1, "the decision is an event in the log");
    stop(gateway).await;
    pool.close().await;
    env.cleanup().await.unwrap();
}
