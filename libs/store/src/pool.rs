//! Connection pools: each service connects with its own role and its own
//! schema first on the search path.

use crate::services::ServiceDb;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// A pool could not be configured or opened.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The URL does not parse.
    #[error("database.url is not a valid Postgres URL: {0}")]
    Url(#[source] sqlx::Error),
    /// Connecting failed.
    #[error("cannot connect to Postgres as {role}: {source}")]
    Connect {
        /// The role used.
        role: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
}

/// Connection options for `role` with `schema` (then `public`, where the
/// vector extension lives) on the search path, derived from the base URL.
pub fn service_connect_options(
    base_url: &str,
    role: &str,
    schema: &str,
    password: Option<&str>,
) -> Result<PgConnectOptions, PoolError> {
    let mut options = PgConnectOptions::from_str(base_url)
        .map_err(PoolError::Url)?
        .username(role)
        .application_name(role)
        .options([("search_path", format!("{schema},public"))]);
    if let Some(password) = password {
        options = options.password(password);
    }
    Ok(options)
}

/// How long a pooled connection may have been idle and still be handed out
/// without a ping (see [`service_pool`]).
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(250);

/// Open a pool for a service.
pub async fn service_pool(
    base_url: &str,
    db: &ServiceDb,
    password: Option<&str>,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, PoolError> {
    let options = service_connect_options(base_url, db.role, db.schema, password)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every idle connection it hands out by default: a round
        // trip before each transaction's first statement, on the path of
        // every delivery batch and command. A connection back in the pool
        // within the last quarter second was working then (the pool pings
        // it as it comes back, too), so only one idle for longer is pinged:
        // a database restarts in longer than that, and after it those are
        // the ones left, since a connection that failed meanwhile was
        // closed as broken.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| PoolError::Connect {
            role: db.role.to_owned(),
            source,
        })
}

/// Port of the locally provisioned Postgres (the embedded one with pgvector);
/// chosen away from 5432, where a machine's own Postgres usually listens.
pub const LOCAL_POSTGRES_PORT: u16 = 5488;
/// Database of the locally provisioned Postgres.
pub const LOCAL_DATABASE: &str = "stratavore";

/// The configured base URL, or the locally provisioned one.
pub fn resolve_database_url(configured: Option<&str>) -> String {
    configured.map_or_else(
        || format!("postgres://postgres@127.0.0.1:{LOCAL_POSTGRES_PORT}/{LOCAL_DATABASE}"),
        str::to_owned,
    )
}
