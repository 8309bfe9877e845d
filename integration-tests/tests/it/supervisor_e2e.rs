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
pub(crate) const LAUNCH_WITHIN: Duration = Duration::from_secs(60);

/// The node token of every stack: the gateway's and each node's.
pub(crate) const NODE_TOKEN: &str = "e2e-node-token";

/// The stack, a supervisor node running as a process, and a project root
/// that exists on disk (the shim's working directory).
pub(crate) struct Node {
    pub(crate) env: TestEnv,
    /// The gateway's address (its API and health server).
    pub(crate) gateway_addr: std::net::SocketAddr,
    /// Orchestrator, gateway, relay (at [`RELAY`]), then any replica a
    /// test added.
    shutdowns: Vec<Shutdown>,
    /// The orchestrator's configuration, for replicas a test adds.
    orchestrator: session_orchestrator::config::OrchestratorConfig,
    pub(crate) supervisor: ServiceProcess,
    pub(crate) node: String,
    pub(crate) scratch: PathBuf,
    pub(crate) root: String,
    publisher: stratavore_bus::Publisher,
    /// More supervisor nodes on this stack: (id, roots, process).
    pub(crate) others: Vec<(String, Vec<String>, ServiceProcess)>,
}

/// Where the relay's shutdown sits in [`Node`]'s `shutdowns`.
const RELAY: usize = 2;
/// Where the first orchestrator's shutdown is in `Node::shutdowns`.
const ORCHESTRATOR: usize = 0;

/// What a test changes in the stack it starts.
#[derive(Default)]
pub(crate) struct NodeOptions {
    /// Added to the supervisor's environment (later entries win).
    pub(crate) supervisor_env: Vec<(String, String)>,
    /// The orchestrator's first restart backoff, when a test restarts.
    pub(crate) restart_base_ms: Option<u64>,
    /// The liveness TTL (orchestrator and nodes), with heartbeats every
    /// tenth of it, when a test outlives leases.
    pub(crate) ttl_ms: Option<u64>,
    /// The orchestrator's grace on top of the TTL before a node is lost.
    pub(crate) liveness_grace_ms: Option<u64>,
    /// One injected wall clock for the orchestrator, the gateway and the
    /// node: system time plus the milliseconds this file holds (see
    /// [`Node::set_clock_offset`]).
    pub(crate) clock_offset_file: Option<PathBuf>,
    /// Run the gateway's embedding worker at its test pace. Off, it looks
    /// for pending text once a minute: the model's forward passes take
    /// every core of this machine, and the node tests time processes.
    pub(crate) embed: bool,
}

/// A node's environment for a liveness TTL of `ttl` ms, heartbeats every
/// tenth of it.
pub(crate) fn ttl_env(ttl: u64) -> Vec<(String, String)> {
    vec![
        ("STRATAVORE__NODE__TTL_MS".to_owned(), ttl.to_string()),
        (
            "STRATAVORE__NODE__HEARTBEAT_INTERVAL_MS".to_owned(),
            (ttl / 10).to_string(),
        ),
    ]
}

/// A supervisor process for `node`, serving `roots`, with its own HOME and
/// data folder under `scratch`.
async fn spawn_supervisor(
    env: &TestEnv,
    scratch: &std::path::Path,
    node: &str,
    roots: &[String],
    extra: Vec<(String, String)>,
) -> ServiceProcess {
    let keys: Vec<String> = roots
        .iter()
        .map(|r| stratavore_events::process::root_key(r))
        .collect();
    // Deleted with the prefix even when the test fails before `stop`.
    env.broker.track_node(node, &keys);
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let home = scratch.join(format!("home-{node}"));
    std::fs::create_dir_all(&home).unwrap();
    let mut vars = env.service_env();
    vars.extend([
        ("STRATAVORE__NODE__ID".to_owned(), node.to_owned()),
        ("STRATAVORE__NODE__ROOTS".to_owned(), roots.join(",")),
        (
            "STRATAVORE__NODE__DATA_DIR".to_owned(),
            path(scratch.join(format!("node-{node}"))),
        ),
        ("HOME".to_owned(), path(home)),
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
    vars.push(("STRATAVORE__NODE__TOKEN".to_owned(), NODE_TOKEN.to_owned()));
    vars.extend(extra);
    ServiceProcess::start(
        &workspace_binary("runner-supervisor").unwrap(),
        &format!("supervisor-e2e-{node}"),
        vars,
    )
    .await
    .unwrap()
}

impl Node {
    pub(crate) async fn start() -> Node {
        Self::start_with(NodeOptions::default()).await
    }

    pub(crate) async fn start_with(options: NodeOptions) -> Node {
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
        if let Some(ms) = options.restart_base_ms {
            orchestrator.runners.restart_base_ms = ms;
        }
        if let Some(ttl) = options.ttl_ms {
            orchestrator.runners.liveness_ttl_ms = ttl;
            orchestrator.runners.heartbeat_interval_ms = ttl / 10;
        }
        if let Some(grace) = options.liveness_grace_ms {
            orchestrator.runners.liveness_grace_ms = grace;
        }
        orchestrator.base.clock.offset_file = options.clock_offset_file.clone();
        session_orchestrator::start(orchestrator.clone(), o.clone())
            .await
            .unwrap()
            .unwrap();
        let mut gateway_settings = gateway_config(&env);
        gateway_settings.api.node_token = api_gateway::config::NodeToken::new(NODE_TOKEN);
        gateway_settings.base.clock.offset_file = options.clock_offset_file.clone();
        if !options.embed {
            gateway_settings.search.poll_ms = 60_000;
        }
        let gateway = api_gateway::start(gateway_settings, g.clone())
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
        let mut extra = options.supervisor_env;
        if let Some(ttl) = options.ttl_ms {
            extra.splice(0..0, ttl_env(ttl));
        }
        if let Some(file) = &options.clock_offset_file {
            extra.push((
                "STRATAVORE__CLOCK__OFFSET_FILE".to_owned(),
                file.to_string_lossy().into_owned(),
            ));
        }
        // The node's data folder keeps its historical name: tests read
        // runner directories under `node/`.
        extra.push((
            "STRATAVORE__NODE__DATA_DIR".to_owned(),
            scratch.join("node").to_string_lossy().into_owned(),
        ));
        let supervisor =
            spawn_supervisor(&env, &scratch, &node, std::slice::from_ref(&root), extra).await;
        let publisher = stratavore_bus::Publisher::open_owning(env.broker.connect().await.unwrap())
            .await
            .unwrap();
        let started = Node {
            gateway_addr: gateway.health_addr,
            env,
            shutdowns: vec![o, g, r],
            orchestrator,
            supervisor,
            node,
            scratch,
            root,
            publisher,
            others: Vec::new(),
        };
        // Offers published before the node declared its root's queue would
        // go to the unroutable queue.
        started.wait_registrations(1).await;
        started
    }

    /// Wait until the node has registered `count` times.
    pub(crate) async fn wait_registrations(&self, count: i64) {
        let pool = self.env.db.admin_pool().await.unwrap();
        wait_until("the node to register", LAUNCH_WITHIN, || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supervisor.log WHERE type = $1")
                .bind("io.stratavore.node.registered.v1")
                .fetch_one(&pool)
                .await?;
            Ok((n >= count).then_some(()))
        })
        .await
        .unwrap();
        pool.close().await;
    }

    /// Send a launch to the orchestrator, as the gateway would.
    pub(crate) async fn launch(&self, runner: Uuid, prompt: &str) {
        self.launch_with(runner, prompt, 0).await;
    }

    /// A launch that may restart `max_restarts` times.
    pub(crate) async fn launch_with(&self, runner: Uuid, prompt: &str, max_restarts: u32) {
        self.launch_profile(runner, "demo", prompt, max_restarts)
            .await;
    }

    /// A new session of `profile`, with the profile's default choices.
    pub(crate) async fn launch_profile(
        &self,
        runner: Uuid,
        profile: &str,
        prompt: &str,
        max_restarts: u32,
    ) {
        self.send(&RunnerCommand::Launch(LaunchRunner {
            runner_id: runner,
            project: "web".into(),
            profile: profile.into(),
            prompt: prompt.into(),
            mode: LaunchMode::New,
            session_id: None,
            model: None,
            permission: None,
            allowed_tools: None,
            max_restarts: Some(max_restarts),
        }))
        .await;
    }

    /// Send a client command to the orchestrator, as the gateway would.
    pub(crate) async fn send(&self, command: &RunnerCommand) {
        self.send_command(command).await;
    }

    /// Send any client command to the orchestrator, as the gateway would.
    pub(crate) async fn send_command<M: stratavore_events::Message>(&self, command: &M) {
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
        self.publish(entry).await;
    }

    /// Publish `entry` to the commands exchange, as the relay would.
    pub(crate) async fn publish(&self, entry: NewEntry) {
        let out = stratavore_bus::OutgoingMessage {
            exchange: self.env.broker.topology().commands_exchange(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        };
        self.publisher.publish_batch(&[out]).await.unwrap();
    }

    /// Wait until the runner is in `want` or a terminal state; assert `want`.
    pub(crate) async fn wait_runner(&self, runner: Uuid, want: &str) {
        self.wait_attempt(runner, 1, want).await;
    }

    /// Wait until the runner is in `want` at `attempt` or later, or in a
    /// terminal state; assert both.
    pub(crate) async fn wait_attempt(&self, runner: Uuid, attempt: i32, want: &str) {
        let pool = self.env.db.admin_pool().await.unwrap();
        let state = wait_until(&format!("runner {want}"), LAUNCH_WITHIN, || async {
            let state: Option<(String, i32)> = sqlx::query_as(
                "SELECT state, attempt FROM orchestrator.runners WHERE runner_id = $1",
            )
            .bind(runner)
            .fetch_optional(&pool)
            .await?;
            Ok(state.filter(|(s, a)| {
                (s == want && *a >= attempt)
                    || ["exited", "failed", "lost", "cancelled"].contains(&s.as_str())
            }))
        })
        .await
        .unwrap();
        pool.close().await;
        assert_eq!(
            state,
            (want.to_owned(), attempt),
            "log: {}",
            self.supervisor.log_path().display()
        );
    }

    /// The runner's process events of attempt 1 in the supervisor's log, in order.
    pub(crate) async fn process_events(&self, runner: Uuid) -> Vec<(String, serde_json::Value)> {
        self.attempt_events(runner, 1).await
    }

    /// The process events of `attempt` in the supervisor's log, in order.
    pub(crate) async fn attempt_events(
        &self,
        runner: Uuid,
        attempt: u32,
    ) -> Vec<(String, serde_json::Value)> {
        let pool = self.env.db.admin_pool().await.unwrap();
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT type, data FROM supervisor.log
             WHERE stream = $1 ORDER BY stream_version",
        )
        .bind(format!("process-{runner}-{attempt}"))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    }

    /// Wait until `attempt`'s process stream holds an event of type `name`.
    pub(crate) async fn wait_process_event(&self, runner: Uuid, attempt: u32, name: &str) {
        let pool = self.env.db.admin_pool().await.unwrap();
        wait_until(&format!("process.{name}"), LAUNCH_WITHIN, || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM supervisor.log WHERE stream = $1 AND type = $2",
            )
            .bind(format!("process-{runner}-{attempt}"))
            .bind(format!("io.stratavore.process.{name}.v1"))
            .fetch_one(&pool)
            .await?;
            Ok((n > 0).then_some(()))
        })
        .await
        .unwrap();
        pool.close().await;
    }

    /// The runner directory of `attempt`.
    pub(crate) fn runner_dir(&self, runner: Uuid, attempt: u32) -> PathBuf {
        self.scratch
            .join("node/runners")
            .join(runner.to_string())
            .join(attempt.to_string())
    }

    /// The pid the shim of `attempt` wrote to `file`, once written.
    pub(crate) async fn pid_file(&self, runner: Uuid, attempt: u32, file: &str) -> i32 {
        let path = self.runner_dir(runner, attempt).join(file);
        wait_until(
            &format!("{file} of attempt {attempt}"),
            LAUNCH_WITHIN,
            || {
                let path = path.clone();
                async move {
                    Ok(std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse().ok()))
                }
            },
        )
        .await
        .unwrap()
    }

    /// The agent pid of `runner`'s first attempt, on whichever node runs it.
    pub(crate) async fn pid_file_anywhere(&self, runner: Uuid) -> i32 {
        let scratch = self.scratch.clone();
        wait_until("the agent's pid on some node", LAUNCH_WITHIN, || {
            let scratch = scratch.clone();
            async move {
                let found = std::fs::read_dir(&scratch)?
                    .filter_map(Result::ok)
                    .map(|e| {
                        e.path()
                            .join("runners")
                            .join(runner.to_string())
                            .join("1/agent.pid")
                    })
                    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok());
                Ok(found)
            }
        })
        .await
        .unwrap()
    }

    /// The session transcript `attempt`'s spec points the agent's stdout at.
    pub(crate) fn transcript(&self, runner: Uuid, attempt: u32) -> PathBuf {
        let spec = std::fs::read(self.runner_dir(runner, attempt).join("spec.json")).unwrap();
        let spec: serde_json::Value = serde_json::from_slice(&spec).unwrap();
        PathBuf::from(spec["stdout_path"].as_str().unwrap())
    }

    /// Where `attempt`'s part of its session transcript starts.
    pub(crate) async fn transcript_start(&self, runner: Uuid, attempt: u32) -> u64 {
        let pool = self.env.db.admin_pool().await.unwrap();
        let offset: i64 = sqlx::query_scalar(
            "SELECT start_offset FROM supervisor.attempt_transcripts
             WHERE runner_id = $1 AND attempt = $2",
        )
        .bind(runner)
        .bind(i64::from(attempt))
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        u64::try_from(offset).unwrap()
    }

    /// The pids the simulated agent of `attempt` printed for its
    /// grandchildren, read from that attempt's own part of the transcript.
    pub(crate) async fn grandchildren(&self, runner: Uuid, attempt: u32) -> Vec<i32> {
        self.pid_file(runner, attempt, "agent.pid").await;
        let path = self.transcript(runner, attempt);
        let start = usize::try_from(self.transcript_start(runner, attempt).await).unwrap();
        wait_until("the grandchildren's pids", LAUNCH_WITHIN, || {
            let path = path.clone();
            async move {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let own = String::from_utf8_lossy(bytes.get(start..).unwrap_or_default());
                Ok(own
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["type"] == "sim")
                    .map(|v| {
                        v["grandchildren"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| i32::try_from(p.as_i64().unwrap()).unwrap())
                            .collect()
                    }))
            }
        })
        .await
        .unwrap()
    }

    /// Start another supervisor node on this stack, serving `roots`, with
    /// `extra` in its environment; wait until it registered. Its id.
    pub(crate) async fn add_node(
        &mut self,
        roots: &[String],
        extra: Vec<(String, String)>,
    ) -> String {
        let node = format!("e2e-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let process = spawn_supervisor(&self.env, &self.scratch, &node, roots, extra).await;
        self.others.push((node.clone(), roots.to_vec(), process));
        let pool = self.env.db.admin_pool().await.unwrap();
        wait_until("the added node to register", LAUNCH_WITHIN, || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM supervisor.log WHERE type = $1 AND subject = $2",
            )
            .bind("io.stratavore.node.registered.v1")
            .bind(&node)
            .fetch_one(&pool)
            .await?;
            Ok((n > 0).then_some(()))
        })
        .await
        .unwrap();
        pool.close().await;
        node
    }

    /// The supervisor process of `node` (the first node or an added one).
    pub(crate) fn supervisor_of(&mut self, node: &str) -> &mut ServiceProcess {
        if node == self.node {
            return &mut self.supervisor;
        }
        &mut self
            .others
            .iter_mut()
            .find(|(n, _, _)| n == node)
            .expect("a node of this stack")
            .2
    }

    /// How many times `node` registered.
    pub(crate) async fn registrations_of(&self, node: &str) -> i64 {
        let pool = self.env.db.admin_pool().await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM supervisor.log WHERE type = $1 AND subject = $2",
        )
        .bind("io.stratavore.node.registered.v1")
        .bind(node)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n
    }

    /// Start another orchestrator replica in this process, like the first
    /// but reaching the broker at `broker_url` (a proxy, say); it stops
    /// with the stack.
    pub(crate) async fn add_orchestrator(&mut self, broker_url: &str) {
        let mut config = self.orchestrator.clone();
        config.base.broker.url = broker_url.to_owned();
        let shutdown = Shutdown::new();
        session_orchestrator::start(config, shutdown.clone())
            .await
            .unwrap()
            .unwrap();
        self.shutdowns.push(shutdown);
    }

    /// Stop the first orchestrator and start it again with the same
    /// configuration (its timers and projections come from the database).
    pub(crate) async fn restart_orchestrator(&mut self) {
        let old = self.shutdowns[ORCHESTRATOR].clone();
        old.trigger();
        old.wait_for_tasks(Duration::from_secs(20)).await.unwrap();
        let fresh = Shutdown::new();
        session_orchestrator::start(self.orchestrator.clone(), fresh.clone())
            .await
            .unwrap()
            .unwrap();
        self.shutdowns[ORCHESTRATOR] = fresh;
    }

    /// Move the injected clock to system time plus `offset`.
    pub(crate) fn set_clock_offset(file: &std::path::Path, offset: Duration) {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, offset.as_millis().to_string()).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }

    /// Stop the relay: no log's rows reach the broker until
    /// [`Self::start_relay`].
    pub(crate) async fn stop_relay(&self) {
        let relay = self.shutdowns[RELAY].clone();
        relay.trigger();
        relay.wait_for_tasks(Duration::from_secs(20)).await.unwrap();
    }

    /// Start the relay again after [`Self::stop_relay`].
    pub(crate) async fn start_relay(&mut self) {
        let relay = Shutdown::new();
        outbox_relay::start(relay_config(&self.env), relay.clone())
            .await
            .unwrap();
        self.shutdowns[RELAY] = relay;
    }

    /// Another project root, on disk, that the project does not live in.
    pub(crate) fn other_root(&self) -> String {
        let other = self.scratch.join("other-root");
        std::fs::create_dir_all(&other).unwrap();
        other.to_string_lossy().into_owned()
    }

    pub(crate) async fn stop(mut self) {
        for (_, _, process) in &mut self.others {
            assert_eq!(process.terminate().await.unwrap(), Some(0));
        }
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
        let mut nodes = vec![(self.node.clone(), vec![self.root.clone()])];
        nodes.extend(self.others.iter().map(|(n, r, _)| (n.clone(), r.clone())));
        let specs: Vec<_> = nodes
            .iter()
            .flat_map(|(node, roots)| {
                let keys: Vec<String> = roots
                    .iter()
                    .map(|r| stratavore_events::process::root_key(r))
                    .collect();
                topology.node_queues(node, &keys)
            })
            .collect();
        for spec in specs {
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

pub(crate) fn of_type<'a>(
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
async fn serial_supervisor_e2e_a_restarted_node_kills_what_it_ran_reports_the_restart_and_goes_on()
{
    let mut node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"hang":true}"#).await;
    node.wait_runner(runner, "running").await;
    let first = node.pid_file(runner, 1, "agent.pid").await;
    node.supervisor.kill9().await.unwrap();
    node.supervisor.restart().await.unwrap();
    // The node, not the agent, ended attempt 1: the runner goes on as
    // attempt 2 (resuming its session on this node) without using a
    // restart, though none was allowed.
    node.wait_attempt(runner, 2, "running").await;

    let events = node.process_events(runner).await;
    let exited = of_type(&events, "exited");
    assert_eq!(exited.len(), 1, "{events:?}");
    assert_eq!(exited[0]["reason"], "supervisor_restart");
    let first_gone = !std::fs::read_to_string(format!("/proc/{first}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    });
    assert!(first_gone, "attempt 1's agent survived the restart");
    let marked: Vec<i32> = marked_processes(&node.node)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|item| item == format!("STRATAVORE_RUNNER={runner}:1").as_bytes())
            })
        })
        .collect();
    assert!(
        marked.is_empty(),
        "attempt 1's processes survived: {marked:?}"
    );
    let pool = node.env.db.admin_pool().await.unwrap();
    let (relaunched, restarts): (i64, Option<String>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orchestrator.log
                 WHERE type = 'io.stratavore.runner.relaunched.v1' AND subject = $1),
                (SELECT snapshot->>'restarts' FROM orchestrator.runners WHERE runner_id = $2)",
    )
    .bind(runner.to_string())
    .bind(runner)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(relaunched, 1);
    assert_eq!(restarts.as_deref(), Some("0"));
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want: Want::Killed,
    }))
    .await;
    node.wait_attempt(runner, 2, "exited").await;
    node.stop().await;
}

/// attempt, start_offset, end_size, sha256, path
type TranscriptRow = (i64, i64, Option<i64>, Option<String>, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_supervisor_e2e_two_attempts_of_a_session_append_to_one_transcript_each_billing_its_own_lines()
 {
    let node = Node::start_with(NodeOptions {
        restart_base_ms: Some(200),
        ..NodeOptions::default()
    })
    .await;
    let runner = Uuid::now_v7();
    node.launch_with(
        runner,
        r#"sim:{"turns":2,"crash_exit_code":3,"crash_after_turns":1,"tokens_per_turn":{"input":100,"output":50}}"#,
        1,
    )
    .await;
    node.wait_attempt(runner, 2, "failed").await;

    let transcript = node.transcript(runner, 1);
    assert_eq!(
        transcript,
        node.transcript(runner, 2),
        "one file per session"
    );
    assert!(transcript.starts_with(node.scratch.join("node/sessions")));
    assert!(
        transcript.with_extension("stderr.log").exists(),
        "stderr beside it"
    );
    let bytes = std::fs::read(&transcript).unwrap();
    let inits = String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(r#""subtype":"init""#))
        .count();
    assert_eq!(inits, 2, "both attempts appended to it");
    for attempt in [1, 2] {
        let events = node.attempt_events(runner, attempt).await;
        let usage = of_type(&events, "usage_reported");
        assert_eq!(
            usage.len(),
            1,
            "attempt {attempt} bills its own turn only: {usage:?}"
        );
        assert_eq!(of_type(&events, "exited")[0]["code"], 3);
    }

    let pool = node.env.db.admin_pool().await.unwrap();
    let rows: Vec<TranscriptRow> = sqlx::query_as(
        "SELECT attempt, start_offset, end_size, sha256, path
         FROM supervisor.attempt_transcripts WHERE runner_id = $1 ORDER BY attempt",
    )
    .bind(runner)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (first, second) = (&rows[0], &rows[1]);
    assert_eq!(first.4, transcript.to_string_lossy());
    assert_eq!(first.1, 0);
    assert_eq!(
        first.2,
        Some(second.1),
        "attempt 2 starts where attempt 1 ended"
    );
    assert_eq!(second.2, Some(i64::try_from(bytes.len()).unwrap()));
    for (_, _, size, sha, _) in &rows {
        let size = usize::try_from(size.unwrap()).unwrap();
        let expected: String = sqlx::query_scalar("SELECT encode(sha256($1), 'hex')")
            .bind(&bytes[..size])
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sha.as_deref(), Some(expected.as_str()));
    }
    pool.close().await;
    node.stop().await;
}

/// Pids whose environment carries the node's mark.
pub(crate) fn marked_processes(node: &str) -> Vec<i32> {
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
