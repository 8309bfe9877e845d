//! outbox-relay: publishes every service's log to RabbitMQ in position
//! order, at least once, with one active relay per source schema
//! (DESIGN.md section 3).

pub mod config;
pub mod domain;
pub mod metrics;
pub mod source_relay;
mod unroutable;

use crate::config::{RelayConfig, RelaySection};
use crate::domain::poll_schedule::PollSchedule;
use crate::source_relay::SourceRelay;
use std::net::SocketAddr;
use std::time::Duration;
use stratavore_bus::Topology;
use stratavore_runtime::{Readiness, Shutdown, serve_health};
use stratavore_store::services::{RELAY_ROLE, service_db};
use stratavore_store::{Log, resolve_database_url, service_connect_options, service_pool};

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The health server could not bind.
    #[error(transparent)]
    Http(#[from] stratavore_runtime::HttpError),
    /// The database URL is unusable.
    #[error(transparent)]
    Pool(#[from] stratavore_store::PoolError),
    /// A source name is not a schema name (config validation prevents this).
    #[error("relay.sources: {0:?} is not a schema name")]
    Source(String),
}

/// A running relay, for callers (tests, the all-in-one process) that need
/// its address.
#[derive(Debug)]
pub struct RunningRelay {
    /// Where its health and metrics server listens.
    pub health_addr: SocketAddr,
}

/// Start the relay's tasks under `shutdown` and return once they run.
pub async fn start(config: RelayConfig, shutdown: Shutdown) -> Result<RunningRelay, RelayError> {
    let readiness = Readiness::new();
    readiness.set("database", false, "not connected yet");
    readiness.set("broker", false, "not connected yet");
    let server = serve_health(
        config.http.listen,
        readiness.clone(),
        None,
        shutdown.clone(),
    )
    .await?;
    let base_url = resolve_database_url(config.database.url.as_deref());
    let password = config.database.role_password.clone();
    let db = service_connect_options(&base_url, RELAY_ROLE, "relay", password.as_deref())?;
    let topology = Topology::new(config.broker.prefix.clone(), config.broker.delivery_limit);
    let r = &config.relay;

    // The relay's own schema (its cursors) is migrated before anything runs;
    // until the database answers, keep trying rather than exit, so a relay
    // started before Postgres comes up on its own.
    let migrate_shutdown = shutdown.clone();
    let migrate_readiness = readiness.clone();
    let db_section = config.database.clone();
    let backoff = RelaySection::ms(r.retry_backoff_ms);
    let sources: Vec<Log> = r
        .sources
        .iter()
        .map(|s| Log::new(s, Duration::from_secs(5)).ok_or_else(|| RelayError::Source(s.clone())))
        .collect::<Result<_, _>>()?;
    let schedule = PollSchedule {
        batch_size: r.batch_size as usize,
        idle_min: RelaySection::ms(r.idle_poll_min_ms),
        idle_max: RelaySection::ms(r.idle_poll_max_ms),
    };
    let relays: Vec<SourceRelay> = sources
        .into_iter()
        .map(|log| SourceRelay {
            log,
            db: db.clone(),
            broker_url: config.broker.url.clone(),
            topology: topology.clone(),
            schedule,
            lease_retry: RelaySection::ms(r.lease_retry_ms),
            retry_backoff: backoff,
            measure_interval: RelaySection::ms(r.measure_interval_ms),
            publish_timeout: RelaySection::ms(r.publish_timeout_ms),
            readiness: readiness.clone(),
        })
        .collect();
    let monitor = unroutable::UnroutableMonitor {
        broker_url: config.broker.url.clone(),
        topology: topology.clone(),
        interval: RelaySection::ms(r.measure_interval_ms),
        readiness: readiness.clone(),
    };
    let tasks = shutdown.clone();
    shutdown.spawn("relay supervisor", async move {
        if !migrate_relay_schema(
            &base_url,
            &db_section,
            &migrate_readiness,
            &migrate_shutdown,
            backoff,
        )
        .await
        {
            return;
        }
        for relay in relays {
            let name = format!("relay {}", relay.log.schema());
            tasks.spawn(name, relay.run(tasks.clone()));
        }
        tasks.spawn("unroutable monitor", monitor.run(tasks.clone()));
    });
    Ok(RunningRelay {
        health_addr: server.local_addr,
    })
}

/// Migrate `relay.cursors`, retrying until it works; false on shutdown.
async fn migrate_relay_schema(
    base_url: &str,
    db: &stratavore_runtime::DatabaseSection,
    readiness: &Readiness,
    shutdown: &Shutdown,
    backoff: Duration,
) -> bool {
    let Some(relay_db) = service_db("outbox-relay") else {
        return false;
    };
    loop {
        let result = async {
            let pool = service_pool(
                base_url,
                relay_db,
                db.role_password.as_deref(),
                2,
                db.acquire_timeout(),
            )
            .await?;
            stratavore_store::migrate::migrate_service(&pool, relay_db).await?;
            pool.close().await;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        match result {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot migrate the relay schema yet");
                readiness.set("database", false, e.to_string());
                tokio::select! {
                    _ = shutdown.wait() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}
