//! Nodes through the REST API: the gateway and the relay in-process, the
//! test playing the supervisor nodes (registrations, heartbeats on the live
//! exchange) and the orchestrator (losses, drains, runners). No real
//! orchestrator runs: it would judge the fake node's liveness on its own.

use crate::support::*;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use stratavore_events::Message;
use stratavore_events::process::{
    NodeDrainChanged, NodeDrainRefused, NodeEvent, NodeHeartbeat, NodeLost, NodeRegistered,
    RunnerSample,
};
use stratavore_events::runner::{
    AttemptOffered, AttemptPlaced, AttemptRelaunched, AttemptRunning, LaunchApproved, RunnerEvent,
};
use stratavore_runtime::Shutdown;
use stratavore_store::NewEntry;
use stratavore_testkit::{TestEnv, wait_until};
use uuid::Uuid;

const NODE: &str = "node-a";
const ORCHESTRATOR: &str = "/stratavore/session-orchestrator";

fn node_source() -> String {
    format!("/stratavore/runner-supervisor/{NODE}")
}

/// The gateway and the relay, nothing else.
struct Gateway {
    env: TestEnv,
    api: SocketAddr,
    http: reqwest::Client,
    shutdowns: Vec<Shutdown>,
}

impl Gateway {
    async fn start() -> Gateway {
        let env = TestEnv::new().await.unwrap();
        let (g, r) = (Shutdown::new(), Shutdown::new());
        let gateway = api_gateway::start(gateway_config(&env), g.clone())
            .await
            .unwrap()
            .unwrap();
        outbox_relay::start(relay_config(&env), r.clone())
            .await
            .unwrap();
        Gateway {
            api: gateway.health_addr,
            env,
            http: reqwest::Client::new(),
            shutdowns: vec![g, r],
        }
    }

    async fn get(&self, path: &str) -> Reply {
        let url = format!("http://{}{path}", self.api);
        Reply::of(self.http.get(url).send().await.unwrap()).await
    }

    async fn post(&self, path: &str, key: Option<&str>) -> Reply {
        let url = format!("http://{}{path}", self.api);
        let mut request = self.http.post(url).json(&json!({}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        Reply::of(request.send().await.unwrap()).await
    }

    /// Wait until the node's view satisfies `check`.
    async fn wait_node(&self, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_until("the node's view", Duration::from_secs(20), || async {
            let r = self.get(&format!("/api/v1/nodes/{NODE}")).await;
            Ok((r.status.as_u16() == 200 && check(&r.body)).then_some(r.body))
        })
        .await
        .unwrap()
    }

    async fn log_count(&self) -> i64 {
        let pool = self.env.db.admin_pool().await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM gateway.log")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }

    async fn stop(self) {
        for s in &self.shutdowns {
            s.trigger();
        }
        for s in self.shutdowns {
            s.wait_for_tasks(Duration::from_secs(20)).await.unwrap();
        }
        crate::rebuild::assert_rebuilds_match_live(&self.env).await;
        self.env.cleanup().await.unwrap();
    }
}

/// The nodes and the orchestrator as the test plays them: events on the
/// events exchange as their relays would publish them (each stream from
/// version 1, without gaps), heartbeats on the live exchange.
struct Facts {
    publisher: stratavore_bus::Publisher,
    topology: stratavore_bus::Topology,
    versions: HashMap<(String, String), u64>,
}

impl Facts {
    async fn connect(env: &TestEnv) -> Facts {
        let conn = env.broker.connect().await.unwrap();
        Facts {
            publisher: stratavore_bus::Publisher::open_owning(conn).await.unwrap(),
            topology: env.broker.topology().clone(),
            versions: HashMap::new(),
        }
    }

    async fn publish<M: Message>(&mut self, message: &M, source: &str, stream: &str) {
        let version = self
            .versions
            .entry((source.to_owned(), stream.to_owned()))
            .or_insert(0);
        *version += 1;
        let entry = NewEntry::of(
            message,
            source,
            stream,
            *version,
            stream,
            chrono::Utc::now(),
        );
        let out = stratavore_bus::OutgoingMessage {
            exchange: self.topology.events_exchange(),
            routing_key: entry.routing_key.clone(),
            message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
            persistent: true,
        };
        self.publisher.publish_batch(&[out]).await.unwrap();
    }

    async fn register(&mut self, incarnation: Uuid) {
        let event = NodeEvent::Registered(NodeRegistered {
            node: NODE.into(),
            incarnation,
            capacity: 3,
            roots: vec![ROOT.into(), "/srv/other".into()],
            address: "127.0.0.1:7491".into(),
        });
        self.publish(&event, &node_source(), &format!("node-{NODE}"))
            .await;
    }

    async fn orchestrator_says(&mut self, event: &NodeEvent) {
        self.publish(event, ORCHESTRATOR, &format!("node-{NODE}"))
            .await;
    }

    async fn runner_event(&mut self, runner: Uuid, event: RunnerEvent) {
        self.publish(&event, ORCHESTRATOR, &format!("runner-{runner}"))
            .await;
    }

    /// Publish a heartbeat; false when no queue took it (mandatory, and the
    /// live exchange keeps nothing unrouted).
    async fn heartbeat(&self, heartbeat: NodeHeartbeat) -> bool {
        let out = stratavore_bus::live_outgoing(
            &self.topology,
            &stratavore_events::process::LiveMessage::Heartbeat(heartbeat),
            &node_source(),
            NODE,
            chrono::Utc::now(),
        )
        .unwrap();
        self.publisher.publish_batch(&[out]).await.is_ok()
    }
}

fn heartbeat(incarnation: Uuid, seq: u64, runner: Uuid) -> NodeHeartbeat {
    NodeHeartbeat {
        node: NODE.into(),
        incarnation,
        seq,
        interval_ms: 2000,
        capacity: 3,
        draining: false,
        runners: vec![RunnerSample {
            runner_id: runner,
            attempt: 1,
            pid: 4242,
            cpu_seconds: 12.5,
            rss_bytes: 150_000_000,
        }],
    }
}

fn launch_approved(runner: Uuid) -> RunnerEvent {
    RunnerEvent::LaunchApproved(LaunchApproved {
        command_id: Uuid::now_v7(),
        runner_id: runner,
        project: "web".into(),
        path: format!("{ROOT}/web"),
        profile: "demo".into(),
        session_id: Uuid::now_v7().to_string(),
        resume: false,
        model: None,
        permission: None,
        max_restarts: 3,
        prompt: "write the tests".into(),
        allowed_tools: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_node_shows_its_capacity_roots_runners_and_the_latest_heartbeat_of_its_incarnation()
 {
    let gateway = Gateway::start().await;
    let mut facts = Facts::connect(&gateway.env).await;
    let none = gateway.get("/api/v1/nodes").await;
    assert_eq!(
        none.body,
        json!({"items": [], "next_cursor": null}),
        "{none:?}"
    );

    let incarnation = Uuid::now_v7();
    facts.register(incarnation).await;
    let node = gateway.wait_node(|b| b["state"] == "up").await;
    assert_eq!(node["id"], NODE);
    assert_eq!(node["incarnation"], incarnation.to_string());
    assert_eq!(node["capacity"], 3);
    assert_eq!(node["roots"], json!([ROOT, "/srv/other"]));
    assert_eq!(node["address"], "127.0.0.1:7491");
    assert_eq!(node["running"], 0);
    assert_eq!(
        (&node["last_heartbeat_at"], &node["heartbeat_age_seconds"]),
        (&json!(null), &json!(null)),
        "no heartbeat heard yet"
    );
    assert_eq!(node["runners"], json!([]));

    // A runner placed on it counts as running there until its attempt is
    // lost with the node and relaunched.
    let runner = Uuid::now_v7();
    facts.runner_event(runner, launch_approved(runner)).await;
    facts
        .runner_event(
            runner,
            RunnerEvent::Offered(AttemptOffered {
                runner_id: runner,
                attempt: 1,
                resume: false,
                session_id: "s-1".into(),
                launch_deadline_ms: 0,
            }),
        )
        .await;
    facts
        .runner_event(
            runner,
            RunnerEvent::Placed(AttemptPlaced {
                runner_id: runner,
                attempt: 1,
                node: NODE.into(),
                incarnation,
            }),
        )
        .await;
    facts
        .runner_event(
            runner,
            RunnerEvent::Started(AttemptRunning {
                runner_id: runner,
                attempt: 1,
                pid: 4242,
            }),
        )
        .await;
    gateway.wait_node(|b| b["running"] == 1).await;

    // The gateway's live queue may not be bound yet: publish until heard.
    let mut seq = 0;
    let heard = wait_until("a heartbeat heard", Duration::from_secs(20), || {
        seq += 1;
        let beat = heartbeat(incarnation, seq, runner);
        let facts = &facts;
        let gateway = &gateway;
        async move {
            facts.heartbeat(beat).await;
            let r = gateway.get(&format!("/api/v1/nodes/{NODE}")).await;
            Ok((!r.body["last_heartbeat_at"].is_null()).then_some(r.body))
        }
    })
    .await
    .unwrap();
    assert!(heard["heartbeat_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        heard["runners"],
        json!([{"runner_id": runner, "attempt": 1, "pid": 4242,
                "cpu_seconds": 12.5, "rss_bytes": 150_000_000}])
    );
    let listed = gateway.get("/api/v1/nodes").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["items"][0]["runners"], heard["runners"]);
    assert_eq!(listed.body["next_cursor"], json!(null));

    // The node restarts: a new incarnation, whose processes the old
    // heartbeat says nothing about.
    let second = Uuid::now_v7();
    facts.register(second).await;
    let restarted = gateway
        .wait_node(|b| b["incarnation"] == second.to_string())
        .await;
    assert!(
        !restarted["last_heartbeat_at"].is_null(),
        "the node is heard"
    );
    assert_eq!(restarted["runners"], json!([]));

    facts
        .runner_event(
            runner,
            RunnerEvent::Relaunched(AttemptRelaunched {
                runner_id: runner,
                attempt: 1,
                node: NODE.into(),
                reason: "node_lost".into(),
            }),
        )
        .await;
    gateway.wait_node(|b| b["running"] == 0).await;
    let relaunched = gateway.get(&format!("/api/v1/runners/{runner}")).await;
    assert_eq!(relaunched.body["state"], "restarting", "{relaunched:?}");
    assert_eq!(relaunched.body["last_error"], "node_lost");
    assert_eq!(relaunched.body["node"], json!(null));

    let log = gateway.log_count().await;
    gateway
        .get("/api/v1/nodes/node-b")
        .await
        .assert_problem(404, "not-found");
    gateway
        .post("/api/v1/nodes/node-b/drain", None)
        .await
        .assert_problem(404, "not-found");
    gateway
        .post("/api/v1/nodes/node-b/undrain", None)
        .await
        .assert_problem(404, "not-found");
    assert_eq!(gateway.log_count().await, log, "nothing was sent");
    gateway.stop().await;
}

/// The next drain command the relay published, as (id, data).
async fn next_drain(commands: &mut stratavore_testkit::Subscriber) -> (Uuid, serde_json::Value) {
    let delivery = commands
        .next(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("a drain command");
    let event = stratavore_bus::decode_event(&delivery.properties, &delivery.data).unwrap();
    let envelope = stratavore_events::Envelope::from_cloudevent(&event).unwrap();
    assert_eq!(envelope.type_name, "io.stratavore.command.node.drain.v1");
    (envelope.id, envelope.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_a_command_to_the_orchestrator_and_the_node_shows_draining_once_it_changed() {
    let gateway = Gateway::start().await;
    let mut facts = Facts::connect(&gateway.env).await;
    let commands_exchange = facts.topology.commands_exchange();
    let mut commands = gateway
        .env
        .broker
        .subscribe(&commands_exchange, "session-orchestrator.node.drain")
        .await
        .unwrap();
    let incarnation = Uuid::now_v7();
    facts.register(incarnation).await;
    gateway.wait_node(|b| b["state"] == "up").await;

    // Without waiting: 202 and the command's location; the same key again
    // names the same command.
    let accepted = gateway
        .post(
            &format!("/api/v1/nodes/{NODE}/drain?wait=0"),
            Some("drain-1"),
        )
        .await;
    assert_eq!(accepted.status.as_u16(), 202, "{accepted:?}");
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let again = gateway
        .post(
            &format!("/api/v1/nodes/{NODE}/drain?wait=0"),
            Some("drain-1"),
        )
        .await;
    assert_eq!(again.headers["location"].to_str().unwrap(), location);
    let (command, data) = next_drain(&mut commands).await;
    assert_eq!(location, format!("/api/v1/commands/{command}"));
    assert_eq!(data, json!({"node": NODE, "draining": true}));
    assert_eq!(gateway.get(&location).await.body["status"], "pending");

    facts
        .orchestrator_says(&NodeEvent::DrainChanged(NodeDrainChanged {
            command_id: command,
            node: NODE.into(),
            draining: true,
        }))
        .await;
    gateway.wait_node(|b| b["state"] == "draining").await;
    let decided = gateway.get(&location).await;
    assert_eq!(decided.body["status"], "succeeded", "{decided:?}");
    assert_eq!(decided.body["resource"], format!("/api/v1/nodes/{NODE}"));

    // Waiting: the answer is the node once the orchestrator lifted it.
    let path = format!("/api/v1/nodes/{NODE}/undrain?wait=20");
    let undrain = gateway.post(&path, None);
    let orchestrator = async {
        let (command, data) = next_drain(&mut commands).await;
        assert_eq!(data["draining"], false);
        facts
            .orchestrator_says(&NodeEvent::DrainChanged(NodeDrainChanged {
                command_id: command,
                node: NODE.into(),
                draining: false,
            }))
            .await;
    };
    let (lifted, ()) = tokio::join!(undrain, orchestrator);
    assert_eq!(lifted.status.as_u16(), 200, "{lifted:?}");
    assert_eq!(lifted.body["state"], "up");
    assert_eq!(
        lifted.headers["location"].to_str().unwrap(),
        format!("/api/v1/nodes/{NODE}")
    );

    // The orchestrator declares it lost; a drain of a lost node is refused.
    facts
        .orchestrator_says(&NodeEvent::Lost(NodeLost {
            node: NODE.into(),
            incarnation,
            missed: 6,
        }))
        .await;
    let lost = gateway.wait_node(|b| b["state"] == "lost").await;
    assert!(!lost["lost_at"].is_null(), "{lost}");
    let path = format!("/api/v1/nodes/{NODE}/drain?wait=20");
    let drain = gateway.post(&path, None);
    let orchestrator = async {
        let (command, _) = next_drain(&mut commands).await;
        facts
            .orchestrator_says(&NodeEvent::DrainRefused(NodeDrainRefused {
                command_id: command,
                node: NODE.into(),
                draining: true,
                reason: "node_lost".into(),
                message: "node-a is lost".into(),
            }))
            .await;
    };
    let (refused, ()) = tokio::join!(drain, orchestrator);
    refused.assert_problem(409, "conflict");
    assert_eq!(refused.body["reason"], "node_lost");

    // Registering again brings it back.
    facts.register(Uuid::now_v7()).await;
    let back = gateway.wait_node(|b| b["state"] == "up").await;
    assert_eq!(back["lost_at"], json!(null));
    drop(commands);
    gateway.stop().await;
}
