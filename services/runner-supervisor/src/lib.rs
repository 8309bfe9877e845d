//! runner-supervisor: runs the agent processes of its node. It registers
//! (killing what an earlier run left), consumes its control queue always
//! and its offer queues while it has room, claims offers, spawns each
//! started attempt under a `stratavore-shim`, and turns each runner
//! directory's transcript and exit record into process events. Its health
//! server also serves its transcripts to the gateway (with the node token),
//! and the lines it reads go out live on the live exchange.

pub mod active_runner;
pub mod attempt_setup;
pub mod config;
pub mod domain;
pub mod handlers;
pub mod heartbeat;
pub mod launch;
pub mod live_output;
pub mod liveness;
pub mod metrics;
pub mod node_store;
pub mod off_runtime;
pub mod offer_gate;
pub mod proc_sample;
pub mod projections;
pub mod recording;
pub mod registration;
pub mod runner_set;
pub mod transcript_http;
pub mod transcript_reader;
pub mod transcripts;
pub mod watcher;

use crate::config::SupervisorConfig;
use crate::domain::node_commands::NodeIdentity;
use crate::handlers::Supervisor;
use crate::heartbeat::Heartbeat;
use crate::launch::Launcher;
use crate::live_output::{OutputPublisher, OutputSink};
use crate::liveness::Liveness;
use crate::offer_gate::OfferGate;
use crate::recording::Recorder;
use crate::registration::RegisterError;
use crate::transcript_http::TranscriptState;
use crate::watcher::Watcher;
use std::sync::Arc;
use stratavore_consumer::{Consumer, Drainer};
use stratavore_events::process::root_key;
use stratavore_runtime::{
    ServiceBase, ServiceStartError, Shutdown, clock_from_section, start_service_base,
};
use stratavore_store::Log;
use uuid::Uuid;

/// The service's name: its binary, its role's and its queues' names.
pub const SERVICE: &str = "runner-supervisor";
/// Its schema (and log).
pub const SCHEMA: &str = "supervisor";

/// The supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The common part (health server, schema) failed.
    #[error(transparent)]
    Base(#[from] ServiceStartError),
}

/// The supervisor's log.
fn log(config: &SupervisorConfig) -> Log {
    // SCHEMA is a constant plain identifier, so a log always exists.
    Log::new(SCHEMA, config.base.database.append_lock_wait())
        .expect("supervisor is a plain schema name")
}

fn supervisor(config: &SupervisorConfig, incarnation: Uuid) -> Supervisor {
    Supervisor {
        me: NodeIdentity {
            node: config.node.id.clone(),
            incarnation,
        },
        roots: config.node.root_names(),
        capacity: config.node.capacity,
        clock: clock_from_section(&config.base.clock),
    }
}

/// The drainer over an existing pool, for the operator subcommands
/// (rebuilds and dead letters need no incarnation).
pub fn drainer(config: &SupervisorConfig, pool: sqlx::PgPool) -> Drainer<Supervisor> {
    drainer_for(config, pool, Arc::new(supervisor(config, Uuid::nil())))
}

fn drainer_for(
    config: &SupervisorConfig,
    pool: sqlx::PgPool,
    service: Arc<Supervisor>,
) -> Drainer<Supervisor> {
    Drainer {
        pool,
        log: log(config),
        service,
        max_attempts: config.consumer.max_attempts,
        batch: usize::from(config.consumer.drain_batch),
        name: SERVICE.to_owned(),
        // Nodes are not interchangeable: each applies only what its own
        // queues delivered (several may share one database).
        owner: config.node.id.clone(),
        lag: stratavore_consumer::ApplyLag::default(),
        commits: stratavore_consumer::Commits::default(),
        turn: Default::default(),
    }
}

/// Start the node under `shutdown`: register, then consume, watch and
/// beat. Returns once the first registration is done (None when shutdown
/// came first); later incarnations follow by themselves whenever the fence
/// ends one.
pub async fn start(
    config: SupervisorConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, StartError> {
    let transcripts = TranscriptState::new(config.node.token.clone(), config.node.data_dir());
    let Some(base) = start_service_base(
        SERVICE,
        &config.base,
        Some(transcript_http::router(transcripts.clone())),
        &["registration", "consumer"],
        &shutdown,
    )
    .await?
    else {
        return Ok(None);
    };
    transcripts.set_pool(base.pool.clone());
    if !config.node.token.is_set() {
        tracing::warn!(
            "node.token is empty: the gateway cannot read this node's transcripts (set STRATAVORE__NODE__TOKEN)"
        );
    }
    let Some(first) = register_incarnation(&config, &base, &shutdown).await else {
        return Ok(None);
    };
    // One publisher for the node's lifetime: the source names the node,
    // not an incarnation.
    let (output, publisher) = OutputPublisher::new(
        config.base.broker.url.clone(),
        base.topology.clone(),
        format!("/stratavore/{SERVICE}/{}", config.node.id),
        config.base.retry_backoff(),
    );
    shutdown.spawn(
        format!("{SERVICE} live output"),
        publisher.run(shutdown.clone()),
    );
    let node = NodeRuntime {
        config: Arc::new(config),
        base: ServiceBase {
            pool: base.pool.clone(),
            topology: base.topology.clone(),
            readiness: base.readiness.clone(),
            health_addr: base.health_addr,
        },
        output,
    };
    shutdown.spawn(
        format!("{SERVICE} incarnations"),
        node.run(first, shutdown.clone()),
    );
    Ok(Some(base))
}

/// What every incarnation of the node starts from.
struct NodeRuntime {
    config: Arc<SupervisorConfig>,
    base: ServiceBase,
    /// Where every incarnation's watcher offers the lines it reads.
    output: OutputSink,
}

/// A registered incarnation, not yet running.
struct Incarnation {
    service: Arc<Supervisor>,
    recorder: Recorder,
}

/// Make a new incarnation and register it; None when shutdown came first.
async fn register_incarnation(
    config: &SupervisorConfig,
    base: &ServiceBase,
    shutdown: &Shutdown,
) -> Option<Incarnation> {
    let service = Arc::new(supervisor(config, Uuid::now_v7()));
    let recorder = Recorder {
        pool: base.pool.clone(),
        log: log(config),
        service: service.clone(),
    };
    register_until_done(config, base, &recorder, shutdown)
        .await
        .then_some(Incarnation { service, recorder })
}

impl NodeRuntime {
    /// Run incarnation after incarnation: each until shutdown, or until its
    /// fence ends it, when the node registers again (killing whatever of
    /// its runners is left) before it does anything else.
    async fn run(self, first: Incarnation, shutdown: Shutdown) {
        let mut current = first;
        loop {
            let (scope, liveness) = self.spawn_incarnation(current, &shutdown);
            scope.wait().await;
            let fenced = liveness.is_fenced();
            if let Err(e) = scope.wait_for_tasks(INCARNATION_STOP_WITHIN).await {
                tracing::error!(error = %e, "an incarnation's tasks did not stop");
            }
            if !fenced || shutdown.is_triggered() {
                return;
            }
            self.base
                .readiness
                .set("registration", false, "fenced: registering again");
            match register_incarnation(&self.config, &self.base, &shutdown).await {
                Some(next) => current = next,
                None => return,
            }
        }
    }

    /// Start an incarnation's tasks under a scope of their own.
    fn spawn_incarnation(
        &self,
        incarnation: Incarnation,
        shutdown: &Shutdown,
    ) -> (Shutdown, Arc<Liveness>) {
        let config = &self.config;
        let base = &self.base;
        let scope = shutdown.child();
        let liveness = Arc::new(Liveness::new(config.node.ttl(), scope.clone()));
        let drainer = drainer_for(config, base.pool.clone(), incarnation.service.clone());
        let settings = config.consumer.settings(
            base.topology.node_control_queue(&config.node.id),
            config.base.retry_backoff(),
        );
        let control = Consumer {
            drainer: drainer.clone(),
            broker_url: config.base.broker.url.clone(),
            topology: base.topology.clone(),
            settings: settings.clone(),
            readiness: base.readiness.clone(),
        };
        scope.spawn(
            format!("{SERVICE} control consumer"),
            control.run(scope.clone()),
        );
        let mut offer_queues = vec![base.topology.node_offer_queue(&config.node.id)];
        offer_queues.extend(
            config
                .node
                .root_names()
                .iter()
                .map(|r| base.topology.root_offer_queue(&root_key(r))),
        );
        let gate = OfferGate::new(
            offer_queues,
            drainer,
            config.base.broker.url.clone(),
            base.topology.clone(),
            settings,
            base.readiness.clone(),
            scope.clone(),
        );
        let launcher = Launcher {
            node: config.node.clone(),
            profiles: config.profiles.clone(),
            pricing: config.pricing.clone(),
        };
        let heartbeat = Heartbeat {
            liveness: liveness.clone(),
            me: incarnation.service.me.clone(),
            capacity: config.node.capacity,
            interval: config.node.heartbeat_interval(),
            broker_url: config.base.broker.url.clone(),
            topology: base.topology.clone(),
            source: incarnation.service.source(),
        };
        scope.spawn(format!("{SERVICE} heartbeat"), heartbeat.run(scope.clone()));
        let watcher = Watcher::new(incarnation.recorder, launcher, gate, liveness.clone());
        scope.spawn(
            format!("{SERVICE} runner watcher"),
            live_output::with_sink(self.output.clone(), watcher.run(scope.clone())),
        );
        (scope, liveness)
    }
}

/// How long an ended incarnation's tasks may take to stop.
const INCARNATION_STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Register, retrying while the database or the broker is away; false when
/// shutdown came first.
async fn register_until_done(
    config: &SupervisorConfig,
    base: &ServiceBase,
    recorder: &Recorder,
    shutdown: &Shutdown,
) -> bool {
    let address = base.health_addr.to_string();
    loop {
        // A broker that swallows packets holds `connect` for long: the
        // registration gives way to shutdown rather than wait it out.
        let outcome: Result<(), RegisterError> = tokio::select! {
            _ = shutdown.wait() => return false,
            r = registration::register(config, &base.topology, recorder, address.clone()) => r,
        };
        match outcome {
            Ok(()) => {
                base.readiness.set("registration", true, "registered");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; retrying");
                base.readiness.set("registration", false, e.to_string());
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return false,
            _ = tokio::time::sleep(config.base.retry_backoff()) => {}
        }
    }
}
