//! Runners end to end with the real supervisor, shim and simulated agent:
//! the behaviours of the launch saga that need a real agent.

use crate::supervisor_e2e::{Node, NodeOptions, of_type};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_e2e_usage_repeated_over_several_lines_is_counted_once_at_its_final_value() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(
        runner,
        r#"sim:{"turns":2,"tokens_per_turn":{"input":100,"output":50,"cache_read":7},"repeat_usage":3} count me once"#,
    )
    .await;
    node.wait_runner(runner, "exited").await;
    let events = node.process_events(runner).await;
    let usage = of_type(&events, "usage_reported");
    assert_eq!(usage.len(), 2, "one report per turn: {usage:?}");
    let total = |field: &str| {
        usage
            .iter()
            .map(|u| u[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (
            total("input_tokens"),
            total("output_tokens"),
            total("cache_read_input_tokens")
        ),
        (200, 100, 14)
    );
    node.stop().await;
}

/// A crash before the first turn was saved: the session is not bound, so
/// the restart starts afresh under a new session id instead of a resume the
/// agent would refuse ("No conversation found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_e2e_a_crash_before_the_first_turn_restarts_afresh_under_a_new_session() {
    let node = Node::start_with(NodeOptions {
        restart_base_ms: Some(200),
        ..Default::default()
    })
    .await;
    let runner = Uuid::now_v7();
    node.launch_with(
        runner,
        r#"sim:{"crash_exit_code":3,"crash_after_turns":0} crash at once"#,
        1,
    )
    .await;
    node.wait_attempt(runner, 2, "failed").await;

    let pool = node.env.db.admin_pool().await.unwrap();
    let offers: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT data FROM orchestrator.log WHERE type = 'io.stratavore.runner.offered.v1' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert_eq!(offers[1]["attempt"], 2);
    assert_eq!(offers[1]["resume"], false, "nothing to resume");
    assert_ne!(
        offers[0]["session_id"], offers[1]["session_id"],
        "a new session id"
    );
    let exits: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT data FROM supervisor.log WHERE type = 'io.stratavore.process.exited.v1' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in &exits {
        assert_eq!(
            exit["code"], 3,
            "both attempts crashed as scripted, neither failed to resume: {exit}"
        );
        let message = exit["message"].as_str().unwrap_or("");
        assert!(!message.contains("No conversation found"), "{message}");
    }
    pool.close().await;
    node.stop().await;
}
