//! Quota waits with one injected wall clock shared by the orchestrator, the
//! gateway and the node: an agent that ends on a usage limit leaves its
//! runner `waiting_quota` with a durable timer, which resumes the session
//! once the clock passes the reset the agent reported, after an
//! orchestrator restart, once across two orchestrators, and never after a
//! stop. A waiting runner gives its project slot up; its resume is admitted
//! on the project's stream like a launch, so the last slot goes once.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// One turn saved (so the session is bound), then a usage limit that
/// resets in a minute; resumed once the quota has reset, it finishes.
const LIMITED: &str =
    r#"sim:{"turns":1,"rate_limit":60,"resume_succeeds":true} summarise the logs"#;

/// Moves the shared clock past the reset (and not past a launch's timeout,
/// two minutes, so a launch offered just before the move still stands).
const PAST_THE_RESET: Duration = Duration::from_secs(75);

fn clock_file() -> PathBuf {
    let dir = stratavore_testkit::scratch_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("clock-{}", Uuid::now_v7()));
    std::fs::write(&file, "0").unwrap();
    file
}

async fn start(clock: &std::path::Path) -> Node {
    Node::start_with(NodeOptions {
        clock_offset_file: Some(clock.to_owned()),
        ..NodeOptions::default()
    })
    .await
}

async fn runner_view(node: &Node, runner: Uuid) -> Value {
    reqwest::get(format!(
        "http://{}/api/v1/runners/{runner}",
        node.gateway_addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

async fn wait_state(node: &Node, runner: Uuid, state: &str) -> Value {
    wait_until(&format!("runner {state}"), LAUNCH_WITHIN, || async {
        let view = runner_view(node, runner).await;
        Ok((view["state"] == state).then_some(view))
    })
    .await
    .unwrap()
}

/// The orchestrator's events of `type` for `runner` (attempt `attempt`).
async fn count(node: &Node, runner: Uuid, name: &str, attempt: Option<u32>) -> i64 {
    let pool = node.env.db.admin_pool().await.unwrap();
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log WHERE subject = $1 AND type = $2
         AND ($3::bigint IS NULL OR (data->>'attempt')::bigint = $3)",
    )
    .bind(runner.to_string())
    .bind(format!("io.stratavore.runner.{name}.v1"))
    .bind(attempt.map(i64::from))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// A runner that ran one turn and now waits for its quota.
async fn waiting_runner(node: &Node) -> Uuid {
    let runner = Uuid::now_v7();
    node.launch(runner, LIMITED).await;
    let view = wait_state(node, runner, "waiting_quota").await;
    let resume_at: chrono::DateTime<chrono::Utc> =
        view["resume_at"].as_str().unwrap().parse().unwrap();
    let in_a_minute = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert!(
        (resume_at - in_a_minute).num_seconds().abs() < 30,
        "the API shows when it resumes: {view}"
    );
    assert!(
        view["last_error"].as_str().unwrap().contains("usage limit"),
        "{view}"
    );
    runner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_quota_wait_resumes_its_session_after_an_orchestrator_restart_once_across_two_orchestrators()
 {
    let clock = clock_file();
    let mut node = start(&clock).await;
    let runner = waiting_runner(&node).await;
    let session = runner_view(&node, runner).await["session_id"].clone();

    // The timer is durable: it outlives the orchestrator that set it.
    node.restart_orchestrator().await;
    let broker = node.env.broker.url().to_owned();
    node.add_orchestrator(&broker).await;
    Node::set_clock_offset(&clock, PAST_THE_RESET);

    node.wait_process_event(runner, 2, "started").await;
    let view = wait_state(&node, runner, "exited").await;
    assert_eq!(view["attempt"], 2);
    assert_eq!(view["session_id"], session, "the same session, resumed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&node, runner, "offered", Some(2)).await,
        1,
        "one resume"
    );
    assert_eq!(count(&node, runner, "offered", Some(3)).await, 0);
    let pool = node.env.db.admin_pool().await.unwrap();
    let offer: Value = sqlx::query_scalar(
        "SELECT data FROM orchestrator.log WHERE subject = $1 AND type = 'io.stratavore.runner.offered.v1'
         AND (data->>'attempt')::int = 2",
    )
    .bind(runner.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(offer["resume"], true, "{offer}");
    pool.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_stop_during_a_quota_wait_cancels_the_timer_and_nothing_resumes() {
    let clock = clock_file();
    let node = start(&clock).await;
    let runner = waiting_runner(&node).await;
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want: Want::Stopped,
    }))
    .await;
    let view = wait_state(&node, runner, "cancelled").await;
    assert!(view["resume_at"].is_null(), "{view}");
    let pool = node.env.db.admin_pool().await.unwrap();
    let timers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orchestrator.runner_timers WHERE runner_id = $1")
            .bind(runner)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(timers, 0);
    Node::set_clock_offset(&clock, PAST_THE_RESET);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&node, runner, "offered", Some(2)).await, 0);
    assert_eq!(runner_view(&node, runner).await["state"], "cancelled");
    pool.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_launch_racing_a_timed_resume_for_the_projects_last_slot_lets_exactly_one_run() {
    let clock = clock_file();
    let node = start(&clock).await;
    let patched = reqwest::Client::new()
        .patch(format!("http://{}/api/v1/projects/web", node.gateway_addr))
        .json(&json!({"max_concurrent_runners": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200, "{:?}", patched.text().await);
    let waiting = waiting_runner(&node).await;

    // The wait gave the slot up: the clock passes the reset as a launch
    // asks for the one slot.
    let rival = Uuid::now_v7();
    let long = r#"sim:{"run_for_ms":20000,"turn_delay_ms":500} keep going"#;
    let launch = node.launch(rival, long);
    let tick = async { Node::set_clock_offset(&clock, PAST_THE_RESET) };
    tokio::join!(launch, tick);
    wait_until(
        "the rival's launch to be decided",
        LAUNCH_WITHIN,
        || async {
            let decided = count(&node, rival, "launch_approved", None).await
                + count(&node, rival, "launch_rejected", None).await;
            Ok((decided > 0).then_some(()))
        },
    )
    .await
    .unwrap();
    // Both would be running by now, had both passed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rival_ran = count(&node, rival, "launch_approved", None).await == 1;
    let resumed = count(&node, waiting, "offered", Some(2)).await == 1;
    if rival_ran == resumed {
        let pool = node.env.db.admin_pool().await.unwrap();
        let rows: Vec<(i64, String, String, String, Value)> = sqlx::query_as(
            "SELECT position, stream, type, time::text, data FROM orchestrator.log ORDER BY position",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for r in rows {
            eprintln!("{r:?}");
        }
    }
    assert!(
        rival_ran != resumed,
        "rival ran: {rival_ran}, resumed: {resumed}"
    );
    if rival_ran {
        // It keeps waiting, now for a free slot.
        let view = runner_view(&node, waiting).await;
        assert_eq!(view["state"], "waiting_quota", "{view}");
        assert!(
            view["last_error"].as_str().unwrap().contains("free slot"),
            "{view}"
        );
    } else {
        let pool = node.env.db.admin_pool().await.unwrap();
        let reason: String = sqlx::query_scalar(
            "SELECT data->>'reason' FROM orchestrator.log
             WHERE subject = $1 AND type = 'io.stratavore.runner.launch_rejected.v1'",
        )
        .bind(rival.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(reason, "quota_reached");
        pool.close().await;
    }
    node.stop().await;
}
