//! What the scenarios start: a database copy and a broker prefix of their
//! own (the test kit's), services in this process or as the built
//! binaries, and a supervisor node running the simulated agent. Services
//! in-process are configured exactly as the integration tests configure
//! them, with production defaults for everything that affects speed.

use anyhow::Context;
use api_gateway::config::GatewayConfig;
use outbox_relay::config::RelayConfig;
use session_orchestrator::config::OrchestratorConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratavore_runtime::{ServiceConfig, Shutdown};
use stratavore_testkit::{ServiceProcess, TestEnv};

/// How long a service (or a node registration) may take to come up on a
/// busy machine before the scenario gives up.
pub const READY_WITHIN: Duration = Duration::from_secs(90);

/// A workspace binary next to this one (`make bench` builds them all into
/// the same target folder).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("the bench binary has no folder")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built (run `cargo build --bins` with the {} profile first)",
        path.display(),
        crate::machine::build_profile()
    );
    Ok(path)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn base(env: &TestEnv, base: &mut ServiceConfig) {
    base.database.url = Some(env.db.url());
    base.broker.url = env.broker.url().to_owned();
    base.broker.prefix = env.broker.prefix().to_owned();
    base.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
}

/// The orchestrator, its projects allowed under `root`.
pub fn orchestrator_config(env: &TestEnv, root: &Path) -> OrchestratorConfig {
    let mut c = OrchestratorConfig::default();
    base(env, &mut c.base);
    c.projects.allowed_roots = vec![root.to_owned()];
    c
}

/// The gateway, with the provisioned embedding model and the nodes' token.
pub fn gateway_config(env: &TestEnv) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    base(env, &mut c.base);
    c.search.model_dir = stratavore_testkit::embedding_model_dir();
    c.api.node_token = api_gateway::config::NodeToken::new(NODE_TOKEN);
    c
}

/// The relay, over every service log.
pub fn relay_config(env: &TestEnv) -> RelayConfig {
    let mut c = RelayConfig::default();
    c.database.url = Some(env.db.url());
    c.broker.url = env.broker.url().to_owned();
    c.broker.prefix = env.broker.prefix().to_owned();
    c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c
}

/// Which services to run in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Services {
    /// The orchestrator (commands need it; the pipeline writes its log
    /// itself instead).
    pub orchestrator: bool,
    /// The relay.
    pub relay: bool,
}

/// A scenario's outcome once its stack was stopped (`stopped`): a cleanup
/// that fails after a measurement succeeded is noted, not an error, since
/// the figures stand.
fn outcome_after_cleanup(
    outcome: anyhow::Result<()>,
    stopped: anyhow::Result<()>,
    r: &mut crate::report::ScenarioResult,
) -> anyhow::Result<()> {
    outcome?;
    if let Err(e) = stopped {
        r.note(format!("cleanup after the measurement failed: {e:#}"));
    }
    Ok(())
}

/// Drop the database and prefix, given 120 s.
async fn drop_env(env: TestEnv) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(120), env.cleanup())
        .await
        .map_err(|_| anyhow::anyhow!("dropping the database and prefix took over 120 s"))?
}

/// Services running in this process over one environment.
pub struct InProcess {
    /// The database and prefix.
    pub env: TestEnv,
    /// The gateway's API.
    pub gateway: SocketAddr,
    /// A scratch folder: the allowed project root, the node's data.
    pub scratch: PathBuf,
    shutdowns: Vec<Shutdown>,
}

impl InProcess {
    /// A fresh environment with the gateway and the chosen services.
    pub async fn start(services: Services) -> anyhow::Result<Self> {
        let env = TestEnv::new().await?;
        let scratch = stratavore_testkit::scratch_dir().join(format!(
            "bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(scratch.join("root"))?;
        let scratch = scratch.canonicalize()?;
        let mut shutdowns = Vec::new();
        if services.orchestrator {
            let s = Shutdown::new();
            session_orchestrator::start(
                orchestrator_config(&env, &scratch.join("root")),
                s.clone(),
            )
            .await?
            .context("the orchestrator stopped before it started")?;
            shutdowns.push(s);
        }
        let s = Shutdown::new();
        let gateway = api_gateway::start(gateway_config(&env), s.clone())
            .await?
            .context("the gateway stopped before it started")?;
        shutdowns.push(s);
        if services.relay {
            let s = Shutdown::new();
            outbox_relay::start(relay_config(&env), s.clone()).await?;
            shutdowns.push(s);
        }
        Ok(Self {
            env,
            gateway: gateway.health_addr,
            scratch,
            shutdowns,
        })
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// The allowed project root.
    pub fn root(&self) -> PathBuf {
        self.scratch.join("root")
    }

    /// Stop the services and drop the database and prefix, then hand back
    /// the scenario's outcome ([`outcome_after_cleanup`]).
    pub async fn finish(
        self,
        outcome: anyhow::Result<()>,
        r: &mut crate::report::ScenarioResult,
    ) -> anyhow::Result<()> {
        outcome_after_cleanup(outcome, self.stop().await, r)
    }

    /// Stop the services (each given 30 s) and drop the database and
    /// prefix (given 120 s), so a stack that cannot keep up never holds
    /// the run.
    async fn stop(self) -> anyhow::Result<()> {
        for s in &self.shutdowns {
            s.trigger();
        }
        for s in self.shutdowns {
            if let Err(e) = s.wait_for_tasks(Duration::from_secs(30)).await {
                tracing::warn!(error = %e, "a service did not stop in time");
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        drop_env(self.env).await
    }
}

/// The setting that puts a service's health server on `port`.
pub fn listen_on(port: u16) -> (String, String) {
    (
        "STRATAVORE__HTTP__LISTEN".to_owned(),
        format!("127.0.0.1:{port}"),
    )
}

/// A service's binary (beside the bench's own) started against `env`,
/// with its health server on `port` and `extra` added to its environment.
/// The gateway gets the provisioned embedding model. Not waited for: see
/// [`wait_ready`].
pub async fn start_binary(
    env: &TestEnv,
    service: &str,
    port: u16,
    extra: Vec<(String, String)>,
) -> anyhow::Result<ServiceProcess> {
    let mut vars = env.service_env();
    vars.push(listen_on(port));
    if service == "api-gateway" {
        vars.push((
            "STRATAVORE__SEARCH__MODEL_DIR".into(),
            stratavore_testkit::embedding_model_dir()
                .to_string_lossy()
                .into_owned(),
        ));
    }
    vars.extend(extra);
    ServiceProcess::start(
        &sibling_binary(service)?,
        &format!("bench-{service}-{port}"),
        vars,
    )
    .await
}

/// Services running as their own processes (the built binaries) over one
/// environment, each ready.
pub struct Binaries {
    /// The database and prefix.
    pub env: TestEnv,
    running: Vec<(String, ServiceProcess)>,
}

impl Binaries {
    /// A fresh environment with `services` started and ready.
    pub async fn start(services: &[&str]) -> anyhow::Result<Self> {
        let mut this = Self {
            env: TestEnv::new().await?,
            running: Vec::new(),
        };
        let http = reqwest::Client::new();
        let mut ports = Vec::new();
        for service in services {
            let port = free_port()?;
            match start_binary(&this.env, service, port, Vec::new()).await {
                Ok(process) => this.running.push(((*service).to_owned(), process)),
                Err(e) => return Err(this.stop_after(e).await),
            }
            ports.push(port);
        }
        for port in ports {
            if let Err(e) = wait_ready(&http, &format!("http://127.0.0.1:{port}/readyz")).await {
                return Err(this.stop_after(e).await);
            }
        }
        Ok(this)
    }

    /// The process id of `service`, while it runs.
    pub fn pid(&self, service: &str) -> Option<u32> {
        self.running
            .iter()
            .find(|(name, _)| name == service)
            .and_then(|(_, process)| process.pid())
    }

    async fn stop_after(self, e: anyhow::Error) -> anyhow::Error {
        if let Err(cleanup) = self.stop().await {
            tracing::warn!(error = %cleanup, "cleaning up after a failed start");
        }
        e
    }

    /// Stop the services and drop the database and prefix, then hand back
    /// the scenario's outcome ([`outcome_after_cleanup`]).
    pub async fn finish(
        self,
        outcome: anyhow::Result<()>,
        r: &mut crate::report::ScenarioResult,
    ) -> anyhow::Result<()> {
        outcome_after_cleanup(outcome, self.stop().await, r)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        for (_, process) in &mut self.running {
            if let Err(e) = process.terminate().await {
                tracing::warn!(error = %e, "a service did not stop in time");
            }
        }
        drop_env(self.env).await
    }
}

/// The node token the gateway and the bench's nodes share.
pub const NODE_TOKEN: &str = "bench-node-token";

/// A supervisor node process serving `root`, running the simulated agent
/// for profile `demo`, with `extra` added to its environment.
pub async fn start_node(
    env: &TestEnv,
    scratch: &Path,
    root: &Path,
    extra: Vec<(String, String)>,
) -> anyhow::Result<(String, ServiceProcess)> {
    let node = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let root_str = root.to_string_lossy().into_owned();
    env.broker
        .track_node(&node, &[stratavore_events::process::root_key(&root_str)]);
    let home = scratch.join(format!("home-{node}"));
    std::fs::create_dir_all(&home)?;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut vars = env.service_env();
    vars.extend([
        ("STRATAVORE__NODE__ID".to_owned(), node.clone()),
        ("STRATAVORE__NODE__ROOTS".to_owned(), root_str),
        (
            "STRATAVORE__NODE__DATA_DIR".to_owned(),
            path(scratch.join(format!("node-{node}"))),
        ),
        ("HOME".to_owned(), path(home)),
        (
            "STRATAVORE__NODE__SHIM_PATH".to_owned(),
            path(sibling_binary("stratavore-shim")?),
        ),
        (
            "STRATAVORE__PROFILES__DEMO__EXECUTABLE".to_owned(),
            path(sibling_binary("stratavore-sim-agent")?),
        ),
        ("STRATAVORE__NODE__TOKEN".to_owned(), NODE_TOKEN.to_owned()),
    ]);
    vars.extend(extra);
    let process = ServiceProcess::start(
        &sibling_binary("runner-supervisor")?,
        &format!("bench-{node}"),
        vars,
    )
    .await?;
    Ok((node, process))
}

/// Wait until `url` answers 200, or fail after [`READY_WITHIN`]; returns
/// how long it took.
pub async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < READY_WITHIN,
            "{url} was not ready within {READY_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the node has appended its registration.
pub async fn wait_registered(admin: &sqlx::PgPool) -> anyhow::Result<()> {
    stratavore_testkit::wait_until("the node to register", READY_WITHIN, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supervisor.log WHERE type = $1")
            .bind("io.stratavore.node.registered.v1")
            .fetch_one(admin)
            .await?;
        Ok((n > 0).then_some(()))
    })
    .await
}
