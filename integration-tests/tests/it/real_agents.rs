//! The real agent CLIs (installed from npm at pinned versions by
//! provisioning) run through their profiles by a real supervisor, with no
//! credentials and no network, as a fresh machine has them: Claude Code
//! fails with its own words, Codex retries its connection until its stall
//! timeout or a stop ends it, OpenCode prints nothing until its stall
//! timeout ends it. A CLI that is not installed fails the test (never a
//! skip): `make test` provisions them first.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions, marked_processes};
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// A node whose supervisor finds the installed CLIs on its PATH, runs them
/// in an empty home (no login, no earlier sessions), and whose `profile`
/// stalls after `stall_ms` without progress.
async fn real_node(profile: &str, stall_ms: u64) -> Node {
    let bin_dir = stratavore_testkit::agent_cli("claude")
        .parent()
        .expect("the CLI's folder")
        .to_path_buf();
    for cli in ["claude", "codex", "opencode"] {
        assert!(
            bin_dir.join(cli).exists(),
            "{cli} is not installed in {}",
            bin_dir.display()
        );
    }
    let home = std::env::temp_dir().join(format!("real-agent-home-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let key = |name: &str| format!("STRATAVORE__PROFILES__{}__{name}", profile.to_uppercase());
    Node::start_with(NodeOptions {
        supervisor_env: vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), home.to_string_lossy().into_owned()),
            (key("STALL_TIMEOUT_MS"), stall_ms.to_string()),
            // Stops are graceful first; the CLIs exit on SIGTERM quickly.
            (
                "STRATAVORE__NODE__TERM_GRACE_MS".to_owned(),
                "3000".to_owned(),
            ),
        ],
        ..NodeOptions::default()
    })
    .await
}

/// The runner as the API shows it: (state, session_id, last_error).
async fn api_runner(node: &Node, runner: Uuid) -> Option<(String, Option<String>, Option<String>)> {
    let pool = node.env.db.admin_pool().await.unwrap();
    let row = sqlx::query_as(
        "SELECT state, session_id, last_error FROM gateway.runners WHERE runner_id = $1",
    )
    .bind(runner)
    .fetch_optional(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

/// Wait until the API shows the runner satisfying `check`.
async fn wait_api(
    node: &Node,
    runner: Uuid,
    what: &str,
    check: impl Fn(&(String, Option<String>, Option<String>)) -> bool,
) -> (String, Option<String>, Option<String>) {
    let outcome = wait_until(what, LAUNCH_WITHIN, || async {
        Ok(api_runner(node, runner).await.filter(|r| check(r)))
    })
    .await;
    match outcome {
        Ok(row) => row,
        Err(e) => panic!(
            "{e}; the runner is {:?}; log {}",
            api_runner(node, runner).await,
            node.supervisor.log_path().display()
        ),
    }
}

/// The payloads of the process events of type `name` of attempt 1.
async fn events_of(node: &Node, runner: Uuid, name: &str) -> Vec<serde_json::Value> {
    let wanted = format!("io.stratavore.process.{name}.v1");
    node.process_events(runner)
        .await
        .into_iter()
        .filter(|(t, _)| *t == wanted)
        .map(|(_, data)| data)
        .collect()
}

/// Every process in the tree under `root` (itself included), from /proc.
fn tree(root: i32) -> Vec<i32> {
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            all.iter()
                .copied()
                .filter(|p| parent_of(*p) == Some(parent)),
        );
        i += 1;
    }
    found
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn transcript_lines(node: &Node, runner: Uuid) -> Vec<serde_json::Value> {
    std::fs::read_to_string(node.transcript(runner, 1))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_real_agents_claude_code_with_no_login_fails_with_its_own_words_and_session() {
    let node = real_node("claude-code", 600_000).await;
    let runner = Uuid::now_v7();
    node.launch_profile(runner, "claude-code", "say hello", 0)
        .await;
    let (_, session, error) =
        wait_api(&node, runner, "the runner to fail", |r| r.0 == "failed").await;

    // The session id is the one the CLI printed in its init line.
    let printed = transcript_lines(&node, runner)
        .into_iter()
        .find(|v| v["type"] == "system" && v["subtype"] == "init")
        .and_then(|v| v["session_id"].as_str().map(str::to_owned))
        .expect("Claude Code printed its init line");
    assert_eq!(session.as_deref(), Some(printed.as_str()));
    let started = events_of(&node, runner, "session_started").await;
    assert_eq!(started[0]["session_id"], printed.as_str());

    // The reason is the CLI's own text, from its result line.
    let result_text = transcript_lines(&node, runner)
        .into_iter()
        .find(|v| v["type"] == "result")
        .and_then(|v| v["result"].as_str().map(str::to_owned))
        .expect("Claude Code printed a result");
    assert!(result_text.contains("Not logged in"), "{result_text}");
    assert_eq!(error.as_deref(), Some(result_text.as_str()));
    let exited = events_of(&node, runner, "exited").await;
    assert_eq!(exited[0]["outcome"], "failed");
    assert_eq!(exited[0]["code"], 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_real_agents_codex_offline_shows_its_thread_and_error_stalls_despite_retries_and_stops_clean()
 {
    const STALL_MS: u64 = 12_000;
    let node = real_node("codex", STALL_MS).await;

    // While it runs: its thread id is the session, its network error the
    // last error.
    let first = Uuid::now_v7();
    node.launch_profile(first, "codex", "say hello", 0).await;
    let thread = wait_until("codex's thread id", LAUNCH_WITHIN, || async {
        Ok(events_of(&node, first, "session_started")
            .await
            .first()
            .and_then(|e| e["session_id"].as_str().map(str::to_owned)))
    })
    .await
    .unwrap();
    let printed = transcript_lines(&node, first)
        .into_iter()
        .find(|v| v["type"] == "thread.started")
        .and_then(|v| v["thread_id"].as_str().map(str::to_owned));
    assert_eq!(printed.as_deref(), Some(thread.as_str()));
    let (state, session, error) = wait_api(&node, first, "the network error while running", |r| {
        r.1.as_deref() == Some(thread.as_str()) && r.2.is_some()
    })
    .await;
    assert_eq!(state, "running");
    let error = error.unwrap();
    let errors = events_of(&node, first, "error_reported").await;
    assert!(
        errors.iter().any(|e| e["message"] == error.as_str()),
        "{error:?} is not one of the CLI's error lines {errors:?}"
    );
    assert_eq!(session.as_deref(), Some(thread.as_str()));

    // Stop: nothing of its tree remains.
    let shim = node.pid_file(first, 1, "shim.pid").await;
    let running = tree(shim);
    assert!(
        running.len() >= 2,
        "the shim and codex at least: {running:?}"
    );
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: first,
        want: Want::Stopped,
    }))
    .await;
    node.wait_runner(first, "exited").await;
    let survivors: Vec<i32> = running.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "left running after the stop: {survivors:?}"
    );
    assert!(marked_processes(&node.node).is_empty());

    // A second run is ended by its stall timeout, although its retry lines
    // keep coming all along.
    let second = Uuid::now_v7();
    node.launch_profile(second, "codex", "say hello", 0).await;
    let (_, _, error) = wait_api(&node, second, "the stall to fail it", |r| r.0 == "failed").await;
    let error = error.unwrap();
    assert!(error.starts_with("stalled: no progress"), "{error}");
    let stalled = events_of(&node, second, "stalled").await;
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    assert!(stalled[0]["idle_ms"].as_u64().unwrap() >= STALL_MS);
    assert_eq!(stalled[0]["policy"], "stop");
    let events = node.process_events(second).await;
    let stall_at = events
        .iter()
        .position(|(t, _)| t.ends_with("process.stalled.v1"))
        .unwrap();
    let retries_before = events[..stall_at]
        .iter()
        .filter(|(t, _)| t.ends_with("process.error_reported.v1"))
        .count();
    assert!(
        retries_before >= 2,
        "codex printed {retries_before} retry lines before the stall; the test shows nothing"
    );
    assert_eq!(events.last().unwrap().1["outcome"], "stalled");
    assert!(marked_processes(&node.node).is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_real_agents_opencode_offline_is_ended_by_its_stall_timeout_saying_why() {
    const STALL_MS: u64 = 6_000;
    let node = real_node("opencode", STALL_MS).await;
    let runner = Uuid::now_v7();
    node.launch_profile(runner, "opencode", "say hello", 0)
        .await;
    node.wait_runner(runner, "running").await;
    let (_, _, error) = wait_api(&node, runner, "the stall to fail it", |r| r.0 == "failed").await;
    let error = error.unwrap();
    assert!(error.starts_with("stalled: no progress"), "{error}");
    assert!(error.contains("stall timeout"), "{error}");
    let stalled = events_of(&node, runner, "stalled").await;
    assert!(stalled[0]["idle_ms"].as_u64().unwrap() >= STALL_MS);
    assert!(marked_processes(&node.node).is_empty());
    node.stop().await;
}
