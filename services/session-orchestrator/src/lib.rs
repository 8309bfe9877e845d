//! session-orchestrator: owns projects, the runners' lifecycle (launch
//! saga, placement, restarts, relaunches), nodes' liveness and drains,
//! sessions, budgets and durable timers. It is
//! the one owner of those decisions: it consumes commands and the facts
//! supervisors report, decides with pure domain code, and records the
//! outcome in its log.

mod budget_handlers;
pub mod budget_store;
pub mod config;
pub mod domain;
pub mod handlers;
mod launch_handlers;
pub mod liveness_watch;
pub mod metrics;
mod node_handlers;
pub mod node_store;
pub mod projections;
mod received;
mod runner_handlers;
pub mod runner_store;
pub mod session_usage;
mod timer_handlers;
pub mod timer_worker;

use crate::config::OrchestratorConfig;
use crate::handlers::Orchestrator;
use std::sync::Arc;
use stratavore_consumer::{Consumer, Drainer};
use stratavore_runtime::{
    ServiceBase, ServiceStartError, Shutdown, clock_from_section, start_service_base,
};
use stratavore_store::Log;

/// The service's name: its binary, its role's and its queue's names.
pub const SERVICE: &str = "session-orchestrator";
/// Its schema (and log).
pub const SCHEMA: &str = "orchestrator";

/// The drainer (decider, projection, pool, log) over an existing pool; used
/// by the running service and by the operator subcommands alike.
pub fn drainer(config: &OrchestratorConfig, pool: sqlx::PgPool) -> Drainer<Orchestrator> {
    let service = Orchestrator {
        allowed_roots: config.projects.allowed_roots.clone(),
        clock: clock_from_section(&config.base.clock),
        runners: config.runners.clone(),
        profiles: Arc::new(config.profiles.clone()),
        budget_time_zone: config.budgets.time_zone.clone(),
    };
    Drainer {
        pool,
        // SCHEMA is a constant plain identifier, so a log always exists.
        log: Log::new(SCHEMA, config.base.database.append_lock_wait())
            .expect("orchestrator is a plain schema name"),
        service: Arc::new(service),
        max_attempts: config.consumer.max_attempts,
        batch: usize::from(config.consumer.drain_batch),
        name: SERVICE.to_owned(),
        // Replicas are interchangeable: any may apply any row.
        owner: String::new(),
        lag: stratavore_consumer::ApplyLag::default(),
        commits: stratavore_consumer::Commits::default(),
        turn: Default::default(),
    }
}

/// Start the service under `shutdown`; None when shutdown came before
/// Postgres and RabbitMQ were reachable.
pub async fn start(
    config: OrchestratorConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    let Some(base) =
        start_service_base(SERVICE, &config.base, None, &["consumer"], &shutdown).await?
    else {
        return Ok(None);
    };
    let drainer = drainer(&config, base.pool.clone());
    let timers = timer_worker::TimerWorker {
        pool: drainer.pool.clone(),
        log: drainer.log.clone(),
        service: drainer.service.clone(),
        interval: std::time::Duration::from_millis(config.runners.timer_poll_ms),
    };
    shutdown.spawn(format!("{SERVICE} timers"), timers.run(shutdown.clone()));
    let liveness = liveness_watch::LivenessWatch {
        replica: uuid::Uuid::new_v4(),
        broker_url: config.base.broker.url.clone(),
        topology: base.topology.clone(),
        pool: drainer.pool.clone(),
        log: drainer.log.clone(),
        service: drainer.service.clone(),
        interval: std::time::Duration::from_millis(config.runners.heartbeat_interval_ms),
        ticks_to_convict: config.runners.ticks_to_convict(),
        queue_ttl_ms: config.runners.liveness_ttl_ms,
        retry_backoff: config.base.retry_backoff(),
    };
    shutdown.spawn(
        format!("{SERVICE} liveness"),
        liveness.run(shutdown.clone()),
    );
    shutdown.spawn(
        format!("{SERVICE} state gauges"),
        metrics::state_gauges(
            base.pool.clone(),
            std::time::Duration::from_secs(5),
            shutdown.clone(),
        ),
    );
    shutdown.spawn(
        format!("{SERVICE} budget gauges"),
        metrics::budget_gauges(
            base.pool.clone(),
            clock_from_section(&config.base.clock),
            std::time::Duration::from_secs(5),
            shutdown.clone(),
        ),
    );
    Consumer::spawn_for_service(drainer, &base, &config.base, &config.consumer, &shutdown);
    Ok(Some(base))
}
