//! Nodes' liveness, drains and session affinity in the orchestrator, with
//! fake supervisor nodes that heartbeat on the live exchange: a node that
//! stops heartbeating is declared lost (once, however many replicas watch)
//! and its runners relaunched or lost; a drain reaches the node; a session
//! is resumed only on the node holding its files, and not at all while
//! that node is lost.

use crate::launch_saga::{
    FakeNode, exited, launch, runner_state, stack_with, stop_all, wait_orchestrator_idle,
    wait_state,
};
use crate::support::*;
use std::time::{Duration, Instant};
use stratavore_events::process::{DrainNode, NodeCommand, ProcessEvent, ProcessSessionBound};
use stratavore_events::runner::{LaunchMode, LaunchRunner, RunnerCommand};
use stratavore_runtime::Shutdown;
use stratavore_testkit::{TestEnv, wait_until};
use uuid::Uuid;

const BEAT: Duration = Duration::from_millis(200);
const LOST: &str = "io.stratavore.node.lost.v1";
const RELAUNCHED: &str = "io.stratavore.runner.relaunched.v1";

/// Heartbeat every 200 ms, TTL 1 s, grace 200 ms: K = 7 ticks.
fn fast_liveness(c: &mut session_orchestrator::config::OrchestratorConfig) {
    c.runners.heartbeat_interval_ms = 200;
    c.runners.liveness_ttl_ms = 1_000;
    c.runners.liveness_grace_ms = 200;
}

async fn node_state(env: &TestEnv, node: &str) -> Option<String> {
    let pool = env.db.admin_pool().await.unwrap();
    let state = sqlx::query_scalar("SELECT state FROM orchestrator.nodes WHERE node = $1")
        .bind(node)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    state
}

async fn wait_node(env: &TestEnv, node: &str, want: &str) {
    wait_until(
        &format!("{node} {want}"),
        Duration::from_secs(20),
        || async { Ok((node_state(env, node).await.as_deref() == Some(want)).then_some(())) },
    )
    .await
    .unwrap();
}

/// Payloads of a type in the orchestrator's log, in order.
async fn logged(env: &TestEnv, type_name: &str) -> Vec<serde_json::Value> {
    let pool = env.db.admin_pool().await.unwrap();
    let rows =
        sqlx::query_scalar("SELECT data FROM orchestrator.log WHERE type = $1 ORDER BY position")
            .bind(type_name)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

async fn wait_logged(env: &TestEnv, type_name: &str) -> Vec<serde_json::Value> {
    wait_until(type_name, Duration::from_secs(20), || async {
        let rows = logged(env, type_name).await;
        Ok((!rows.is_empty()).then_some(rows))
    })
    .await
    .unwrap()
}

/// Launch a runner (its offer read by `root`, the node serving the root)
/// and run attempt 1 on `node` (`root` itself when None); with `bind`, its
/// session is bound there. Returns the runner and its session.
async fn run_on(
    env: &TestEnv,
    root: &mut FakeNode,
    node: Option<&mut FakeNode>,
    bind: bool,
) -> (Uuid, String) {
    let runner = Uuid::now_v7();
    root.send(&launch(runner, "web")).await;
    let (_, offer) = root.next_offer().await;
    assert_eq!(offer["runner_id"], runner.to_string());
    let session = offer["session_id"].as_str().unwrap().to_owned();
    let node = match node {
        Some(node) => node,
        None => root,
    };
    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, _) = node.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.start.v1");
    node.report(runner, 1, node.started(runner, 1)).await;
    if bind {
        node.report(
            runner,
            1,
            ProcessEvent::SessionBound(ProcessSessionBound {
                runner_id: runner,
                attempt: 1,
                session_id: session.clone(),
            }),
        )
        .await;
    }
    wait_state(env, runner, "running").await;
    (runner, session)
}

fn resume(runner: Uuid, session: &str) -> RunnerCommand {
    RunnerCommand::Launch(LaunchRunner {
        runner_id: runner,
        project: "web".into(),
        profile: "demo".into(),
        prompt: "go on".into(),
        mode: LaunchMode::Resume,
        session_id: Some(session.into()),
        model: None,
        permission: None,
        allowed_tools: None,
        max_restarts: Some(0),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_node_that_stops_heartbeating_is_lost_its_unbound_runner_relaunched_and_its_bound_one_lost()
 {
    let (env, shutdowns) = stack_with(fast_liveness).await;
    let mut n1 = FakeNode::register(&env).await;
    let mut n2 = FakeNode::register_as(&env, "node-2", false).await;
    n1.announce().await;
    n2.announce().await;
    let beats1 = n1.heartbeats(BEAT);
    let _beats2 = n2.heartbeats(BEAT);
    wait_node(&env, "node-1", "up").await;
    wait_node(&env, "node-2", "up").await;
    let (unbound, first_session) = run_on(&env, &mut n1, None, false).await;
    let (bound, _) = run_on(&env, &mut n1, None, true).await;

    // Well past K ticks with heartbeats: nobody is lost.
    assert!(
        n1.no_offer_within(Duration::from_secs(3)).await,
        "nothing is relaunched while node-1 heartbeats"
    );
    assert!(logged(&env, LOST).await.is_empty());

    drop(beats1);
    let stopped = Instant::now();
    let lost = wait_logged(&env, LOST).await;
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(1_000),
        "declared lost only past the TTL since its last heartbeat (after {after:?})"
    );
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["node"], "node-1");
    assert_eq!(lost[0]["incarnation"], n1.incarnation.to_string());
    assert!(lost[0]["missed"].as_u64().unwrap() >= 7, "{lost:?}");

    // The unbound runner is offered again as attempt 2, afresh.
    let (kind, offer) = n1.next_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(offer["runner_id"], unbound.to_string());
    assert_eq!(offer["attempt"], 2);
    assert_eq!(offer["resume"], false);
    assert_ne!(offer["session_id"], first_session.as_str());
    wait_state(&env, unbound, "starting").await;
    let relaunched = logged(&env, RELAUNCHED).await;
    assert_eq!(relaunched.len(), 1);
    assert_eq!(
        (
            &relaunched[0]["runner_id"],
            &relaunched[0]["attempt"],
            &relaunched[0]["node"]
        ),
        (
            &serde_json::json!(unbound.to_string()),
            &serde_json::json!(1),
            &serde_json::json!("node-1")
        )
    );
    // The bound one is lost: its session waits for node-1.
    wait_state(&env, bound, "lost").await;
    wait_node(&env, "node-1", "lost").await;
    assert_eq!(
        node_state(&env, "node-2").await.as_deref(),
        Some("up"),
        "a node that heartbeats stays up"
    );

    // node-1 comes back as a new incarnation: up again.
    n1.reincarnate();
    n1.announce().await;
    let _beats_back = n1.heartbeats(BEAT);
    wait_node(&env, "node-1", "up").await;
    assert!(
        n1.no_offer_within(Duration::from_secs(2)).await,
        "the new incarnation heartbeats: nothing more is lost or relaunched"
    );
    assert_eq!(logged(&env, LOST).await.len(), 1);
    assert_eq!(
        runner_state(&env, bound).await.as_deref(),
        Some("lost"),
        "a lost runner stays lost"
    );
    wait_orchestrator_idle(&env).await;
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_two_replicas_watching_a_node_that_stops_heartbeating_declare_its_loss_once() {
    let (env, mut shutdowns) = stack_with(fast_liveness).await;
    let second = Shutdown::new();
    let mut config = orchestrator_config(&env);
    fast_liveness(&mut config);
    session_orchestrator::start(config, second.clone())
        .await
        .unwrap()
        .unwrap();
    shutdowns.push(second);
    let mut n1 = FakeNode::register(&env).await;
    n1.announce().await;
    let beats = n1.heartbeats(BEAT);
    wait_node(&env, "node-1", "up").await;
    let (runner, _) = run_on(&env, &mut n1, None, false).await;

    drop(beats);
    let (_, offer) = n1.next_offer().await;
    assert_eq!(
        (offer["runner_id"].clone(), offer["attempt"].clone()),
        (serde_json::json!(runner.to_string()), serde_json::json!(2))
    );
    // Both replicas convict within a tick or two of each other; give the
    // slower one K more ticks.
    assert!(
        n1.no_offer_within(Duration::from_secs(2)).await,
        "the runner is relaunched once"
    );
    assert_eq!(
        logged(&env, LOST).await.len(),
        1,
        "the loss is recorded once"
    );
    assert_eq!(logged(&env, RELAUNCHED).await.len(), 1);
    wait_orchestrator_idle(&env).await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reaches_the_nodes_control_queue_with_its_rev_and_the_node_shows_draining() {
    let (env, shutdowns) = stack_with(|_| {}).await;
    let mut n1 = FakeNode::register(&env).await;
    n1.announce().await;
    let _beats = n1.heartbeats(Duration::from_millis(500));
    wait_node(&env, "node-1", "up").await;
    let drain = |node: &str, draining| {
        NodeCommand::Drain(DrainNode {
            node: node.into(),
            draining,
        })
    };

    n1.send(&drain("node-1", true)).await;
    let (kind, sent) = n1.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.drain.v1");
    assert_eq!(
        sent,
        serde_json::json!({"node": "node-1", "draining": true, "rev": 1})
    );
    wait_node(&env, "node-1", "draining").await;

    n1.send(&drain("node-1", false)).await;
    let (_, sent) = n1.next_control().await;
    assert_eq!(
        (sent["draining"].clone(), sent["rev"].clone()),
        (serde_json::json!(false), serde_json::json!(2)),
        "each decision has a higher rev"
    );
    wait_node(&env, "node-1", "up").await;

    n1.send(&drain("node-9", true)).await;
    let refused = wait_logged(&env, "io.stratavore.node.drain_refused.v1").await;
    assert_eq!(refused[0]["reason"], "not_found");
    assert_eq!(refused[0]["node"], "node-9");
    assert_eq!(node_state(&env, "node-9").await, None);
    wait_orchestrator_idle(&env).await;
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_session_on_a_lost_node_cannot_be_resumed_and_one_on_an_up_node_is_offered_to_that_node()
 {
    let (env, shutdowns) = stack_with(fast_liveness).await;
    let mut n1 = FakeNode::register(&env).await;
    let mut n2 = FakeNode::register_as(&env, "node-2", false).await;
    n1.announce().await;
    n2.announce().await;
    let beats1 = n1.heartbeats(BEAT);
    let _beats2 = n2.heartbeats(BEAT);
    wait_node(&env, "node-1", "up").await;
    wait_node(&env, "node-2", "up").await;
    let (on_1, session_1) = run_on(&env, &mut n1, None, true).await;
    n1.report(on_1, 1, exited(on_1, 1, "succeeded", 0)).await;
    wait_state(&env, on_1, "exited").await;
    let (on_2, session_2) = run_on(&env, &mut n1, Some(&mut n2), true).await;
    n2.report(on_2, 1, exited(on_2, 1, "succeeded", 0)).await;
    wait_state(&env, on_2, "exited").await;

    drop(beats1);
    wait_node(&env, "node-1", "lost").await;
    let refused = Uuid::now_v7();
    n1.send(&resume(refused, &session_1)).await;
    let rejected = wait_logged(&env, "io.stratavore.runner.launch_rejected.v1").await;
    assert_eq!(rejected[0]["runner_id"], refused.to_string());
    assert_eq!(rejected[0]["reason"], "session_node_lost");
    assert_eq!(rejected[0]["field"], "session_id");
    assert!(
        rejected[0]["message"].as_str().unwrap().contains("node-1"),
        "{rejected:?}"
    );
    assert!(
        n1.no_offer_within(Duration::from_millis(500)).await,
        "nothing is offered"
    );

    let resumed = Uuid::now_v7();
    n1.send(&resume(resumed, &session_2)).await;
    let (kind, offer) = n2.next_own_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(offer["runner_id"], resumed.to_string());
    assert_eq!(offer["session_id"], session_2.as_str());
    assert_eq!(offer["resume"], true);
    wait_orchestrator_idle(&env).await;
    stop_all(env, shutdowns).await;
}
