//! api-gateway: the REST API, the live event stream, the dashboard and the
//! read models of everything. It accepts clients' commands into its log and
//! answers from read models it folds from the events it consumes.

mod agent_events;
pub mod api;
pub mod budget_models;
pub mod commands;
pub mod config;
pub mod heartbeats;
pub mod http;
pub mod live_consumer;
pub mod node_models;
mod progress;
mod project_models;
pub mod read_models;
mod rows;
pub mod runner_logs;
pub mod runner_models;
pub mod search;
pub mod service;
pub mod session_models;

use crate::api::ApiState;
use crate::commands::Api;
use crate::config::GatewayConfig;
use crate::heartbeats::HeartbeatCache;
use crate::live_consumer::LiveConsumer;
use crate::runner_logs::node_client::NodeTranscripts;
use crate::runner_logs::output_hub::OutputHub;
use crate::service::GatewayService;
use std::sync::Arc;
use std::time::Duration;
use stratavore_consumer::{Consumer, Drainer};
use stratavore_runtime::{
    ConfigError, ServiceBase, ServiceStartError, Shutdown, clock_from_section, start_service_base,
};
use stratavore_store::Log;

/// The service's name: its binary, its role's and its queue's names.
pub const SERVICE: &str = "api-gateway";
/// Its schema (and log).
pub const SCHEMA: &str = "gateway";

/// The drainer over an existing pool (the running service and the
/// operator subcommands alike).
pub fn drainer(config: &GatewayConfig, pool: sqlx::PgPool) -> Drainer<GatewayService> {
    Drainer {
        pool,
        log: gateway_log(config),
        service: Arc::new(GatewayService),
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

fn gateway_log(config: &GatewayConfig) -> Log {
    // SCHEMA is a constant plain identifier, so a log always exists.
    Log::new(SCHEMA, config.base.database.append_lock_wait())
        .expect("gateway is a plain schema name")
}

/// Start the service under `shutdown`; None when shutdown came before
/// Postgres and RabbitMQ were reachable. The API answers 503 until then.
pub async fn start(
    config: GatewayConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    let state = ApiState::default();
    let allowed = config
        .allowed_hosts()
        .map_err(|e| ServiceStartError::Config(Box::new(e)))?;
    let routes = api::router(state.clone(), allowed);
    let transcripts = NodeTranscripts::new(
        config.api.node_token.clone(),
        Duration::from_millis(config.api.node_timeout_ms),
    )
    .map_err(|e| {
        ServiceStartError::Config(Box::new(ConfigError::invalid(
            "api.node_timeout_ms",
            format!("cannot make the nodes' HTTP client: {e}"),
        )))
    })?;
    if !config.api.node_token.is_set() {
        tracing::warn!(
            "api.node_token is empty: runner logs cannot be read from the nodes (set STRATAVORE__API__NODE_TOKEN)"
        );
    }
    let Some(base) = start_service_base(
        SERVICE,
        &config.base,
        Some(routes),
        &["consumer", search::READINESS_CHECK],
        &shutdown,
    )
    .await?
    else {
        return Ok(None);
    };
    let search = Arc::new(search::Search::minilm(&config.search));
    search.index().ensure(&base.pool).await.map_err(|e| {
        ServiceStartError::Config(Box::new(ConfigError::invalid("search", e.to_string())))
    })?;
    search.report(&base.readiness);
    let clock = clock_from_section(&config.base.clock);
    let heartbeats = HeartbeatCache::default();
    let outputs = OutputHub::default();
    let drainer = drainer(&config, base.pool.clone());
    state.set(Api {
        pool: base.pool.clone(),
        log: gateway_log(&config),
        service: Arc::new(GatewayService),
        clock: clock.clone(),
        outcome_poll: Duration::from_millis(config.api.outcome_poll_ms),
        commits: drainer.commits.clone(),
        heartbeats: heartbeats.clone(),
        transcripts,
        outputs: outputs.clone(),
        shutdown: shutdown.clone(),
        search: Arc::clone(&search),
    });
    search::worker::EmbeddingWorker::new(
        base.pool.clone(),
        search,
        config.search.clone(),
        drainer.lag.clone(),
    )
    .spawn(base.readiness.clone(), &shutdown);
    LiveConsumer {
        broker_url: config.base.broker.url.clone(),
        topology: base.topology.clone(),
        cache: heartbeats,
        outputs,
        clock,
        retry_backoff: config.base.retry_backoff(),
    }
    .spawn(&shutdown);
    Consumer::spawn_for_service(drainer, &base, &config.base, &config.consumer, &shutdown);
    Ok(Some(base))
}
