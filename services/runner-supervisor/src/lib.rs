//! runner-supervisor: runs the agent processes of its node. It registers
//! (killing what an earlier run left), consumes its control queue always
//! and its offer queues while it has room, claims offers, spawns each
//! started attempt under a `stratavore-shim`, and turns each runner
//! directory's transcript and exit record into process events.

pub mod active_runner;
pub mod attempt_setup;
pub mod config;
pub mod domain;
pub mod handlers;
pub mod launch;
pub mod metrics;
pub mod node_store;
pub mod offer_gate;
pub mod projections;
pub mod recording;
pub mod registration;
pub mod transcript_reader;
pub mod transcripts;
pub mod watcher;

use crate::config::SupervisorConfig;
use crate::domain::node_commands::NodeIdentity;
use crate::handlers::Supervisor;
use crate::launch::Launcher;
use crate::offer_gate::OfferGate;
use crate::recording::Recorder;
use crate::registration::RegisterError;
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
        name: SERVICE.to_owned(),
    }
}

/// Start the node under `shutdown`: register, then consume and watch.
/// None when shutdown came before it could register.
pub async fn start(
    config: SupervisorConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, StartError> {
    let Some(base) = start_service_base(
        SERVICE,
        &config.base,
        None,
        &["registration", "consumer"],
        &shutdown,
    )
    .await?
    else {
        return Ok(None);
    };
    let service = Arc::new(supervisor(&config, Uuid::now_v7()));
    let recorder = Recorder {
        pool: base.pool.clone(),
        log: log(&config),
        service: service.clone(),
    };
    if !register_until_done(&config, &base, &recorder, &shutdown).await {
        return Ok(None);
    }
    let drainer = drainer_for(&config, base.pool.clone(), service);
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
    shutdown.spawn(
        format!("{SERVICE} control consumer"),
        control.run(shutdown.clone()),
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
        shutdown.clone(),
    );
    let launcher = Launcher {
        node: config.node.clone(),
        profiles: config.profiles.clone(),
        pricing: config.pricing.clone(),
    };
    let watcher = Watcher::new(recorder, launcher, gate);
    shutdown.spawn(
        format!("{SERVICE} runner watcher"),
        watcher.run(shutdown.clone()),
    );
    Ok(Some(base))
}

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
        let outcome: Result<(), RegisterError> =
            registration::register(config, &base.topology, recorder, address.clone()).await;
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
