//! Several supervisor nodes on one stack, each a process with its own HOME,
//! data folder and served roots: offers reach only the nodes that serve the
//! project's root and spread over them, a node at capacity or draining
//! takes none, and control reaches the node that runs the runner.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use stratavore_events::process::{DrainNode, NodeCommand};
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// Runs until stopped, taking a turn every half second.
const LONG: &str = r#"sim:{"run_for_ms":120000,"turn_delay_ms":500} keep going"#;

fn capacity(n: u32) -> Vec<(String, String)> {
    vec![("STRATAVORE__NODE__CAPACITY".to_owned(), n.to_string())]
}

/// The node each runner is placed on, by the orchestrator's projection.
async fn placements(node: &Node, runners: &[Uuid]) -> BTreeMap<Uuid, Option<String>> {
    let pool = node.env.db.admin_pool().await.unwrap();
    let mut out = BTreeMap::new();
    for r in runners {
        let placed: Option<String> =
            sqlx::query_scalar("SELECT node FROM orchestrator.runners WHERE runner_id = $1")
                .bind(r)
                .fetch_one(&pool)
                .await
                .unwrap();
        out.insert(*r, placed);
    }
    pool.close().await;
    out
}

fn count_on(placed: &BTreeMap<Uuid, Option<String>>, node: &str) -> usize {
    placed
        .values()
        .filter(|n| n.as_deref() == Some(node))
        .count()
}

async fn control(node: &Node, runner: Uuid, want: Want) {
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want,
    }))
    .await;
}

async fn state_of(node: &Node, runner: Uuid) -> String {
    let pool = node.env.db.admin_pool().await.unwrap();
    let state: String =
        sqlx::query_scalar("SELECT state FROM orchestrator.runners WHERE runner_id = $1")
            .bind(runner)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_multi_node_offers_spread_over_the_roots_nodes_and_a_full_node_takes_none() {
    let mut cluster = Node::start_with(NodeOptions {
        supervisor_env: capacity(2),
        ..NodeOptions::default()
    })
    .await;
    let a = cluster.node.clone();
    let root = cluster.root.clone();
    let b = cluster.add_node(&[root], capacity(2)).await;
    let other = cluster.other_root();
    let c = cluster.add_node(&[other], capacity(4)).await;

    let runners: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    for r in &runners {
        cluster.launch(*r, LONG).await;
    }
    for r in &runners {
        cluster.wait_runner(*r, "running").await;
    }
    let placed = placements(&cluster, &runners).await;
    assert_eq!(count_on(&placed, &a), 2, "{placed:?}");
    assert_eq!(count_on(&placed, &b), 2, "{placed:?}");
    assert_eq!(
        count_on(&placed, &c),
        0,
        "C serves another root: {placed:?}"
    );

    // Both nodes of the root are full: a fifth waits, placed nowhere.
    let fifth = Uuid::now_v7();
    cluster.launch(fifth, LONG).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&cluster, fifth).await, "starting");
    assert_eq!(placements(&cluster, &[fifth]).await[&fifth], None);

    // A slot frees on A: the fifth runs there.
    let on_a = *placed
        .iter()
        .find(|(_, n)| n.as_deref() == Some(a.as_str()))
        .unwrap()
        .0;
    control(&cluster, on_a, Want::Stopped).await;
    cluster.wait_runner(on_a, "exited").await;
    cluster.wait_runner(fifth, "running").await;
    assert_eq!(
        placements(&cluster, &[fifth]).await[&fifth].as_deref(),
        Some(a.as_str())
    );
    for r in runners.iter().chain([&fifth]) {
        control(&cluster, *r, Want::Killed).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_multi_node_a_draining_node_takes_no_offers_and_lets_its_runner_finish() {
    let mut cluster = Node::start_with(NodeOptions {
        supervisor_env: capacity(4),
        ..NodeOptions::default()
    })
    .await;
    let a = cluster.node.clone();
    let root = cluster.root.clone();
    let b = cluster.add_node(&[root], capacity(4)).await;

    // Runners until B holds one that runs a while.
    let mut on_b = None;
    let mut launched = Vec::new();
    while on_b.is_none() {
        assert!(launched.len() < 8, "no runner ever went to B");
        let r = Uuid::now_v7();
        cluster
            .launch(r, r#"sim:{"run_for_ms":6000,"turn_delay_ms":300} a while"#)
            .await;
        cluster.wait_runner(r, "running").await;
        launched.push(r);
        if placements(&cluster, &[r]).await[&r].as_deref() == Some(b.as_str()) {
            on_b = Some(r);
        }
    }
    let on_b = on_b.unwrap();
    // The others go, so the project's quota (5) has room for three more.
    for r in launched.iter().filter(|r| **r != on_b) {
        control(&cluster, *r, Want::Killed).await;
        cluster.wait_runner(*r, "exited").await;
    }

    cluster
        .send_command(&NodeCommand::Drain(DrainNode {
            node: b.clone(),
            draining: true,
        }))
        .await;
    let pool = cluster.env.db.admin_pool().await.unwrap();
    wait_until("B to drain", LAUNCH_WITHIN, || async {
        let draining: Option<bool> =
            sqlx::query_scalar("SELECT draining FROM supervisor.node_drain WHERE node = $1")
                .bind(&b)
                .fetch_optional(&pool)
                .await?;
        Ok(draining.filter(|d| *d).map(|_| ()))
    })
    .await
    .unwrap();
    pool.close().await;
    // B's consumers close at its next scan.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let after: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for r in &after {
        cluster.launch(*r, LONG).await;
    }
    for r in &after {
        cluster.wait_runner(*r, "running").await;
    }
    let placed = placements(&cluster, &after).await;
    assert_eq!(
        count_on(&placed, &a),
        3,
        "a draining node took an offer: {placed:?}"
    );
    // Its own runner finishes by itself.
    cluster.wait_runner(on_b, "exited").await;
    for r in &after {
        control(&cluster, *r, Want::Killed).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_multi_node_control_reaches_the_runners_own_node_in_order() {
    let mut cluster = Node::start_with(NodeOptions {
        supervisor_env: capacity(1),
        ..NodeOptions::default()
    })
    .await;
    let root = cluster.root.clone();
    cluster.add_node(&[root], capacity(1)).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    cluster.launch(first, LONG).await;
    cluster.launch(second, LONG).await;
    cluster.wait_runner(first, "running").await;
    cluster.wait_runner(second, "running").await;
    let placed = placements(&cluster, &[first, second]).await;
    assert_ne!(
        placed[&first], placed[&second],
        "one per node at capacity 1"
    );

    // A pause followed at once by a resume ends running, on its node.
    control(&cluster, second, Want::Paused).await;
    control(&cluster, second, Want::Running).await;
    let pid = cluster.pid_file_anywhere(second).await;
    wait_until("the resume to be applied", LAUNCH_WITHIN, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('T'));
        Ok((running && state_of(&cluster, second).await == "running").then_some(()))
    })
    .await
    .unwrap();
    // A stop of the other reaches only it.
    control(&cluster, first, Want::Stopped).await;
    cluster.wait_runner(first, "exited").await;
    assert_eq!(state_of(&cluster, second).await, "running");
    control(&cluster, second, Want::Killed).await;
    cluster.wait_runner(second, "exited").await;
    cluster.stop().await;
}

/// The orchestrator's runner row: (state, session, node, last error).
async fn runner_row(node: &Node, runner: Uuid) -> (String, String, Option<String>, Option<String>) {
    let pool = node.env.db.admin_pool().await.unwrap();
    let row = sqlx::query_as(
        "SELECT state, session_id, node, snapshot->>'last_error'
         FROM orchestrator.runners WHERE runner_id = $1",
    )
    .bind(runner)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

async fn resume(node: &Node, runner: Uuid, session: &str) {
    node.send(&RunnerCommand::Launch(
        stratavore_events::runner::LaunchRunner {
            runner_id: runner,
            project: "web".into(),
            profile: "demo".into(),
            prompt: r#"sim:{"turns":1} go on"#.into(),
            mode: stratavore_events::runner::LaunchMode::Resume,
            session_id: Some(session.to_owned()),
            model: None,
            permission: None,
            allowed_tools: None,
            max_restarts: Some(0),
        },
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_multi_node_a_resume_goes_to_the_node_holding_the_session_and_is_refused_once_it_is_lost()
 {
    let mut cluster = Node::start_with(NodeOptions {
        ttl_ms: Some(3000),
        liveness_grace_ms: Some(1000),
        ..NodeOptions::default()
    })
    .await;
    let root = cluster.root.clone();
    cluster
        .add_node(&[root], crate::supervisor_e2e::ttl_env(3000))
        .await;

    let first = Uuid::now_v7();
    cluster.launch(first, r#"sim:{"turns":1} start"#).await;
    cluster.wait_runner(first, "exited").await;
    let (_, session, holder, _) = runner_row(&cluster, first).await;
    let holder = holder.expect("placed");

    // Every resume runs where the session's files are (the simulated
    // agent, like the real CLIs, keeps them under the node's HOME: a resume
    // elsewhere would fail to find them).
    for _ in 0..3 {
        let again = Uuid::now_v7();
        resume(&cluster, again, &session).await;
        cluster.wait_runner(again, "exited").await;
        let (_, resumed, on, error) = runner_row(&cluster, again).await;
        assert_eq!(resumed, session);
        assert_eq!(on.as_deref(), Some(holder.as_str()));
        assert_eq!(error, None, "the resume found its session");
    }

    // The holder dies and stays down: once it is lost, a resume is refused
    // and nothing is offered.
    cluster.supervisor_of(&holder).kill9().await.unwrap();
    let pool = cluster.env.db.admin_pool().await.unwrap();
    wait_until("the holder to be lost", LAUNCH_WITHIN, || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM orchestrator.nodes WHERE node = $1")
                .bind(&holder)
                .fetch_optional(&pool)
                .await?;
        Ok(state.filter(|s| s == "lost").map(|_| ()))
    })
    .await
    .unwrap();
    let refused = Uuid::now_v7();
    resume(&cluster, refused, &session).await;
    let reason = wait_until("the resume to be decided", LAUNCH_WITHIN, || async {
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT data->>'reason' FROM orchestrator.log
             WHERE type = 'io.stratavore.runner.launch_rejected.v1'
               AND data->>'runner_id' = $1",
        )
        .bind(refused.to_string())
        .fetch_optional(&pool)
        .await?;
        Ok(reason)
    })
    .await
    .unwrap();
    let offers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log
         WHERE type = 'io.stratavore.command.process.offer.v1' AND data->>'runner_id' = $1",
    )
    .bind(refused.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(reason, "session_node_lost");
    assert_eq!(offers, 0, "nothing offered");
    // Back, it registers again (and can be stopped cleanly).
    let before = cluster.registrations_of(&holder).await;
    cluster.supervisor_of(&holder).restart().await.unwrap();
    while cluster.registrations_of(&holder).await <= before {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop().await;
}
