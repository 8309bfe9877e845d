//! Liveness across real supervisor nodes: a node frozen past the TTL has
//! its agents ended by their own leases before the orchestrator relaunches
//! anything elsewhere, so at no instant do two agents run for one runner;
//! thawed, it registers again before it renews anything.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions, ttl_env};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const TTL_MS: u64 = 3000;

/// Hangs before any turn: its session is never bound, so a lost node's
/// runner is relaunched elsewhere.
const HANG_UNBOUND: &str = r#"sim:{"turns":0,"hang":true} wait"#;

/// Attempts of `runner` with a live (not zombie) process, from the marks
/// every agent carries in its environment.
fn live_attempts(runner: Uuid) -> BTreeSet<String> {
    let prefix = format!("STRATAVORE_RUNNER={runner}:");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| !r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .filter_map(|item| std::str::from_utf8(item).ok())
                .find_map(|item| item.strip_prefix(prefix.as_str()).map(str::to_owned))
        })
        .collect()
}

/// The lease file of `runner`'s first attempt, on whichever node ran it.
fn lease_file(node: &Node, runner: Uuid) -> std::path::PathBuf {
    std::fs::read_dir(&node.scratch)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("runners")
                .join(runner.to_string())
                .join("1/lease")
        })
        .find(|p| p.exists())
        .expect("the first attempt's lease file")
}

async fn runner_row(node: &Node, runner: Uuid) -> (String, i32, Option<String>) {
    let pool = node.env.db.admin_pool().await.unwrap();
    let row = sqlx::query_as(
        "SELECT state, attempt, node FROM orchestrator.runners WHERE runner_id = $1",
    )
    .bind(runner)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_node_faults_a_frozen_nodes_agents_die_by_their_leases_before_a_relaunch_elsewhere()
{
    let capacity = |n: u32| ("STRATAVORE__NODE__CAPACITY".to_owned(), n.to_string());
    let mut cluster = Node::start_with(NodeOptions {
        supervisor_env: vec![capacity(1)],
        ttl_ms: Some(TTL_MS),
        liveness_grace_ms: Some(1000),
        ..NodeOptions::default()
    })
    .await;
    let root = cluster.root.clone();
    let mut env = ttl_env(TTL_MS);
    env.push(capacity(1));
    cluster.add_node(&[root], env).await;

    let runner = Uuid::now_v7();
    cluster.launch(runner, HANG_UNBOUND).await;
    cluster.wait_runner(runner, "running").await;
    let (_, _, placed) = runner_row(&cluster, runner).await;
    let frozen = placed.expect("placed on a node");
    let agent = cluster.pid_file_anywhere(runner).await;
    let supervisor = cluster.supervisor_of(&frozen).pid().unwrap();
    let registered = cluster.registrations_of(&frozen).await;

    signal(supervisor, "STOP");
    let frozen_at = Instant::now();
    let mut agent_gone_at = None;
    let relaunched_at;
    loop {
        let attempts = live_attempts(runner);
        assert!(
            attempts.len() <= 1,
            "two attempts' agents at once: {attempts:?}"
        );
        if agent_gone_at.is_none()
            && std::fs::read_to_string(format!("/proc/{agent}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        {
            agent_gone_at = Some(frozen_at.elapsed());
        }
        let (state, attempt, _) = runner_row(&cluster, runner).await;
        if attempt >= 2 {
            relaunched_at = frozen_at.elapsed();
            assert_ne!(state, "lost", "an unbound session is relaunched");
            break;
        }
        assert!(
            frozen_at.elapsed() < LAUNCH_WITHIN,
            "no relaunch; state {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent_gone_at = agent_gone_at.expect("the frozen node's agent died before the relaunch");
    assert!(
        agent_gone_at < relaunched_at,
        "agent gone at {agent_gone_at:?}, relaunched at {relaunched_at:?}"
    );
    // The lease (half the TTL) ended it, well before the node was lost.
    assert!(
        agent_gone_at < Duration::from_millis(TTL_MS),
        "{agent_gone_at:?}"
    );

    // The relaunch runs on the other node, alone.
    cluster.wait_attempt(runner, 2, "running").await;
    let (_, _, now_on) = runner_row(&cluster, runner).await;
    assert_ne!(now_on.as_deref(), Some(frozen.as_str()));
    let watch_until = Instant::now() + Duration::from_secs(2);

    // Thawed, the frozen node registers again before anything else: the
    // lease of its old attempt is never written again.
    let lease = lease_file(&cluster, runner);
    let lease_before = std::fs::metadata(&lease).and_then(|m| m.modified()).ok();
    signal(supervisor, "CONT");
    while Instant::now() < watch_until || cluster.registrations_of(&frozen).await <= registered {
        let attempts = live_attempts(runner);
        assert!(
            attempts.len() <= 1,
            "two attempts' agents at once: {attempts:?}"
        );
        assert!(
            Instant::now() < watch_until + LAUNCH_WITHIN,
            "it never registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live_attempts(runner), BTreeSet::from(["2".to_owned()]));
    let lease_after = std::fs::metadata(&lease).and_then(|m| m.modified()).ok();
    assert_eq!(lease_before, lease_after, "a fenced node renewed a lease");
    cluster
        .send(&stratavore_events::runner::RunnerCommand::Control(
            stratavore_events::runner::ControlRunner {
                runner_id: runner,
                want: stratavore_events::runner::Want::Killed,
            },
        ))
        .await;
    cluster.stop().await;
}
