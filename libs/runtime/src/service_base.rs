//! What every service with a schema does at start, in one place: serve
//! health, connect with its own role and migrate its schema, declare the
//! broker topology, and keep `/readyz` true to the database and broker.
//!
//! A service started before Postgres or RabbitMQ is up does not exit: it
//! reports not ready and keeps trying, so `up` can start everything at once.

use crate::config::{BrokerSection, ClockSection, DatabaseSection, HttpSection, TelemetrySection};
use crate::{ConfigError, Readiness, Shutdown, Validate, serve_health};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;
use stratavore_bus::{Topology, connect};
use stratavore_store::services::{ServiceDb, service_db};
use stratavore_store::{migrate::migrate_service, resolve_database_url, service_pool};

/// The sections every service's config has. Each service wraps it in a
/// config type of its own whose `Default` sets the service's port; the
/// loader always starts from that default, so every field is present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Postgres.
    pub database: DatabaseSection,
    /// RabbitMQ.
    pub broker: BrokerSection,
    /// Health, metrics (and for the gateway, the API).
    pub http: HttpSection,
    /// Logs.
    pub telemetry: TelemetrySection,
    /// Wall clock.
    pub clock: ClockSection,
    /// How long to wait between attempts to reach Postgres or RabbitMQ.
    pub retry_backoff_ms: u64,
}

impl ServiceConfig {
    /// Defaults with the health server on loopback at `port`.
    pub fn with_port(port: u16) -> Self {
        Self {
            database: DatabaseSection::default(),
            broker: BrokerSection::default(),
            http: HttpSection::loopback(port),
            telemetry: TelemetrySection::default(),
            clock: ClockSection::default(),
            retry_backoff_ms: 1000,
        }
    }
}

/// Load a service's config: the common sections (health server on
/// 127.0.0.1:`port` unless configured) and the service's own sections `E`,
/// both from the same layered sources, both validated by the caller.
pub fn load_service_config<E>(
    loader: &crate::ConfigLoader,
    port: u16,
) -> Result<(ServiceConfig, E), ConfigError>
where
    E: serde::de::DeserializeOwned + Serialize + Default,
{
    let base = loader.load_with_defaults(&ServiceConfig::with_port(port))?;
    base.validate()?;
    Ok((base, loader.load()?))
}

impl ServiceConfig {
    /// `retry_backoff_ms` as a `Duration`.
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms)
    }
}

impl Validate for ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.broker.validate()?;
        self.http.validate()?;
        self.telemetry.validate()?;
        self.clock.validate()?;
        if self.retry_backoff_ms == 0 {
            return Err(ConfigError::invalid("retry_backoff_ms", "must be positive"));
        }
        Ok(())
    }
}

/// A service could not start at all (as opposed to infrastructure that is
/// not up yet, which it waits for).
#[derive(Debug, thiserror::Error)]
pub enum ServiceStartError {
    /// No schema is known for this service name.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// The health server could not bind.
    #[error(transparent)]
    Http(#[from] crate::HttpError),
    /// A setting that passed validation could not be applied.
    #[error(transparent)]
    Config(Box<ConfigError>),
}

/// What a started service has: its pool, topology names and readiness.
#[derive(Debug, Clone)]
pub struct ServiceBase {
    /// Its own role's pool, schema migrated.
    pub pool: PgPool,
    /// Names under its prefix.
    pub topology: Topology,
    /// The checks `/readyz` reports.
    pub readiness: Readiness,
    /// Where its health server listens.
    pub health_addr: SocketAddr,
}

/// Start the common part of `service`: returns once its schema is migrated
/// and its topology declared (waiting for both as long as it takes, or
/// until shutdown, which yields None).
pub async fn start_service_base(
    service: &str,
    config: &ServiceConfig,
    extra_routes: Option<axum::Router>,
    pending_checks: &[&'static str],
    shutdown: &Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    let db =
        service_db(service).ok_or_else(|| ServiceStartError::UnknownService(service.to_owned()))?;
    let readiness = Readiness::new();
    readiness.set("database", false, "not connected yet");
    readiness.set("broker", false, "not connected yet");
    // Checks the service sets once its own start is done (its consumer, a
    // node's registration), not ready until then, so `/readyz` never says
    // ready between this base and the service's own start.
    for check in pending_checks {
        readiness.set(check, false, "starting");
    }
    let server = serve_health(
        config.http.listen,
        readiness.clone(),
        extra_routes,
        shutdown.clone(),
    )
    .await?;
    let backoff = Duration::from_millis(config.retry_backoff_ms);
    let topology = Topology::new(config.broker.prefix.clone(), config.broker.delivery_limit);

    let Some(pool) = retry(shutdown, backoff, &readiness, "database", || {
        connect_and_migrate(config, db)
    })
    .await
    else {
        return Ok(None);
    };
    let declare = || async {
        let conn = connect(&config.broker.url, service).await?;
        let channel = conn.create_channel().await.map_err(|source| {
            stratavore_bus::BrokerError::Operation {
                operation: "channel.open",
                source,
            }
        })?;
        topology.declare_all(&channel).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(conn)
    };
    let Some(conn) = retry(shutdown, backoff, &readiness, "broker", declare).await else {
        return Ok(None);
    };
    shutdown.spawn(
        format!("{service} readiness probe"),
        probe_readiness(
            pool.clone(),
            (config.broker.url.clone(), conn),
            readiness.clone(),
            shutdown.clone(),
            backoff,
        ),
    );
    Ok(Some(ServiceBase {
        pool,
        topology,
        readiness,
        health_addr: server.local_addr,
    }))
}

/// Connect as the service's role and migrate its schema (what operator
/// subcommands use; the running service goes through
/// [`start_service_base`]).
pub async fn connect_and_migrate(
    config: &ServiceConfig,
    db: &ServiceDb,
) -> Result<PgPool, Box<dyn std::error::Error + Send + Sync>> {
    let url = resolve_database_url(config.database.url.as_deref());
    let pool = service_pool(
        &url,
        db,
        config.database.role_password.as_deref(),
        config.database.max_connections,
        config.database.acquire_timeout(),
    )
    .await?;
    migrate_service(&pool, db).await?;
    Ok(pool)
}

/// Call `attempt` until it succeeds, marking `check` not ready meanwhile.
async fn retry<T, F, Fut>(
    shutdown: &Shutdown,
    backoff: Duration,
    readiness: &Readiness,
    check: &'static str,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Box<dyn std::error::Error + Send + Sync>>>,
{
    loop {
        match attempt().await {
            Ok(value) => {
                readiness.set(check, true, "connected");
                return Some(value);
            }
            Err(e) => {
                tracing::warn!(check, error = %e, "not reachable yet; retrying");
                readiness.set(check, false, e.to_string());
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Keep the readiness checks true to the database and the broker,
/// reconnecting to the broker when its connection drops.
async fn probe_readiness(
    pool: PgPool,
    (broker_url, conn): (String, lapin::Connection),
    readiness: Readiness,
    shutdown: Shutdown,
    interval: Duration,
) {
    // Every probe is bounded: a broker or database that stops answering
    // (rather than refusing) must make the check fail, not hang it, and must
    // not hold up shutdown.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
    let mut conn = Some(conn);
    loop {
        let database =
            tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&pool)).await;
        match database {
            Ok(Ok(_)) => readiness.set("database", true, "connected"),
            Ok(Err(e)) => readiness.set("database", false, e.to_string()),
            Err(_) => readiness.set("database", false, "no answer within 5 s"),
        }
        if !conn.as_ref().is_some_and(|c| c.status().connected()) {
            conn = tokio::select! {
                _ = shutdown.wait() => break,
                attempt = tokio::time::timeout(PROBE_TIMEOUT, connect(&broker_url, "readiness probe")) => {
                    attempt.ok().and_then(Result::ok)
                }
            };
        }
        let broker_up = conn.as_ref().is_some_and(|c| c.status().connected());
        readiness.set(
            "broker",
            broker_up,
            if broker_up {
                "connected"
            } else {
                "connection lost"
            },
        );
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let Some(conn) = conn {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), conn.close(200, "shutdown".into())).await;
    }
}
