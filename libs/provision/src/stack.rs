//! The one provisioning step used by `stratavore up` (and so `make up`), CI
//! and the tests: the broker reachable, Postgres with pgvector running (the
//! embedded one when no URL is given), the database, roles and schemas, the
//! broker topology, the pinned agent CLIs and the embedding model
//! installed. Idempotent: a second run changes nothing.

use crate::agent_clis::{self, AgentCliError};
use crate::embedding_model::{self, EmbeddingModelError};
use crate::loopback;
use crate::postgres_server::{PgCluster, PgServerError};
use crate::rabbitmq_server::{BrokerAddress, BrokerServerError, ensure_broker_running};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::path::PathBuf;
use std::time::Duration;
use stratavore_bus::{Topology, connect};
use stratavore_store::pool::{LOCAL_DATABASE, LOCAL_POSTGRES_PORT};
use stratavore_store::provision::provision_database;
use stratavore_store::services::is_plain_identifier;

/// What to provision.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The git-ignored folder for downloads and local servers (`.local`).
    pub local_dir: PathBuf,
    /// An admin URL of an existing Postgres with pgvector, or None for the
    /// embedded one under `local_dir/postgres`.
    pub database_url: Option<String>,
    /// Password to give the service roles (None: trust/peer auth).
    pub role_password: Option<String>,
    /// AMQP URL.
    pub broker_url: String,
    /// Topology prefix.
    pub prefix: String,
    /// Delivery limit of the service queues.
    pub delivery_limit: u32,
}

/// What provisioning found or made.
#[derive(Debug)]
pub struct Provisioned {
    /// The admin URL of the database the services use.
    pub database_url: String,
    /// Whether this run started the local RabbitMQ (so `down` stops it).
    pub started_broker: bool,
    /// Whether the database is the embedded local one.
    pub local_postgres: bool,
    /// The folder holding the installed agent CLIs (`claude`, `codex`,
    /// `opencode`), for the supervisor's `PATH`.
    pub agent_bin_dir: PathBuf,
    /// The folder holding the embedding model (all-MiniLM-L6-v2).
    pub embedding_model_dir: PathBuf,
}

/// Provisioning failed; the message names the part.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// RabbitMQ is missing or unreachable.
    #[error(transparent)]
    Broker(#[from] BrokerServerError),
    /// The embedded Postgres could not be installed or started.
    #[error(transparent)]
    Postgres(#[from] PgServerError),
    /// SQL against the admin connection failed.
    #[error("provisioning the database failed: {0}")]
    Sql(#[from] sqlx::Error),
    /// Roles, schemas or the extension could not be created.
    #[error(transparent)]
    Store(#[from] stratavore_store::StoreError),
    /// The topology could not be declared.
    #[error(transparent)]
    Topology(#[from] stratavore_bus::BrokerError),
    /// The agent CLIs could not be installed.
    #[error(transparent)]
    AgentClis(#[from] AgentCliError),
    /// The embedding model could not be installed.
    #[error(transparent)]
    EmbeddingModel(#[from] EmbeddingModelError),
    /// A blocking step panicked or was cancelled.
    #[error("a provisioning step did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The folder of the embedded Postgres under a local dir.
pub fn local_postgres_root(local_dir: &std::path::Path) -> PathBuf {
    local_dir.join("postgres")
}

/// Run every step: the agent CLIs and the embedding model install (mostly
/// downloading) while the servers are provisioned in order. All are
/// finished when this returns, whichever fails; when several do, the
/// servers' error is the one returned, then the agent CLIs'.
pub async fn provision(req: &ProvisionRequest) -> Result<Provisioned, ProvisionError> {
    let local_dir = req.local_dir.clone();
    let agents = async {
        tokio::task::spawn_blocking(move || agent_clis::ensure_installed(&local_dir)).await
    };
    let local_dir = req.local_dir.clone();
    let model = async {
        tokio::task::spawn_blocking(move || embedding_model::ensure_installed(&local_dir)).await
    };
    let (agents, model, servers) = tokio::join!(agents, model, provision_servers(req));
    let servers = servers?;
    let agents = agents??;
    let model = model??;
    if agents.installed_now {
        tracing::info!(bin_dir = %agents.bin_dir.display(), "installed the agent CLIs");
    }
    if model.installed_now {
        tracing::info!(dir = %model.dir.display(), "installed the embedding model");
    }
    Ok(Provisioned {
        database_url: servers.database_url,
        started_broker: servers.started_broker,
        local_postgres: servers.local_postgres,
        agent_bin_dir: agents.bin_dir,
        embedding_model_dir: model.dir,
    })
}

/// What provisioning the servers found or made (see [`Provisioned`]).
struct Servers {
    database_url: String,
    started_broker: bool,
    local_postgres: bool,
}

/// The broker, the database and the topology.
async fn provision_servers(req: &ProvisionRequest) -> Result<Servers, ProvisionError> {
    let broker_url = req.broker_url.clone();
    let started_broker = tokio::task::spawn_blocking(move || {
        let address = BrokerAddress::parse(&broker_url)?;
        let was_up = loopback::accepts_tcp(&address.host, address.port, Duration::from_secs(2));
        ensure_broker_running(&broker_url).map(|()| !was_up)
    })
    .await??;

    let (database_url, local_postgres) = match &req.database_url {
        Some(url) => (url.clone(), false),
        None => {
            let root = local_postgres_root(&req.local_dir);
            let cluster = tokio::task::spawn_blocking(move || {
                PgCluster::ensure_running(&root, LOCAL_POSTGRES_PORT)
            })
            .await??;
            create_database_if_missing(&cluster.url("postgres"), LOCAL_DATABASE).await?;
            (cluster.url(LOCAL_DATABASE), true)
        }
    };

    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await?;
    provision_database(&admin, req.role_password.as_deref()).await?;
    admin.close().await;

    let topology = Topology::new(req.prefix.clone(), req.delivery_limit);
    let conn = connect(&req.broker_url, "stratavore provision").await?;
    let channel =
        conn.create_channel()
            .await
            .map_err(|source| stratavore_bus::BrokerError::Operation {
                operation: "channel.open",
                source,
            })?;
    topology
        .declare_all(&channel)
        .await
        .map_err(stratavore_bus::BrokerError::from)?;
    let _ = conn.close(200, "provisioned".into()).await;

    Ok(Servers {
        database_url,
        started_broker,
        local_postgres,
    })
}

async fn create_database_if_missing(server_url: &str, name: &str) -> Result<(), ProvisionError> {
    debug_assert!(is_plain_identifier(name));
    let mut admin = PgConnection::connect(server_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    Ok(())
}
