//! The launch saga in the orchestrator, with a fake supervisor node: the
//! test consumes the node's queues and reports process facts as a node
//! would.

use crate::support::*;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::time::Duration;
use stratavore_events::Message;
use stratavore_events::process::{
    LiveMessage, NodeEvent, NodeHeartbeat, NodeRegistered, ProcessClaim, ProcessEvent,
    ProcessExited, ProcessSessionBound, ProcessStarted, UsageReported, root_key,
};
use stratavore_events::runner::{ControlRunner, LaunchMode, LaunchRunner, RunnerCommand, Want};
use stratavore_runtime::Shutdown;
use stratavore_store::NewEntry;
use stratavore_testkit::{TestEnv, wait_until};
use uuid::Uuid;

pub(crate) const NODE: &str = "node-1";

/// A supervisor node as the test plays it.
pub(crate) struct FakeNode {
    pub(crate) node: String,
    publisher: stratavore_bus::Publisher,
    pub(crate) events: String,
    commands: String,
    topology: stratavore_bus::Topology,
    /// The shared offer queue of the root (None for a node that serves no
    /// root here, so that offers for the root all reach one test node).
    offers: Option<lapin::Consumer>,
    /// Its own offer queue (resumes of the sessions it holds).
    own_offers: lapin::Consumer,
    control: lapin::Consumer,
    pub(crate) incarnation: Uuid,
    _conn: lapin::Connection,
    versions: std::collections::HashMap<(Uuid, u32), u64>,
    registrations: u64,
}

/// A node's heartbeats, published until this is dropped.
pub(crate) struct Heartbeats(tokio::task::JoinHandle<()>);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FakeNode {
    /// `node-1`, serving the test root.
    pub(crate) async fn register(env: &TestEnv) -> FakeNode {
        Self::register_as(env, NODE, true).await
    }

    /// A node named `node`: its queues declared and consumed (the root's
    /// shared offer queue only when `serves_root`).
    pub(crate) async fn register_as(env: &TestEnv, node: &str, serves_root: bool) -> FakeNode {
        let conn = env.broker.connect().await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let topology = env.broker.topology().clone();
        env.broker.track_node(node, &[root_key(ROOT)]);
        for spec in topology.node_queues(node, &[root_key(ROOT)]) {
            topology.declare_queue(&channel, &spec).await.unwrap();
        }
        let consume = |queue: String| {
            let channel = channel.clone();
            async move {
                channel
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap()
            }
        };
        let offers = if serves_root {
            Some(consume(topology.root_offer_queue(&root_key(ROOT))).await)
        } else {
            None
        };
        let own_offers = consume(topology.node_offer_queue(node)).await;
        let control = consume(topology.node_control_queue(node)).await;
        let pub_conn = env.broker.connect().await.unwrap();
        FakeNode {
            node: node.to_owned(),
            publisher: stratavore_bus::Publisher::open_owning(pub_conn)
                .await
                .unwrap(),
            events: topology.events_exchange(),
            commands: topology.commands_exchange(),
            topology,
            offers,
            own_offers,
            control,
            incarnation: Uuid::now_v7(),
            _conn: conn,
            versions: Default::default(),
            registrations: 0,
        }
    }

    /// Read a delivery as (type, data), acking it.
    async fn read(
        delivery: Option<Result<lapin::message::Delivery, lapin::Error>>,
    ) -> (String, serde_json::Value) {
        let delivery = delivery.unwrap().unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let event = stratavore_bus::decode_event(&delivery.properties, &delivery.data).unwrap();
        let env = stratavore_events::Envelope::from_cloudevent(&event).unwrap();
        (env.type_name, env.data)
    }

    /// The next message on a queue, as (type, data).
    async fn next(consumer: &mut lapin::Consumer) -> (String, serde_json::Value) {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a message in time");
        Self::read(delivery).await
    }

    /// The next offer, from the root's queue or the node's own.
    pub(crate) async fn next_offer(&mut self) -> (String, serde_json::Value) {
        let delivery = tokio::time::timeout(Duration::from_secs(20), async {
            match self.offers.as_mut() {
                Some(root) => tokio::select! {
                    d = root.next() => d,
                    d = self.own_offers.next() => d,
                },
                None => self.own_offers.next().await,
            }
        })
        .await
        .expect("an offer in time");
        Self::read(delivery).await
    }

    /// The next offer on the node's own offer queue.
    pub(crate) async fn next_own_offer(&mut self) -> (String, serde_json::Value) {
        Self::next(&mut self.own_offers).await
    }

    /// Whether no offer arrives within `wait`.
    pub(crate) async fn no_offer_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next_offer()).await.is_err()
    }

    pub(crate) async fn next_control(&mut self) -> (String, serde_json::Value) {
        Self::next(&mut self.control).await
    }

    async fn publish(&self, out: stratavore_bus::OutgoingMessage) {
        self.publisher.publish_batch(&[out]).await.unwrap();
    }

    /// Report a process fact as the node would: a claim on a stream of its
    /// own, every other fact on the attempt's process stream.
    pub(crate) async fn report(&mut self, runner: Uuid, attempt: u32, event: ProcessEvent) {
        let (stream, version) = if matches!(event, ProcessEvent::Claimed(_)) {
            (
                format!("claim-{runner}-{attempt}-{}-{}", self.node, Uuid::now_v7()),
                1,
            )
        } else {
            let version = self.versions.entry((runner, attempt)).or_insert(0);
            *version += 1;
            (format!("process-{runner}-{attempt}"), *version)
        };
        let entry = NewEntry::of(
            &event,
            &format!("/stratavore/runner-supervisor/{}", self.node),
            stream,
            version,
            runner.to_string(),
            chrono::Utc::now(),
        );
        self.publish(stratavore_bus::OutgoingMessage {
            exchange: self.events.clone(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        })
        .await;
    }

    /// The node restarts: a new incarnation (announce it next).
    pub(crate) fn reincarnate(&mut self) {
        self.incarnation = Uuid::now_v7();
    }

    /// Announce the node's current incarnation (`node.registered`, the next
    /// version of the node's stream).
    pub(crate) async fn announce(&mut self) {
        self.registrations += 1;
        let event = NodeEvent::Registered(NodeRegistered {
            node: self.node.clone(),
            incarnation: self.incarnation,
            capacity: 4,
            roots: vec![ROOT.into()],
            address: "127.0.0.1:0".into(),
        });
        let entry = NewEntry::of(
            &event,
            &format!("/stratavore/runner-supervisor/{}", self.node),
            format!("node-{}", self.node),
            self.registrations,
            self.node.clone(),
            chrono::Utc::now(),
        );
        self.publish(stratavore_bus::OutgoingMessage {
            exchange: self.events.clone(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        })
        .await;
    }

    /// Publish the node's heartbeat every `interval` on the live exchange,
    /// until the returned guard is dropped.
    pub(crate) fn heartbeats(&self, interval: Duration) -> Heartbeats {
        let publisher = self.publisher.clone();
        let topology = self.topology.clone();
        let (node, incarnation) = (self.node.clone(), self.incarnation);
        Heartbeats(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            for seq in 0.. {
                ticker.tick().await;
                let beat = LiveMessage::Heartbeat(NodeHeartbeat {
                    node: node.clone(),
                    incarnation,
                    seq,
                    interval_ms: u64::try_from(interval.as_millis()).unwrap(),
                    capacity: 4,
                    draining: false,
                    runners: Vec::new(),
                });
                let out = stratavore_bus::live_outgoing(
                    &topology,
                    &beat,
                    &format!("/stratavore/runner-supervisor/{node}"),
                    &node,
                    chrono::Utc::now(),
                )
                .unwrap();
                // A heartbeat nobody hears yet comes back unroutable: that
                // is no failure of the test.
                let _ = publisher.publish_batch(&[out]).await;
            }
        }))
    }

    /// Send a client command to the orchestrator, as the gateway would.
    pub(crate) async fn send<C: Message>(&self, command: &C) {
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
        self.publish(stratavore_bus::OutgoingMessage {
            exchange: self.commands.clone(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        })
        .await;
    }

    pub(crate) fn claim(&self, runner: Uuid, attempt: u32) -> ProcessEvent {
        ProcessEvent::Claimed(ProcessClaim {
            runner_id: runner,
            attempt,
            node: self.node.clone(),
            incarnation: self.incarnation,
        })
    }

    /// The attempt's agent runs on this node.
    pub(crate) fn started(&self, runner: Uuid, attempt: u32) -> ProcessEvent {
        ProcessEvent::Started(ProcessStarted {
            runner_id: runner,
            attempt,
            node: self.node.clone(),
            pid: 4242,
        })
    }
}

pub(crate) fn launch(runner: Uuid, project: &str) -> RunnerCommand {
    RunnerCommand::Launch(LaunchRunner {
        runner_id: runner,
        project: project.into(),
        profile: "demo".into(),
        prompt: "write the tests".into(),
        mode: LaunchMode::New,
        session_id: None,
        model: None,
        permission: None,
        allowed_tools: None,
        max_restarts: Some(1),
    })
}

/// A turn's usage in `session`: `n` of each kind of token.
pub(crate) fn usage(runner: Uuid, attempt: u32, turn: u32, session: &str, n: u64) -> ProcessEvent {
    ProcessEvent::UsageReported(UsageReported {
        runner_id: runner,
        attempt,
        turn,
        input_tokens: n,
        output_tokens: n,
        cache_creation_input_tokens: n,
        cache_read_input_tokens: n,
        cost_usd: 0.0,
        model: Some("sonnet".into()),
        session_id: session.into(),
    })
}

/// Wait until the orchestrator has applied everything it received.
pub(crate) async fn wait_orchestrator_idle(env: &TestEnv) {
    wait_until(
        "the orchestrator to be idle",
        Duration::from_secs(20),
        || async {
            let pool = env.db.admin_pool().await?;
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orchestrator.inbox WHERE status <> 'applied'",
            )
            .fetch_one(&pool)
            .await?;
            pool.close().await;
            Ok((waiting == 0).then_some(()))
        },
    )
    .await
    .unwrap();
}

pub(crate) fn started(runner: Uuid, attempt: u32) -> ProcessEvent {
    ProcessEvent::Started(ProcessStarted {
        runner_id: runner,
        attempt,
        node: NODE.into(),
        pid: 4242,
    })
}

pub(crate) fn exited(runner: Uuid, attempt: u32, outcome: &str, code: i32) -> ProcessEvent {
    ProcessEvent::Exited(ProcessExited {
        runner_id: runner,
        attempt,
        node: NODE.into(),
        code: Some(code),
        signal: None,
        reason: "exited".into(),
        outcome: outcome.into(),
        message: (outcome != "succeeded").then(|| format!("exited with code {code}")),
        resets_at: None,
        transcript: None,
    })
}

/// The orchestrator, gateway and relay, with timers and backoffs short.
pub(crate) async fn stack_with(
    tune: impl FnOnce(&mut session_orchestrator::config::OrchestratorConfig),
) -> (TestEnv, Vec<Shutdown>) {
    let env = TestEnv::new().await.unwrap();
    let (o, g, r) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
    let mut config = orchestrator_config(&env);
    config.runners.timer_poll_ms = 100;
    tune(&mut config);
    session_orchestrator::start(config, o.clone())
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
    let http = reqwest::Client::new();
    let created = http
        .post(format!("http://{}/api/v1/projects", gateway.health_addr))
        .json(&json!({"name": "web", "path": format!("{ROOT}/web")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    (env, vec![o, g, r])
}

pub(crate) async fn stop_all(env: TestEnv, shutdowns: Vec<Shutdown>) {
    for s in &shutdowns {
        s.trigger();
    }
    for s in shutdowns {
        s.wait_for_tasks(Duration::from_secs(20)).await.unwrap();
    }
    env.cleanup().await.unwrap();
}

pub(crate) async fn runner_state(env: &TestEnv, runner: Uuid) -> Option<String> {
    let pool = env.db.admin_pool().await.unwrap();
    let state = sqlx::query_scalar("SELECT state FROM orchestrator.runners WHERE runner_id = $1")
        .bind(runner)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    state
}

pub(crate) async fn wait_state(env: &TestEnv, runner: Uuid, want: &str) {
    wait_until(
        &format!("runner {want}"),
        Duration::from_secs(20),
        || async { Ok((runner_state(env, runner).await.as_deref() == Some(want)).then_some(())) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_is_offered_to_its_roots_queue_started_on_the_first_claim_and_ended_by_a_clean_exit()
 {
    let (env, shutdowns) = stack_with(|_| {}).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;

    let (kind, offer) = node.next_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(offer["runner_id"], runner.to_string());
    assert_eq!(offer["attempt"], 1);
    assert_eq!(offer["prompt"], "write the tests");
    assert_eq!(offer["path"], format!("{ROOT}/web"));
    assert_eq!(offer["resume"], false);
    // Nothing chosen: the demo profile's defaults.
    assert_eq!(offer["permission"], "acceptEdits");
    assert_eq!(
        offer["allowed_tools"],
        json!([
            "Read",
            "Edit",
            "MultiEdit",
            "Write",
            "Glob",
            "Grep",
            "LS",
            "Bash"
        ])
    );
    assert_eq!(offer["usage_baseline"]["input_tokens"], 0);
    wait_state(&env, runner, "starting").await;

    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, start) = node.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.start.v1");
    assert_eq!(start["incarnation"], node.incarnation.to_string());
    // A second claim of the same attempt (another node, or a redelivery) is
    // revoked.
    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, _) = node.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.revoke.v1");

    node.report(runner, 1, started(runner, 1)).await;
    wait_state(&env, runner, "running").await;
    node.report(runner, 1, exited(runner, 1, "succeeded", 0))
        .await;
    wait_state(&env, runner, "exited").await;
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_beyond_the_projects_quota_is_rejected_and_nothing_is_offered() {
    let (env, shutdowns) = stack_with(|c| c.runners.max_concurrent_per_project = 1).await;
    let mut node = FakeNode::register(&env).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    node.send(&launch(first, "web")).await;
    node.next_offer().await;
    node.send(&launch(second, "web")).await;
    let pool = env.db.admin_pool().await.unwrap();
    let reason: String = wait_until("the rejection", Duration::from_secs(20), || async {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT data->>'reason' FROM orchestrator.log WHERE type = 'io.stratavore.runner.launch_rejected.v1'",
        )
        .fetch_optional(&pool)
        .await?)
    })
    .await
    .unwrap();
    assert_eq!(reason, "quota_reached");
    assert_eq!(
        runner_state(&env, second).await,
        None,
        "a rejected launch makes no runner"
    );
    assert!(
        node.no_offer_within(Duration::from_millis(500)).await,
        "no second offer"
    );
    pool.close().await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_placement_cancels_the_launch_and_the_later_claim_is_revoked() {
    let (env, shutdowns) = stack_with(|_| {}).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;
    node.next_offer().await;
    node.send(&RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want: Want::Stopped,
    }))
    .await;
    wait_state(&env, runner, "cancelled").await;
    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, _) = node.next_control().await;
    assert_eq!(
        kind, "io.stratavore.command.process.revoke.v1",
        "nothing is spawned for a cancelled runner"
    );
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_launch_no_node_starts_in_time_fails_with_that_reason() {
    let (env, shutdowns) = stack_with(|c| c.runners.launch_timeout_ms = 800).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;
    node.next_offer().await;
    wait_state(&env, runner, "failed").await;
    let pool = env.db.admin_pool().await.unwrap();
    let reason: String = sqlx::query_scalar(
        "SELECT data->>'reason' FROM orchestrator.log WHERE type = 'io.stratavore.runner.failed.v1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason, "launch_timeout");
    pool.close().await;
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_crash_after_a_saved_turn_restarts_after_the_backoff_resuming_the_same_session() {
    let (env, shutdowns) = stack_with(|c| c.runners.restart_base_ms = 300).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;
    let (_, offer) = node.next_offer().await;
    let session = offer["session_id"].as_str().unwrap().to_owned();
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    node.report(runner, 1, started(runner, 1)).await;
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
    node.report(runner, 1, exited(runner, 1, "failed", 3)).await;
    let (kind, second) = node.next_own_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(second["attempt"], 2);
    assert_eq!(
        second["resume"], true,
        "a bound session is resumed, on the node that holds its files"
    );
    assert_eq!(second["session_id"], session.as_str());
    // A stale claim of attempt 1 is revoked; the current one is started.
    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, _) = node.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.revoke.v1");
    wait_orchestrator_idle(&env).await;
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    stop_all(env, shutdowns).await;
}

async fn session_usage(env: &TestEnv, session: &str) -> Option<(i64, i64, i64, i64)> {
    let pool = env.db.admin_pool().await.unwrap();
    let row = sqlx::query_as(
        "SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens
         FROM orchestrator.session_usage WHERE session_id = $1",
    )
    .bind(session)
    .fetch_optional(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_resumed_attempt_is_offered_its_sessions_usage_summed_over_the_attempts_before() {
    let (env, shutdowns) = stack_with(|c| c.runners.restart_base_ms = 300).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    let RunnerCommand::Launch(mut cmd) = launch(runner, "web") else {
        unreachable!("launch makes a launch")
    };
    cmd.max_restarts = Some(2);
    cmd.allowed_tools = Some(vec!["Read".into(), "Grep".into()]);
    node.send(&RunnerCommand::Launch(cmd)).await;
    let (_, offer) = node.next_offer().await;
    assert_eq!(offer["allowed_tools"], json!(["Read", "Grep"]));
    let session = offer["session_id"].as_str().unwrap().to_owned();
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    node.report(runner, 1, started(runner, 1)).await;
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
    node.report(runner, 1, usage(runner, 1, 1, &session, 100))
        .await;
    node.report(runner, 1, usage(runner, 1, 2, &session, 20))
        .await;
    // A report that names no session (written before reports did) counts
    // toward no session.
    node.report(runner, 1, usage(runner, 1, 3, "", 5000)).await;
    node.report(runner, 1, exited(runner, 1, "failed", 3)).await;

    let (_, second) = node.next_offer().await;
    assert_eq!(
        (second["attempt"].clone(), second["resume"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(
        second["usage_baseline"],
        json!({"input_tokens": 120, "output_tokens": 120,
               "cache_creation_input_tokens": 120, "cache_read_input_tokens": 120})
    );
    assert_eq!(
        second["allowed_tools"],
        json!(["Read", "Grep"]),
        "every attempt keeps the tools"
    );
    node.report(runner, 2, node.claim(runner, 2)).await;
    node.next_control().await;
    node.report(runner, 2, started(runner, 2)).await;
    node.report(runner, 2, usage(runner, 2, 1, &session, 7))
        .await;
    node.report(runner, 2, exited(runner, 2, "failed", 3)).await;

    let (_, third) = node.next_offer().await;
    assert_eq!(third["attempt"], 3);
    assert_eq!(
        third["usage_baseline"],
        json!({"input_tokens": 127, "output_tokens": 127,
               "cache_creation_input_tokens": 127, "cache_read_input_tokens": 127}),
        "the baseline sums every attempt of the session"
    );
    wait_orchestrator_idle(&env).await;
    assert_eq!(
        session_usage(&env, &session).await,
        Some((127, 127, 127, 127))
    );
    assert_eq!(session_usage(&env, "").await, None);
    // The live rebuild at its end refills the table from the inbox.
    crate::rebuild::assert_rebuilds_match_live(&env).await;
    assert_eq!(
        session_usage(&env, &session).await,
        Some((127, 127, 127, 127))
    );
    stop_all(env, shutdowns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_claimed_by_a_node_that_registers_again_before_starting_it_is_offered_as_the_next_attempt()
 {
    let (env, shutdowns) = stack_with(|_| {}).await;
    let mut node = FakeNode::register(&env).await;
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;
    node.next_offer().await;
    node.report(runner, 1, node.claim(runner, 1)).await;
    let (kind, _) = node.next_control().await;
    assert_eq!(kind, "io.stratavore.command.process.start.v1");

    // The node restarts before it spawned anything: a new incarnation.
    let event = stratavore_events::process::NodeEvent::Registered(
        stratavore_events::process::NodeRegistered {
            node: NODE.into(),
            incarnation: Uuid::now_v7(),
            capacity: 4,
            roots: vec![ROOT.into()],
            address: "127.0.0.1:0".into(),
        },
    );
    let entry = NewEntry::of(
        &event,
        &format!("/stratavore/runner-supervisor/{NODE}"),
        format!("node-{NODE}"),
        1,
        NODE,
        chrono::Utc::now(),
    );
    let out = stratavore_bus::OutgoingMessage {
        exchange: node.events.clone(),
        routing_key: entry.routing_key.clone(),
        message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
        persistent: true,
    };
    node.publisher.publish_batch(&[out]).await.unwrap();

    let (kind, offer) = node.next_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(offer["attempt"], 2, "the stranded attempt is offered again");
    stop_all(env, shutdowns).await;
}

/// A runner waiting to restart still holds its slot: a launch racing that
/// restart for the project's last slot is refused, and only the restart
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_launch_racing_a_restart_for_the_last_slot_is_refused_and_only_the_restart_runs() {
    let (env, shutdowns) = stack_with(|c| {
        c.runners.max_concurrent_per_project = 1;
        c.runners.restart_base_ms = 800;
    })
    .await;
    let mut node = FakeNode::register(&env).await;
    let first = Uuid::now_v7();
    node.send(&launch(first, "web")).await;
    node.next_offer().await;
    node.report(first, 1, node.claim(first, 1)).await;
    node.next_control().await;
    node.report(first, 1, started(first, 1)).await;
    wait_state(&env, first, "running").await;
    node.report(first, 1, exited(first, 1, "failed", 3)).await;
    wait_state(&env, first, "restarting").await;

    let second = Uuid::now_v7();
    node.send(&launch(second, "web")).await;
    let (kind, offer) = node.next_offer().await;
    assert_eq!(kind, "io.stratavore.command.process.offer.v1");
    assert_eq!(
        offer["runner_id"],
        first.to_string(),
        "only the restart is offered"
    );
    assert_eq!(offer["attempt"], 2);
    let pool = env.db.admin_pool().await.unwrap();
    let reason: String = wait_until("the racing launch's rejection", Duration::from_secs(20), || async {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT data->>'reason' FROM orchestrator.log WHERE type = 'io.stratavore.runner.launch_rejected.v1'",
        )
        .fetch_optional(&pool)
        .await?)
    })
    .await
    .unwrap();
    assert_eq!(reason, "quota_reached");
    assert_eq!(
        runner_state(&env, second).await,
        None,
        "the racing launch made no runner"
    );
    pool.close().await;
    stop_all(env, shutdowns).await;
}
