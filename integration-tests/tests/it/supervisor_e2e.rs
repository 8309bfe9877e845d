//! A real supervisor node (the `runner-supervisor` binary) with the
//! orchestrator, gateway and relay: a launch is offered, claimed, started
//! under the shim, and the simulated agent's transcript becomes usage and
//! an exit that end the runner.

use crate::support::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use stratavore_events::runner::{ControlRunner, LaunchMode, LaunchRunner, RunnerCommand, Want};
use stratavore_runtime::Shutdown;
use stratavore_store::NewEntry;
use stratavore_testkit::process::{ServiceProcess, workspace_binary};
use stratavore_testkit::{TestEnv, wait_until};
use uuid::Uuid;

/// How long a whole launch may take on two busy cores.
const LAUNCH_WITHIN: Duration = Duration::from_secs(60);

/// The stack, a supervisor node running as a process, and a project root
/// that exists on disk (the shim's working directory).
struct Node {
    env: TestEnv,
    shutdowns: Vec<Shutdown>,
    supervisor: ServiceProcess,
    node: String,
    scratch: PathBuf,
    root: String,
    publisher: stratavore_bus::Publisher,
}

impl Node {
    async fn start() -> Node {
        let env = TestEnv::new().await.unwrap();
        let scratch = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.local/tmp")
            .join(format!("supervisor-e2e-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(scratch.join("root/web")).unwrap();
        let scratch = scratch.canonicalize().unwrap();
        let root = scratch.join("root").to_string_lossy().into_owned();

        let (o, g, r) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
        let mut orchestrator = orchestrator_config(&env);
        orchestrator.projects.allowed_roots = vec![PathBuf::from(&root)];
        orchestrator.runners.timer_poll_ms = 100;
        session_orchestrator::start(orchestrator, o.clone())
            .await
            .unwrap()
            .unwrap();
        let gateway = api_gateway::start(gateway_config(&env), g.clone())
            .await
            .unwrap()
            .unwrap();
        outbox_relay::start(relay_config(&env), r.clone())
            .await
            .unwrap();
        let created = reqwest::Client::new()
            .post(format!("http://{}/api/v1/projects", gateway.health_addr))
            .json(&json!({"name": "web", "path": format!("{root}/web")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);

        let node = format!("e2e-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut vars = env.service_env();
        vars.extend([
            ("STRATAVORE__NODE__ID".to_owned(), node.clone()),
            ("STRATAVORE__NODE__ROOTS".to_owned(), root.clone()),
            (
                "STRATAVORE__NODE__DATA_DIR".to_owned(),
                path(scratch.join("node")),
            ),
            (
                "STRATAVORE__NODE__SHIM_PATH".to_owned(),
                path(workspace_binary("stratavore-shim").unwrap()),
            ),
            (
                "STRATAVORE__PROFILES__DEMO__EXECUTABLE".to_owned(),
                path(workspace_binary("stratavore-sim-agent").unwrap()),
            ),
            ("STRATAVORE__RETRY_BACKOFF_MS".to_owned(), "100".to_owned()),
            (
                "STRATAVORE__CONSUMER__SWEEP_INTERVAL_MS".to_owned(),
                "200".to_owned(),
            ),
        ]);
        let supervisor = ServiceProcess::start(
            &workspace_binary("runner-supervisor").unwrap(),
            &format!("supervisor-e2e-{node}"),
            vars,
        )
        .await
        .unwrap();
        let publisher = stratavore_bus::Publisher::open_owning(env.broker.connect().await.unwrap())
            .await
            .unwrap();
        let started = Node {
            env,
            shutdowns: vec![o, g, r],
            supervisor,
            node,
            scratch,
            root,
            publisher,
        };
        // Offers published before the node declared its root's queue would
        // go to the unroutable queue.
        started
            .wait_for_log("the node to register", "io.stratavore.node.registered.v1")
            .await;
        started
    }

    async fn wait_for_log(&self, what: &str, type_name: &str) {
        let pool = self.env.db.admin_pool().await.unwrap();
        wait_until(what, LAUNCH_WITHIN, || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supervisor.log WHERE type = $1")
                .bind(type_name)
                .fetch_one(&pool)
                .await?;
            Ok((n > 0).then_some(()))
        })
        .await
        .unwrap();
        pool.close().await;
    }

    /// Send a launch to the orchestrator, as the gateway would.
    async fn launch(&self, runner: Uuid, prompt: &str) {
        self.send(&RunnerCommand::Launch(LaunchRunner {
            runner_id: runner,
            project: "web".into(),
            profile: "demo".into(),
            prompt: prompt.into(),
            mode: LaunchMode::New,
            session_id: None,
            model: None,
            permission: None,
            max_restarts: Some(0),
        }))
        .await;
    }

    /// Send a client command to the orchestrator, as the gateway would.
    async fn send(&self, command: &RunnerCommand) {
        let id = Uuid::now_v7();
        let mut entry = NewEntry::of(
            command,
            "/stratavore/api-gateway",
            format!("command-{id}"),
            1,
            "runner",
            chrono::Utc::now(),
        );
        entry.envelope.id = id;
        let out = stratavore_bus::OutgoingMessage {
            exchange: self.env.broker.topology().commands_exchange(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        };
        self.publisher.publish_batch(&[out]).await.unwrap();
    }

    /// Wait until the runner is in `want` or a terminal state; assert `want`.
    async fn wait_runner(&self, runner: Uuid, want: &str) {
        let pool = self.env.db.admin_pool().await.unwrap();
        let state = wait_until(&format!("runner {want}"), LAUNCH_WITHIN, || async {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM orchestrator.runners WHERE runner_id = $1")
                    .bind(runner)
                    .fetch_optional(&pool)
                    .await?;
            Ok(state.filter(|s| {
                s == want || ["exited", "failed", "lost", "cancelled"].contains(&s.as_str())
            }))
        })
        .await
        .unwrap();
        pool.close().await;
        assert_eq!(state, want, "log: {}", self.supervisor.log_path().display());
    }

    /// The runner's process events in the supervisor's log, in order.
    async fn process_events(&self, runner: Uuid) -> Vec<(String, serde_json::Value)> {
        let pool = self.env.db.admin_pool().await.unwrap();
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT type, data FROM supervisor.log
             WHERE stream = $1 ORDER BY stream_version",
        )
        .bind(format!("process-{runner}-1"))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    }

    async fn stop(mut self) {
        assert_eq!(self.supervisor.terminate().await.unwrap(), Some(0));
        for s in &self.shutdowns {
            s.trigger();
        }
        for s in self.shutdowns {
            s.wait_for_tasks(Duration::from_secs(20)).await.unwrap();
        }
        // The node's own queues are not part of the prefix's topology.
        let topology = self.env.broker.topology().clone();
        let conn = self.env.broker.connect().await.unwrap();
        let keys = [stratavore_events::process::root_key(&self.root)];
        for spec in topology.node_queues(&self.node, &keys) {
            for queue in [
                stratavore_bus::Topology::dead_letter_queue(&spec.name),
                spec.name,
            ] {
                let channel = conn.create_channel().await.unwrap();
                let _ = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
            }
        }
        let _ = conn.close(200, "done".into()).await;
        self.env.cleanup().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn of_type<'a>(
    events: &'a [(String, serde_json::Value)],
    name: &str,
) -> Vec<&'a serde_json::Value> {
    let type_name = format!("io.stratavore.process.{name}.v1");
    events
        .iter()
        .filter(|(t, _)| *t == type_name)
        .map(|(_, d)| d)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_e2e_a_launch_runs_the_agent_under_the_shim_reports_its_usage_and_exits() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(
        runner,
        r#"sim:{"turns":2,"tokens_per_turn":{"input":100,"output":50}} write the tests"#,
    )
    .await;
    node.wait_runner(runner, "exited").await;

    let events = node.process_events(runner).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types[0], "io.stratavore.process.spawning.v1", "{types:?}");
    assert_eq!(types[1], "io.stratavore.process.started.v1", "{types:?}");
    let usage = of_type(&events, "usage_reported");
    let total = |field: &str| {
        usage
            .iter()
            .map(|u| u[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert_eq!((total("input_tokens"), total("output_tokens")), (200, 100));
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{types:?}");
    assert_eq!(exited[0]["outcome"], "succeeded");
    assert_eq!(exited[0]["code"], 0);
    assert_eq!(
        types.last(),
        Some(&"io.stratavore.process.exited.v1"),
        "the exit ends the stream"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_e2e_an_agent_that_crashes_fails_the_runner_when_no_restart_is_allowed() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"crash_exit_code":3} crash please"#)
        .await;
    node.wait_runner(runner, "failed").await;

    let events = node.process_events(runner).await;
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{events:?}");
    assert_eq!(exited[0]["outcome"], "failed");
    assert_eq!(exited[0]["code"], 3);
    assert_eq!(exited[0]["reason"], "exited");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_e2e_a_stop_reaches_the_agent_through_the_control_file_and_ends_the_runner() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"run_for_ms":60000,"turn_delay_ms":200}"#)
        .await;
    node.wait_runner(runner, "running").await;
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want: Want::Stopped,
    }))
    .await;
    node.wait_runner(runner, "exited").await;

    let events = node.process_events(runner).await;
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{events:?}");
    assert_eq!(exited[0]["reason"], "stopped_on_request");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_e2e_a_restarted_node_kills_what_it_ran_and_reports_the_restart() {
    let mut node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"hang":true}"#).await;
    node.wait_runner(runner, "running").await;
    node.supervisor.kill9().await.unwrap();
    node.supervisor.restart().await.unwrap();
    node.wait_runner(runner, "failed").await;

    let events = node.process_events(runner).await;
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{events:?}");
    assert_eq!(exited[0]["reason"], "supervisor_restart");
    let marked = marked_processes(&node.node);
    assert!(
        marked.is_empty(),
        "processes of the node survived: {marked:?}"
    );
    node.stop().await;
}

/// Pids whose environment carries the node's mark.
fn marked_processes(node: &str) -> Vec<i32> {
    let wanted = format!("STRATAVORE_NODE={node}");
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                        env.split(|b| *b == 0).any(|item| item == wanted.as_bytes())
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}
