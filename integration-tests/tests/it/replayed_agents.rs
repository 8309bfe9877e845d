//! Longer runs of a real CLI's format than this offline machine can make
//! the CLI print: the simulated agent replays a Codex fixture (a run, then
//! a resume of its thread) as the `codex` profile's executable, through a
//! real supervisor, and the API counts the thread's cumulative usage as
//! differences across the resume, priced from the table.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions};
use std::path::PathBuf;
use stratavore_events::runner::{LaunchMode, LaunchRunner, RunnerCommand};
use stratavore_testkit::process::workspace_binary;
use stratavore_testkit::wait_until;
use uuid::Uuid;

const THREAD: &str = "019b4e2a-6c1f-7d30-a8e4-3f5c2d9b7a61";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../libs/agent-protocols/tests/fixtures/codex")
        .join(name)
}

/// (input, output, cache_creation, cache_read, cost) of a runner in the API.
async fn usage(node: &Node, runner: Uuid) -> (i64, i64, i64, i64, f64) {
    let pool = node.env.db.admin_pool().await.unwrap();
    let row = sqlx::query_as(
        "SELECT input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, cost_usd
         FROM gateway.runners WHERE runner_id = $1",
    )
    .bind(runner)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

/// Wait until the API shows `tokens` for the runner (its read model
/// follows the nodes' events a moment after the orchestrator); its cost.
async fn wait_usage(node: &Node, runner: Uuid, tokens: (i64, i64, i64, i64)) -> f64 {
    let reached = wait_until("the API to count the tokens", LAUNCH_WITHIN, || async {
        let (i, o, cw, cr, cost) = usage(node, runner).await;
        Ok(((i, o, cw, cr) == tokens).then_some(cost))
    })
    .await;
    match reached {
        Ok(cost) => cost,
        Err(e) => panic!("{e}: the API shows {:?}", usage(node, runner).await),
    }
}

fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} != {expected} USD"
    );
}

async fn launch(node: &Node, runner: Uuid, mode: LaunchMode, session: Option<&str>) {
    node.send(&RunnerCommand::Launch(LaunchRunner {
        runner_id: runner,
        project: "web".into(),
        profile: "codex".into(),
        prompt: "fix the failing test".into(),
        mode,
        session_id: session.map(str::to_owned),
        model: Some("gpt-5-codex".into()),
        permission: None,
        allowed_tools: None,
        max_restarts: Some(0),
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_e2e_a_codex_thread_resumed_is_billed_its_differences_priced_as_its_model() {
    let replay = std::env::temp_dir().join(format!("codex-replay-{}.jsonl", Uuid::new_v4()));
    std::fs::copy(fixture("tools-and-messages.jsonl"), &replay).unwrap();
    let sim = workspace_binary("stratavore-sim-agent").unwrap();
    let node = Node::start_with(NodeOptions {
        supervisor_env: vec![
            (
                "STRATAVORE__PROFILES__CODEX__EXECUTABLE".to_owned(),
                sim.to_string_lossy().into_owned(),
            ),
            (
                "STRATAVORE__PROFILES__CODEX__ENV_PASSTHROUGH".to_owned(),
                "HOME,PATH,SIM_AGENT_SCRIPT".to_owned(),
            ),
            (
                "SIM_AGENT_SCRIPT".to_owned(),
                serde_json::json!({ "replay": replay }).to_string(),
            ),
        ],
        ..NodeOptions::default()
    })
    .await;

    let first = Uuid::now_v7();
    launch(&node, first, LaunchMode::New, None).await;
    node.wait_runner(first, "exited").await;
    // 48213 input of which 40960 cached: cached input is inside input.
    let cost = wait_usage(&node, first, (7253, 1874, 0, 40960)).await;
    // gpt-5 rates: 1.25 input, 10 output, 0.125 cached, per million.
    assert_usd(
        cost,
        (7253.0 * 1.25 + 1874.0 * 10.0 + 40960.0 * 0.125) / 1e6,
    );
    let pool = node.env.db.admin_pool().await.unwrap();
    let session: String =
        sqlx::query_scalar("SELECT session_id FROM gateway.runners WHERE runner_id = $1")
            .bind(first)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(session, THREAD, "the thread id is the session");

    // The resume prints the thread's running total; only what it added counts.
    std::fs::copy(fixture("resume-tools-and-messages.jsonl"), &replay).unwrap();
    let second = Uuid::now_v7();
    launch(&node, second, LaunchMode::Resume, Some(THREAD)).await;
    node.wait_runner(second, "exited").await;
    wait_usage(&node, second, (6015, 1116, 0, 58368)).await;
    let total: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens
         FROM orchestrator.session_usage WHERE session_id = $1",
    )
    .bind(THREAD)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, (13268, 2990, 0, 99328), "the thread's own total");

    // A profile whose executable this node lacks fails the launch saying so.
    let missing = Uuid::now_v7();
    node.send(&RunnerCommand::Launch(LaunchRunner {
        runner_id: missing,
        project: "web".into(),
        profile: "generic".into(),
        prompt: "hello".into(),
        mode: LaunchMode::New,
        session_id: None,
        model: None,
        permission: None,
        allowed_tools: None,
        max_restarts: Some(0),
    }))
    .await;
    node.wait_runner(missing, "failed").await;
    // The API's read model follows the orchestrator's a moment later.
    let error = wait_until("the API to show the failure", LAUNCH_WITHIN, || async {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT state, last_error FROM gateway.runners WHERE runner_id = $1")
                .bind(missing)
                .fetch_optional(&pool)
                .await?;
        Ok(row
            .filter(|(state, _)| state == "failed")
            .and_then(|(_, e)| e))
    })
    .await
    .unwrap();
    assert!(
        error.contains("\"stratavore-generic-agent\" is not installed on node"),
        "{error}"
    );
    pool.close().await;
    std::fs::remove_file(&replay).unwrap();
    node.stop().await;
}
