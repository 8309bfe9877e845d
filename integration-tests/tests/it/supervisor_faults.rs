//! A real supervisor node under faults: pauses and late commands, agents
//! that leave grandchildren behind, a supervisor killed or frozen past its
//! lease, usage across a restart. Every test here signals processes or
//! shortens timings, so all are `serial_`.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions, of_type};
use std::collections::BTreeMap;
use std::time::Duration;
use stratavore_events::Message;
use stratavore_events::process::{DesiredState, ProcessCommand, address};
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_store::NewEntry;
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// A liveness TTL short enough that a test outlives its leases (half of
/// it), long enough that a busy machine's heartbeats (every tenth of it)
/// renew them in time.
const SHORT_TTL_MS: u64 = 3000;

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...), None
/// once the pid is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces: the state follows
    // the last closing parenthesis.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether a pid still runs: a zombie is dead, only not yet reaped (a
/// shim whose supervisor died is reaped by whoever adopted it).
fn runs(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// Wait until every pid of `pids` satisfies `check` on its state.
async fn wait_states(what: &str, pids: &[i32], check: impl Fn(Option<char>) -> bool) {
    let states = || {
        pids.iter()
            .map(|p| (*p, proc_state(*p)))
            .collect::<BTreeMap<_, _>>()
    };
    let outcome = wait_until(what, LAUNCH_WITHIN, || {
        let all = pids.iter().all(|p| check(proc_state(*p)));
        async move { Ok(all.then_some(())) }
    })
    .await;
    assert!(outcome.is_ok(), "{outcome:?}; states {:?}", states());
}

/// Signal a process through `kill(1)`, so the test needs no FFI of its own.
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The agent and its three grandchildren (plain, `setsid`, `env -i`).
async fn agent_tree(node: &Node, runner: Uuid, attempt: u32) -> Vec<i32> {
    let mut pids = vec![node.pid_file(runner, attempt, "agent.pid").await];
    let grandchildren = node.grandchildren(runner, attempt).await;
    assert_eq!(grandchildren.len(), 3, "{grandchildren:?}");
    pids.extend(grandchildren);
    pids
}

/// Runs long, with grandchildren, taking a turn every 200 ms.
const LONG_WITH_GRANDCHILDREN: &str =
    r#"sim:{"grandchildren":true,"run_for_ms":120000,"turn_delay_ms":200}"#;

async fn control(node: &Node, runner: Uuid, want: Want) {
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want,
    }))
    .await;
}

/// The desired states the orchestrator sent for `runner`, oldest first.
async fn desired_states_sent(node: &Node, runner: Uuid) -> Vec<DesiredState> {
    let pool = node.env.db.admin_pool().await.unwrap();
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT data FROM orchestrator.log
         WHERE type = 'io.stratavore.command.process.control.v1' AND data->>'runner_id' = $1
         ORDER BY position",
    )
    .bind(runner.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|d| serde_json::from_value(d).unwrap())
        .collect()
}

/// Wait until the supervisor applied the message `id` from its inbox.
async fn wait_applied(node: &Node, id: Uuid) {
    let pool = node.env.db.admin_pool().await.unwrap();
    wait_until("the late command to be applied", LAUNCH_WITHIN, || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM supervisor.inbox WHERE message_id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await?;
        Ok(status.filter(|s| s == "applied").map(|_| ()))
    })
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_faults_pause_and_resume_reach_the_whole_tree_and_a_late_pause_changes_nothing()
 {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, LONG_WITH_GRANDCHILDREN).await;
    node.wait_runner(runner, "running").await;
    let tree = agent_tree(&node, runner, 1).await;

    control(&node, runner, Want::Paused).await;
    wait_states("the tree to stop", &tree, |s| s == Some('T')).await;
    control(&node, runner, Want::Running).await;
    wait_states("the tree to continue", &tree, |s| {
        s.is_some_and(|s| s != 'T' && s != 'Z')
    })
    .await;

    // The pause again, late: a redelivery or a reordering on the way.
    let sent = desired_states_sent(&node, runner).await;
    let wants: Vec<Want> = sent.iter().map(|d| d.want).collect();
    assert_eq!(wants, [Want::Paused, Want::Running], "{sent:?}");
    assert!(sent[0].rev < sent[1].rev, "{sent:?}");
    let late = ProcessCommand::Control(sent[0].clone());
    let id = Uuid::now_v7();
    let mut entry = NewEntry::of(
        &late,
        session_orchestrator::handlers::SOURCE,
        format!("late-control-{id}"),
        1,
        runner.to_string(),
        chrono::Utc::now(),
    );
    entry.envelope.id = id;
    entry.routing_key = address(&late.routing_key(), &node.node);
    node.publish(entry).await;
    wait_applied(&node, id).await;
    // Several scans of the watcher: a pause it wrongly applied shows by now.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let states: Vec<_> = tree.iter().map(|p| proc_state(*p)).collect();
        assert!(
            states.iter().all(|s| s.is_some_and(|s| s != 'T')),
            "a stale pause was applied: {states:?}"
        );
    }
    let pool = node.env.db.admin_pool().await.unwrap();
    let (rev, want): (i64, String) = sqlx::query_as(
        "SELECT rev, want FROM supervisor.desired_states WHERE runner_id = $1 AND attempt = 1",
    )
    .bind(runner)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!((rev, want.as_str()), (sent[1].rev as i64, "running"));

    control(&node, runner, Want::Killed).await;
    node.wait_process_event(runner, 1, "exited").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_faults_an_agent_that_exits_leaves_none_of_its_grandchildren_running() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"grandchildren":true,"turns":1}"#)
        .await;
    node.wait_process_event(runner, 1, "exited").await;

    let grandchildren = node.grandchildren(runner, 1).await;
    assert_eq!(grandchildren.len(), 3, "{grandchildren:?}");
    let left: Vec<_> = grandchildren
        .iter()
        .filter_map(|p| proc_state(*p).map(|s| (*p, s)))
        .collect();
    assert!(
        left.is_empty(),
        "grandchildren outlived the agent: {left:?}"
    );
    let events = node.process_events(runner).await;
    assert_eq!(of_type(&events, "exited")[0]["outcome"], "succeeded");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_faults_a_supervisor_killed_past_the_lease_leaves_nothing_running_and_the_runner_restarts()
 {
    let mut node = Node::start_with(NodeOptions {
        ttl_ms: Some(SHORT_TTL_MS),
        restart_base_ms: Some(200),
        ..NodeOptions::default()
    })
    .await;
    let runner = Uuid::now_v7();
    node.launch_with(runner, LONG_WITH_GRANDCHILDREN, 1).await;
    node.wait_runner(runner, "running").await;
    let tree = agent_tree(&node, runner, 1).await;
    let shim = node.pid_file(runner, 1, "shim.pid").await;

    node.supervisor.kill9().await.unwrap();
    // Nobody renews the lease now: the shim ends the tree by itself.
    wait_states("the runner's processes to be gone", &tree, |s| s.is_none()).await;
    wait_states("the shim to end", &[shim], |s| s.is_none_or(|s| s == 'Z')).await;
    assert!(tree.iter().chain([&shim]).all(|p| !runs(*p)));

    node.supervisor.restart().await.unwrap();
    node.wait_process_event(runner, 1, "exited").await;
    let events = node.process_events(runner).await;
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{events:?}");
    assert_eq!(exited[0]["reason"], "supervisor_restart");
    node.wait_attempt(runner, 2, "running").await;
    let second = agent_tree(&node, runner, 2).await;
    assert!(second.iter().all(|p| runs(*p)), "attempt 2 runs");

    control(&node, runner, Want::Killed).await;
    node.wait_process_event(runner, 2, "exited").await;
    node.stop().await;
}

/// Tokens per assistant message in a transcript: the largest value seen
/// per `message.id`, summed (the fold the contract describes).
fn transcript_tokens(text: &str) -> BTreeMap<&'static str, u64> {
    let mut per_message: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if value["type"] != "assistant" {
            continue;
        }
        let message = &value["message"];
        let counts = per_message
            .entry(message["id"].as_str().unwrap().to_owned())
            .or_default();
        for field in ["input_tokens", "output_tokens"] {
            let seen = message["usage"][field].as_u64().unwrap_or(0);
            let kept = counts.entry(field).or_insert(0);
            *kept = (*kept).max(seen);
        }
    }
    let mut total = BTreeMap::new();
    for counts in per_message.values() {
        for (field, n) in counts {
            *total.entry(*field).or_insert(0) += n;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_faults_usage_read_before_and_after_a_supervisor_restart_is_counted_once()
{
    let mut node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"turns":200,"turn_delay_ms":100}"#)
        .await;
    node.wait_runner(runner, "running").await;
    let pool = node.env.db.admin_pool().await.unwrap();
    let stream = format!("process-{runner}-1");
    wait_until("a few turns billed", LAUNCH_WITHIN, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM supervisor.log
             WHERE stream = $1 AND type = 'io.stratavore.process.usage_reported.v1'",
        )
        .bind(&stream)
        .fetch_one(&pool)
        .await?;
        Ok((n >= 3).then_some(()))
    })
    .await
    .unwrap();

    node.supervisor.kill9().await.unwrap();
    node.supervisor.restart().await.unwrap();
    node.wait_process_event(runner, 1, "exited").await;

    let events = node.process_events(runner).await;
    assert_eq!(
        of_type(&events, "exited")[0]["reason"],
        "supervisor_restart"
    );
    let usage = of_type(&events, "usage_reported");
    let billed = |field: &str| -> u64 { usage.iter().map(|u| u[field].as_u64().unwrap()).sum() };
    let transcript = std::fs::read_to_string(node.transcript(runner, 1)).unwrap();
    let held = transcript_tokens(&transcript);
    assert!(usage.len() >= 3, "{usage:?}");
    assert_eq!(billed("input_tokens"), held["input_tokens"]);
    assert_eq!(billed("output_tokens"), held["output_tokens"]);
    let turns: Vec<u64> = usage.iter().map(|u| u["turn"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=turns.len() as u64).collect();
    assert_eq!(turns, expected, "each turn billed once, in order");

    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT stream_version FROM supervisor.log WHERE stream = $1 ORDER BY position",
    )
    .bind(&stream)
    .fetch_all(&pool)
    .await
    .unwrap();
    let gapless: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, gapless, "one event per version, none twice");
    pool.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_faults_a_supervisor_frozen_past_the_lease_has_its_agents_ended_by_their_shims()
 {
    let node = Node::start_with(NodeOptions {
        ttl_ms: Some(SHORT_TTL_MS),
        ..NodeOptions::default()
    })
    .await;
    let runner = Uuid::now_v7();
    node.launch(runner, LONG_WITH_GRANDCHILDREN).await;
    node.wait_runner(runner, "running").await;
    let tree = agent_tree(&node, runner, 1).await;
    let supervisor = node.supervisor.pid().unwrap();

    signal(supervisor, "STOP");
    wait_states("the runner's processes to be gone", &tree, |s| s.is_none()).await;
    // The shims' lease ran out from the last confirm they were given; a
    // heartbeat published just before the freeze can be confirmed after the
    // thaw and count for up to half a TTL more. Stay frozen past that too,
    // so the node is sure to find its last confirm older than half the TTL.
    tokio::time::sleep(Duration::from_millis(SHORT_TTL_MS / 2 + 500)).await;
    signal(supervisor, "CONT");

    // Thawed, its last confirmed heartbeat is older than half the TTL: it
    // ends that incarnation and registers again, and the attempt's end is
    // recorded (by the old incarnation's watcher if it looked first, else
    // by the registration).
    node.wait_registrations(2).await;
    node.wait_process_event(runner, 1, "exited").await;
    let events = node.process_events(runner).await;
    let reason = of_type(&events, "exited")[0]["reason"].clone();
    assert!(
        reason == "lease_expired" || reason == "supervisor_restart",
        "{reason}"
    );
    node.stop().await;
}
