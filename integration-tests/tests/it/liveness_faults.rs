//! Liveness when links fail rather than processes (Runners 3), with real
//! supervisor nodes and a TTL of 3 s: a node cut off from the broker has
//! its agents ended by their leases before it is declared lost, and when
//! the cut heals it registers again and honours nothing it was sent before;
//! an orchestrator replica cut off from the broker convicts no one; and a
//! stopped relay does not stop the orchestrator from finding the one node
//! that died.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions, marked_processes, ttl_env};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_testkit::broker::shared_amqp_url;
use stratavore_testkit::{CutMode, TcpProxy, wait_until};
use uuid::Uuid;

const TTL_MS: u64 = 3000;
/// The orchestrator's grace: K = 12 ticks of 300 ms, so a node is lost
/// 3.3-3.6 s after its last heartbeat reached a replica.
const GRACE_MS: u64 = 300;
const LOST: &str = "io.stratavore.node.lost.v1";

/// Hangs before any turn: its session is never bound, so a lost node's
/// runner is relaunched elsewhere.
const HANG_UNBOUND: &str = r#"sim:{"turns":0,"hang":true} wait"#;
/// Saves a first turn (binding its session: a turn ends when the next
/// begins), then hangs deaf to SIGTERM.
const HANG_BOUND_DEAF: &str = r#"sim:{"turns":2,"hang":true,"ignore_sigterm":true} wait"#;

fn options(supervisor_env: Vec<(String, String)>) -> NodeOptions {
    NodeOptions {
        supervisor_env,
        ttl_ms: Some(TTL_MS),
        liveness_grace_ms: Some(GRACE_MS),
        ..NodeOptions::default()
    }
}

fn capacity(n: u32) -> (String, String) {
    ("STRATAVORE__NODE__CAPACITY".to_owned(), n.to_string())
}

/// A proxy in front of the shared broker, and the broker URL through it.
async fn broker_proxy() -> (TcpProxy, String) {
    TcpProxy::for_url(&shared_amqp_url()).await.unwrap()
}

/// What one look at /proc found: the attempts of each runner with a live
/// (not zombie) process, and how many live processes carry each node's
/// mark; `at` is taken after the look, so whatever it did not find was
/// gone by then.
#[derive(Debug)]
struct ProcSample {
    at: DateTime<Utc>,
    attempts: BTreeMap<String, BTreeSet<String>>,
    marked: BTreeMap<String, usize>,
}

fn look_at_proc() -> ProcSample {
    let mut attempts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut marked: BTreeMap<String, usize> = BTreeMap::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    for pid in pids {
        let live = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| !r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !live {
            continue;
        }
        for item in environ.split(|b| *b == 0) {
            let Ok(item) = std::str::from_utf8(item) else {
                continue;
            };
            if let Some(mark) = item.strip_prefix("STRATAVORE_RUNNER=")
                && let Some((runner, attempt)) = mark.rsplit_once(':')
            {
                attempts
                    .entry(runner.to_owned())
                    .or_default()
                    .insert(attempt.to_owned());
            }
            if let Some(node) = item.strip_prefix("STRATAVORE_NODE=") {
                *marked.entry(node.to_owned()).or_default() += 1;
            }
        }
    }
    ProcSample {
        at: Utc::now(),
        attempts,
        marked,
    }
}

/// Looks at /proc every 20 ms on a thread of its own, until finished.
struct ProcWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<ProcSample>>,
}

impl ProcWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                samples.push(look_at_proc());
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<ProcSample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Fails if any sample found two attempts of one runner alive at once.
fn assert_one_attempt_at_a_time(samples: &[ProcSample]) {
    assert!(samples.len() > 100, "too few samples: {}", samples.len());
    for s in samples {
        for (runner, attempts) in &s.attempts {
            assert!(
                attempts.len() <= 1,
                "two attempts of {runner} alive at {}: {attempts:?}",
                s.at
            );
        }
    }
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

/// Every `node.lost` in the orchestrator's log: node, incarnation, and when
/// it was recorded.
async fn losses(node: &Node) -> Vec<(String, String, DateTime<Utc>)> {
    let pool = node.env.db.admin_pool().await.unwrap();
    let rows = sqlx::query_as(
        "SELECT data->>'node', data->>'incarnation', recorded_at FROM orchestrator.log
         WHERE type = $1 ORDER BY position",
    )
    .bind(LOST)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn wait_lost(node: &Node) -> Vec<(String, String, DateTime<Utc>)> {
    wait_until("a node.lost", LAUNCH_WITHIN, || async {
        let rows = losses(node).await;
        Ok((!rows.is_empty()).then_some(rows))
    })
    .await
    .unwrap()
}

/// The incarnation `node` registered last.
async fn incarnation_of(node: &Node, id: &str) -> String {
    let pool = node.env.db.admin_pool().await.unwrap();
    let incarnation = sqlx::query_scalar(
        "SELECT data->>'incarnation' FROM supervisor.log
         WHERE type = 'io.stratavore.node.registered.v1' AND subject = $1
         ORDER BY position DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    incarnation
}

/// The agent pid of `attempt` of `runner`, on whichever node ran it.
async fn agent_pid(node: &Node, runner: Uuid, attempt: u32) -> i32 {
    let scratch = node.scratch.clone();
    let file = PathBuf::from("runners")
        .join(runner.to_string())
        .join(attempt.to_string())
        .join("agent.pid");
    wait_until(
        &format!("attempt {attempt}'s agent pid"),
        LAUNCH_WITHIN,
        || {
            let (scratch, file) = (scratch.clone(), file.clone());
            async move {
                Ok(std::fs::read_dir(&scratch)?
                    .filter_map(Result::ok)
                    .find_map(|e| {
                        std::fs::read_to_string(e.path().join(&file))
                            .ok()?
                            .trim()
                            .parse()
                            .ok()
                    }))
            }
        },
    )
    .await
    .unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Wait until the orchestrator knows `runner`'s session is bound.
async fn wait_session_bound(node: &Node, runner: Uuid) {
    let pool = node.env.db.admin_pool().await.unwrap();
    wait_until("the session to be bound", LAUNCH_WITHIN, || async {
        let bound: Option<bool> = sqlx::query_scalar(
            "SELECT (snapshot->>'session_bound')::boolean FROM orchestrator.runners
             WHERE runner_id = $1",
        )
        .bind(runner)
        .fetch_optional(&pool)
        .await?;
        Ok(bound.filter(|b| *b).map(|_| ()))
    })
    .await
    .unwrap();
    pool.close().await;
}

async fn kill_all(cluster: &Node, runners: &[Uuid]) {
    for r in runners {
        cluster
            .send(&RunnerCommand::Control(ControlRunner {
                runner_id: *r,
                want: Want::Killed,
            }))
            .await;
    }
}

/// Whether the orchestrator relaunched `runner` (for its node's loss, or
/// for an exit its node caused) rather than restarting or failing it.
async fn relaunched_by_the_loss(node: &Node, runner: Uuid) -> bool {
    let pool = node.env.db.admin_pool().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log
         WHERE type = 'io.stratavore.runner.relaunched.v1' AND subject = $1",
    )
    .bind(runner.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n > 0
}

/// The node is cut off from the broker only: it still reaches Postgres,
/// so once fenced it registers again as far as it can, which closes its
/// killed attempts (`process.exited{supervisor_restart}`) through its log
/// and the relay about when the orchestrator convicts it (fence 1.5 s,
/// plus up to 2 s for its consumers' bounded close; conviction 3.3-3.6 s).
/// Whichever comes first, a running runner moves alike: an exit the node
/// caused (`supervisor_restart`, `lease_expired`) is decided as the loss
/// would be, relaunched with no restart used (none is allowed here), its
/// bound session's resume then lost with the node. The claimed runner has
/// no attempt to report, so only the loss moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_liveness_faults_a_node_cut_off_from_the_broker_dies_by_its_leases_and_after_the_heal_honours_nothing_stale()
 {
    let (proxy, through_proxy) = broker_proxy().await;
    let mut cluster = Node::start_with(options(vec![
        capacity(4),
        ("STRATAVORE__BROKER__URL".to_owned(), through_proxy),
    ]))
    .await;
    let cut_node = cluster.node.clone();
    let watch = ProcWatch::start();

    // Two agents on the node that will be cut off: one whose session is not
    // bound yet, one bound and deaf to SIGTERM.
    let (unbound, bound, claimed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    cluster.launch_with(unbound, HANG_UNBOUND, 0).await;
    cluster.launch_with(bound, HANG_BOUND_DEAF, 0).await;
    cluster.wait_runner(unbound, "running").await;
    cluster.wait_runner(bound, "running").await;
    wait_session_bound(&cluster, bound).await;
    let first_incarnation = incarnation_of(&cluster, &cut_node).await;
    let registered = cluster.registrations_of(&cut_node).await;

    // A third is claimed, and the link is cut before the orchestrator's
    // `start` reaches the node: the claim goes through Postgres and the
    // relay, which the cut does not touch, while everything from the broker
    // to the node is held 100 ms in the proxy, well longer than it takes
    // to see the claim here.
    proxy.set_delay(Duration::from_millis(100));
    cluster.launch(claimed, HANG_UNBOUND).await;
    let pool = cluster.env.db.admin_pool().await.unwrap();
    let deadline = Instant::now() + LAUNCH_WITHIN;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM supervisor.log
             WHERE type = 'io.stratavore.process.claimed.v1' AND subject = $1",
        )
        .bind(claimed.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the offer was never claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.cut(CutMode::Blackhole);
    proxy.set_delay(Duration::ZERO);
    let cut_at = Utc::now();

    // Another node takes over what may move.
    let root = cluster.root.clone();
    let mut env = ttl_env(TTL_MS);
    env.push(capacity(4));
    let other = cluster.add_node(&[root], env).await;

    let lost = wait_lost(&cluster).await;
    assert_eq!(
        lost.iter()
            .map(|(n, i, _)| (n.as_str(), i.as_str()))
            .collect::<Vec<_>>(),
        [(cut_node.as_str(), first_incarnation.as_str())]
    );
    let lost_at = lost[0].2;

    // The unbound runner and the claimed one run again on the other node;
    // the bound one is lost with its session.
    for r in [unbound, claimed] {
        cluster.wait_attempt(r, 2, "running").await;
        let (_, _, on) = runner_row(&cluster, r).await;
        assert_eq!(on.as_deref(), Some(other.as_str()));
    }
    assert!(
        relaunched_by_the_loss(&cluster, claimed).await,
        "the claimed runner moved by the loss"
    );
    let bound_state = wait_until("the bound runner to end", LAUNCH_WITHIN, || async {
        let (state, _, _) = runner_row(&cluster, bound).await;
        Ok(["exited", "failed", "lost", "cancelled"]
            .contains(&state.as_str())
            .then_some(state))
    })
    .await
    .unwrap();
    assert_eq!(bound_state, "lost");
    let relaunched = [
        agent_pid(&cluster, unbound, 2).await,
        agent_pid(&cluster, claimed, 2).await,
    ];

    // The orchestrator did answer the claim with a `start`, which the node
    // never acted on.
    let start_id: Uuid = sqlx::query_scalar(
        "SELECT message_id FROM orchestrator.log
         WHERE type = 'io.stratavore.command.process.start.v1'
           AND data->>'runner_id' = $1 AND (data->>'attempt')::int = 1",
    )
    .bind(claimed.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let spawned_first = |pool: sqlx::PgPool| async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supervisor.log WHERE stream = $1")
            .bind(format!("process-{claimed}-1"))
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    assert_eq!(
        spawned_first(pool.clone()).await,
        0,
        "the cut came too late: the start was honoured"
    );

    // Heal: the node registers again, then receives the stale start and
    // ignores it.
    proxy.heal();
    wait_until("the cut node to register again", LAUNCH_WITHIN, || async {
        Ok((cluster.registrations_of(&cut_node).await > registered).then_some(()))
    })
    .await
    .unwrap();
    let status = wait_until("the stale start to be applied", LAUNCH_WITHIN, || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM supervisor.inbox WHERE message_id = $1")
                .bind(start_id)
                .fetch_optional(&pool)
                .await?;
        Ok(status.filter(|s| s != "received"))
    })
    .await
    .unwrap();
    assert_eq!(status, "applied");
    // A few of the node's scans after that, nothing of the runner ran on
    // the cut node and nothing current was killed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        spawned_first(pool.clone()).await,
        0,
        "a stale start spawned"
    );
    for (r, pid) in [unbound, claimed].into_iter().zip(relaunched) {
        assert_eq!(
            runner_row(&cluster, r).await,
            ("running".to_owned(), 2, Some(other.clone()))
        );
        assert!(alive(pid), "the relaunched agent of {r} was killed");
    }
    assert_eq!(runner_row(&cluster, bound).await.0, "lost");
    let stale = marked_processes(&cut_node);
    assert!(stale.is_empty(), "processes of the cut node: {stale:?}");
    assert_eq!(losses(&cluster).await.len(), 1, "one loss, once");
    let samples = watch.finish();
    pool.close().await;

    // The cut node's agents were alive at the cut and gone before it was
    // declared lost, by their leases (half the TTL).
    let before_cut = samples.iter().rev().find(|s| s.at < cut_at).unwrap();
    assert!(
        before_cut.marked.get(&cut_node).copied().unwrap_or(0) >= 2,
        "{before_cut:?}"
    );
    let gone = samples
        .iter()
        .find(|s| s.at > cut_at && !s.marked.contains_key(&cut_node))
        .expect("the cut node's agents died");
    assert!(
        gone.at < lost_at,
        "agents gone by {}, node lost at {lost_at}",
        gone.at
    );
    assert!(
        (gone.at - cut_at).num_milliseconds() < i64::try_from(TTL_MS).unwrap(),
        "cut at {cut_at}, agents gone by {}",
        gone.at
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.at > gone.at)
            .all(|s| !s.marked.contains_key(&cut_node)),
        "the cut node ran an agent again"
    );
    assert_one_attempt_at_a_time(&samples);
    assert!(
        relaunched_by_the_loss(&cluster, unbound).await,
        "the unbound runner was relaunched, not restarted or failed"
    );
    kill_all(&cluster, &[unbound, claimed]).await;
    cluster.stop().await;
    drop(proxy);
}

/// A replica that is cut off receives none of its own ticks either, so it
/// counts nothing; a replica that counted on its own clock instead would
/// convict both nodes here (tried: it does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_liveness_faults_an_orchestrator_replica_cut_off_from_the_broker_convicts_no_one() {
    let mut cluster = Node::start_with(options(vec![capacity(1)])).await;
    let root = cluster.root.clone();
    let mut env = ttl_env(TTL_MS);
    env.push(capacity(1));
    cluster.add_node(&[root], env).await;
    let runners = [Uuid::now_v7(), Uuid::now_v7()];
    for r in runners {
        cluster.launch(r, HANG_UNBOUND).await;
    }
    let mut pids = Vec::new();
    for r in runners {
        cluster.wait_runner(r, "running").await;
        pids.push(agent_pid(&cluster, r, 1).await);
    }
    let placed: BTreeSet<Option<String>> =
        futures::future::join_all(runners.iter().map(|r| runner_row(&cluster, *r)))
            .await
            .into_iter()
            .map(|(_, _, n)| n)
            .collect();
    assert_eq!(placed.len(), 2, "one runner on each node: {placed:?}");

    // A second replica, its broker link through a proxy. Its consumers and
    // its liveness watch connect; a few ticks let it count both nodes.
    let (proxy, through_proxy) = broker_proxy().await;
    cluster.add_orchestrator(&through_proxy).await;
    wait_until("the replica's links", LAUNCH_WITHIN, || async {
        Ok((proxy.connection_count() >= 3).then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Cut silently for twice the TTL: it hears neither heartbeats nor its
    // own ticks.
    proxy.cut(CutMode::Blackhole);
    let cut = Instant::now();
    while cut.elapsed() < Duration::from_millis(2 * TTL_MS) {
        assert_eq!(losses(&cluster).await, [], "a node was declared lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Healed, it reads what was held meanwhile, in order: still no one.
    proxy.heal();
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_millis(TTL_MS) {
        assert_eq!(losses(&cluster).await, [], "a node was declared lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (r, pid) in runners.iter().zip(&pids) {
        let (state, attempt, _) = runner_row(&cluster, *r).await;
        assert_eq!((state.as_str(), attempt), ("running", 1), "{r}");
        assert!(alive(*pid), "the agent of {r} died");
    }
    let pool = cluster.env.db.admin_pool().await.unwrap();
    let relaunched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log WHERE type = 'io.stratavore.runner.relaunched.v1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(relaunched, 0);
    kill_all(&cluster, &runners).await;
    cluster.stop().await;
    drop(proxy);
}

/// Heartbeats and ticks go on the live exchange and a loss is recorded by
/// the replica that convicts, so neither waits for the relay; what the loss
/// decides (the relaunch offer) waits in the orchestrator's log until the
/// relay is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_liveness_faults_with_the_relay_stopped_only_the_node_that_died_is_declared_lost() {
    let mut cluster = Node::start_with(options(vec![capacity(1)])).await;
    let dead_node = cluster.node.clone();
    // The first node is full with this one before the second exists.
    let on_dead = Uuid::now_v7();
    cluster.launch(on_dead, HANG_UNBOUND).await;
    cluster.wait_runner(on_dead, "running").await;
    let root = cluster.root.clone();
    let mut env = ttl_env(TTL_MS);
    env.push(capacity(3));
    let survivor = cluster.add_node(&[root], env).await;
    let on_survivor = [Uuid::now_v7(), Uuid::now_v7()];
    cluster.launch(on_survivor[0], HANG_UNBOUND).await;
    cluster.launch(on_survivor[1], HANG_BOUND_DEAF).await;
    let mut pids = Vec::new();
    for r in on_survivor {
        cluster.wait_runner(r, "running").await;
        assert_eq!(
            runner_row(&cluster, r).await.2.as_deref(),
            Some(survivor.as_str())
        );
        pids.push(agent_pid(&cluster, r, 1).await);
    }
    wait_session_bound(&cluster, on_survivor[1]).await;
    let dead_incarnation = incarnation_of(&cluster, &dead_node).await;

    // No log reaches the broker any more, and the first node dies for good.
    cluster.stop_relay().await;
    let stopped = Instant::now();
    cluster.supervisor.kill9().await.unwrap();

    // Heartbeats do not go through the relay: the loss is found and
    // recorded meanwhile, for the dead node alone.
    let lost = wait_lost(&cluster).await;
    assert_eq!(
        lost.iter()
            .map(|(n, i, _)| (n.as_str(), i.as_str()))
            .collect::<Vec<_>>(),
        [(dead_node.as_str(), dead_incarnation.as_str())]
    );
    while stopped.elapsed() < Duration::from_millis(2 * TTL_MS) {
        assert_eq!(losses(&cluster).await.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = marked_processes(&dead_node);
    assert!(stale.is_empty(), "the dead node's agents live: {stale:?}");
    let pool = cluster.env.db.admin_pool().await.unwrap();
    let survivor_state: String =
        sqlx::query_scalar("SELECT state FROM orchestrator.nodes WHERE node = $1")
            .bind(&survivor)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(survivor_state, "up");

    // The relay back, the dead node's runner is offered to the survivor,
    // whose own runners were never touched.
    cluster.start_relay().await;
    cluster.wait_attempt(on_dead, 2, "running").await;
    assert_eq!(
        runner_row(&cluster, on_dead).await.2.as_deref(),
        Some(survivor.as_str())
    );
    for (r, pid) in on_survivor.iter().zip(&pids) {
        assert_eq!(
            runner_row(&cluster, *r).await,
            ("running".to_owned(), 1, Some(survivor.clone()))
        );
        assert!(alive(*pid), "the survivor's agent of {r} died");
    }
    assert_eq!(losses(&cluster).await.len(), 1, "one loss, once");
    kill_all(&cluster, &[on_dead, on_survivor[0], on_survivor[1]]).await;
    // The dead node stays dead: `stop` expects every node to exit cleanly.
    cluster.supervisor.restart().await.unwrap();
    cluster.wait_registrations(3).await;
    cluster.stop().await;
}
