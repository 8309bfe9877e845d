//! The stack in this test process: orchestrator, gateway and relay
//! started in-process against a test's own database and broker prefix,
//! and a small HTTP client for the API.

use api_gateway::config::GatewayConfig;
use outbox_relay::config::RelayConfig;
use reqwest::StatusCode;
use session_orchestrator::config::OrchestratorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use stratavore_runtime::{ServiceConfig, Shutdown};
use stratavore_testkit::TestEnv;

/// The allowed project root the tests use (a lexical check: it need not exist).
pub const ROOT: &str = "/srv/projects";

/// Point a service's common sections at the test's database and prefix.
pub fn base(env: &TestEnv, base: &mut ServiceConfig) {
    base.database.url = Some(env.db.url());
    base.broker.url = env.broker.url().to_owned();
    base.broker.prefix = env.broker.prefix().to_owned();
    base.http.listen = "127.0.0.1:0".parse().unwrap();
    base.retry_backoff_ms = 100;
}

pub fn orchestrator_config(env: &TestEnv) -> OrchestratorConfig {
    let mut c = OrchestratorConfig::default();
    base(env, &mut c.base);
    c.projects.allowed_roots = vec![PathBuf::from(ROOT)];
    c.consumer.sweep_interval_ms = 200;
    c
}

pub fn gateway_config(env: &TestEnv) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    base(env, &mut c.base);
    c.consumer.sweep_interval_ms = 200;
    c.search.model_dir = stratavore_testkit::embedding_model_dir();
    c.search.poll_ms = 100;
    c
}

pub fn relay_config(env: &TestEnv) -> RelayConfig {
    let mut c = RelayConfig::default();
    c.database.url = Some(env.db.url());
    c.broker.url = env.broker.url().to_owned();
    c.broker.prefix = env.broker.prefix().to_owned();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.relay.lease_retry_ms = 200;
    c.relay.retry_backoff_ms = 100;
    c
}

/// The three services the project flow needs, running in this process.
pub struct Stack {
    pub env: TestEnv,
    pub api: SocketAddr,
    pub http: reqwest::Client,
    shutdowns: Vec<Shutdown>,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_on(TestEnv::new().await.unwrap()).await
    }

    pub async fn start_on(env: TestEnv) -> Stack {
        Self::start_tuned(env, |_| {}).await
    }

    /// The stack with the gateway's configuration changed by `tune`.
    pub async fn start_tuned(env: TestEnv, tune: impl FnOnce(&mut GatewayConfig)) -> Stack {
        let (o, g, r) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
        session_orchestrator::start(orchestrator_config(&env), o.clone())
            .await
            .unwrap()
            .unwrap();
        let mut gateway_config = gateway_config(&env);
        tune(&mut gateway_config);
        let gateway = api_gateway::start(gateway_config, g.clone())
            .await
            .unwrap()
            .unwrap();
        outbox_relay::start(relay_config(&env), r.clone())
            .await
            .unwrap();
        Stack {
            api: gateway.health_addr,
            env,
            http: reqwest::Client::new(),
            shutdowns: vec![o, g, r],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub async fn stop(self) -> TestEnv {
        for s in &self.shutdowns {
            s.trigger();
        }
        for s in self.shutdowns {
            s.wait_for_tasks(std::time::Duration::from_secs(20))
                .await
                .unwrap();
        }
        self.env
    }

    pub async fn cleanup(self) {
        self.stop().await.cleanup().await.unwrap();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    pub async fn of(r: reqwest::Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Assert this is problem+json with `status` and the given type slug.
    pub fn assert_problem(&self, status: u16, slug: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
        assert_eq!(
            self.body["type"].as_str().unwrap_or(""),
            format!("https://stratavore.dev/problems/{slug}"),
            "{self:?}"
        );
        self
    }

    /// The field names of a 422's errors.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// POST a JSON body, optionally with an Idempotency-Key.
pub async fn post(stack: &Stack, path: &str, body: serde_json::Value, key: Option<&str>) -> Reply {
    let mut req = stack.http.post(stack.url(path)).json(&body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    Reply::of(req.send().await.unwrap()).await
}

pub async fn get(stack: &Stack, path: &str) -> Reply {
    Reply::of(stack.http.get(stack.url(path)).send().await.unwrap()).await
}

pub async fn patch(stack: &Stack, path: &str, body: serde_json::Value) -> Reply {
    Reply::of(
        stack
            .http
            .patch(stack.url(path))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Counts that must not move when a request is refused: the gateway's log
/// and its projects.
pub async fn gateway_counts(stack: &Stack) -> (i64, i64) {
    let pool = stack.env.db.service_pool("api-gateway").await.unwrap();
    let log: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.projects")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (log, projects)
}

/// A fake orchestrator: publishes project events straight to the events
/// exchange, as the relay would, so a consumer can be tested alone.
pub struct FakeOrchestrator {
    publisher: stratavore_bus::Publisher,
    exchange: String,
}

impl FakeOrchestrator {
    pub async fn connect(broker: &stratavore_testkit::TestBroker) -> FakeOrchestrator {
        let conn = broker.connect().await.unwrap();
        FakeOrchestrator {
            publisher: stratavore_bus::Publisher::open_owning(conn).await.unwrap(),
            exchange: broker.topology().events_exchange(),
        }
    }

    /// `project.created` (version 1) or `project.updated` (later versions)
    /// of project `name`, with `description` set to `text`.
    pub fn event(name: &str, version: u64, text: &str) -> stratavore_events::Envelope {
        use stratavore_events::project::{ProjectCreated, ProjectEvent, ProjectUpdated};
        let event = if version == 1 {
            ProjectEvent::Created(ProjectCreated {
                command_id: uuid::Uuid::now_v7(),
                name: name.into(),
                path: format!("{ROOT}/{name}"),
                description: Some(text.into()),
                tags: vec![],
                max_concurrent_runners: 5,
            })
        } else {
            ProjectEvent::Updated(ProjectUpdated {
                command_id: uuid::Uuid::now_v7(),
                name: name.into(),
                description: Some(text.into()),
                tags: vec![],
                max_concurrent_runners: 5,
            })
        };
        stratavore_store::NewEntry::of(
            &event,
            "/stratavore/session-orchestrator",
            format!("project-{name}"),
            version,
            name,
            chrono::Utc::now(),
        )
        .envelope
    }

    pub async fn publish(&self, envelopes: &[stratavore_events::Envelope]) {
        let batch: Vec<_> = envelopes
            .iter()
            .map(|env| stratavore_bus::OutgoingMessage {
                exchange: self.exchange.clone(),
                routing_key: stratavore_events::TypeName::parse(&env.type_name)
                    .unwrap()
                    .event_routing_key()
                    .unwrap(),
                message: stratavore_bus::encode_event(env.to_cloudevent().unwrap()).unwrap(),
                persistent: true,
            })
            .collect();
        self.publisher.publish_batch(&batch).await.unwrap();
    }
}

/// Inbox rows of a service's schema by status.
pub async fn inbox_statuses(
    pool: &sqlx::PgPool,
    schema: &str,
) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT status, count(*) FROM {schema}.inbox GROUP BY status"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Check that every applied row of each stream was applied in version
/// order, each version once, from 1 up without gaps.
pub async fn assert_applied_in_order(pool: &sqlx::PgPool, schema: &str) {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT source_log, stream, stream_version FROM {schema}.inbox
         WHERE status = 'applied' ORDER BY applied_seq"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let mut last: std::collections::HashMap<(String, String), i64> = Default::default();
    for (source, stream, version) in rows {
        let previous = last
            .insert((source.clone(), stream.clone()), version)
            .unwrap_or(0);
        assert_eq!(
            version,
            previous + 1,
            "{source}/{stream} applied {version} after {previous}"
        );
    }
}

/// A small deterministic generator, for histories that must be the same
/// each run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}
