//! A database per test, created from a migrated template so it is fast
//! (a file copy instead of running every migration).

use crate::paths;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;
use stratavore_provision::postgres_server::PgCluster;
use stratavore_store::migrate::{migrate_service, migrations_digest};
use stratavore_store::provision::provision_database;
use stratavore_store::services::SERVICE_DBS;
use stratavore_store::{pool::LOCAL_POSTGRES_PORT, service_pool};

/// The server every test shares: `STRATAVORE_TEST_DATABASE_URL`, else
/// `DATABASE_URL`, else the embedded Postgres under `.local/` (started if it
/// is not running). The URL names the server; its database part is ignored.
pub async fn shared_server_url() -> anyhow::Result<String> {
    for var in ["STRATAVORE_TEST_DATABASE_URL", "DATABASE_URL"] {
        if let Ok(url) = std::env::var(var) {
            return Ok(url);
        }
    }
    let cluster = tokio::task::spawn_blocking(|| {
        PgCluster::ensure_running(&paths::postgres_root(), LOCAL_POSTGRES_PORT)
    })
    .await??;
    Ok(cluster.url("postgres"))
}

/// The URL of database `db` on the server of `server_url`.
pub fn url_with_database(server_url: &str, db: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(server_url)?.database(db);
    Ok(options.to_url_lossy().to_string())
}

/// A database of a test's own, dropped when the test ends.
#[derive(Debug)]
pub struct TestDatabase {
    server_url: String,
    name: String,
    dropped: bool,
}

impl TestDatabase {
    /// Create a fresh, migrated database on the shared server.
    pub async fn create() -> anyhow::Result<Self> {
        let server_url = shared_server_url().await?;
        Self::create_on(&server_url).await
    }

    /// Create a fresh, migrated database on the server at `server_url`.
    pub async fn create_on(server_url: &str) -> anyhow::Result<Self> {
        let template = ensure_template(server_url).await?;
        let name = format!("stv_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let mut admin = admin_connection(server_url).await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(Self {
            server_url: server_url.to_owned(),
            name,
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin URL of this database (what services get as `database.url`:
    /// they swap in their own role).
    pub fn url(&self) -> String {
        url_with_database(&self.server_url, &self.name).unwrap_or_default()
    }

    /// An admin pool on this database.
    pub async fn admin_pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(20)
            .connect(&self.url())
            .await?)
    }

    /// A pool as a service's own role, its schema first on the search path.
    pub async fn service_pool(&self, service: &str) -> anyhow::Result<PgPool> {
        let db = stratavore_store::services::service_db(service)
            .ok_or_else(|| anyhow::anyhow!("no service {service}"))?;
        Ok(service_pool(&self.url(), db, None, 20, Duration::from_secs(30)).await?)
    }

    /// Drop the database now (also done, best effort, on drop).
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.server_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, name) = (self.server_url.clone(), self.name.clone());
        // Drop may run inside a runtime, which cannot block on itself: use a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(drop_database(&url, &name));
            }
        })
        .join();
    }
}

async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = admin_connection(server_url).await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

async fn admin_connection(server_url: &str) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&url_with_database(server_url, "postgres")?).await?)
}

/// Make sure the template for the current migrations exists; returns its
/// name. Test processes run in parallel, so one builds it under a lock
/// while the others wait.
async fn ensure_template(server_url: &str) -> anyhow::Result<String> {
    let template = format!("stv_tpl_{}", migrations_digest());
    let mut admin = admin_connection(server_url).await?;
    sqlx::query("SELECT pg_advisory_lock(4, 0)")
        .execute(&mut admin)
        .await?;
    let result = build_template_if_missing(server_url, &template, &mut admin).await;
    sqlx::query("SELECT pg_advisory_unlock(4, 0)")
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    result.map(|()| template)
}

async fn build_template_if_missing(
    server_url: &str,
    template: &str,
    admin: &mut PgConnection,
) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(template)
            .fetch_one(&mut *admin)
            .await?;
    if exists {
        return Ok(());
    }
    // Build under a scratch name and rename at the end, so a crash half way
    // never leaves a template that looks complete.
    let scratch = format!("{template}_build");
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"
    )))
    .execute(&mut *admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {scratch}")))
        .execute(&mut *admin)
        .await?;
    let url = url_with_database(server_url, &scratch)?;
    {
        let admin_pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?;
        provision_database(&admin_pool, None).await?;
        admin_pool.close().await;
        for db in SERVICE_DBS {
            let pool = service_pool(&url, db, None, 2, Duration::from_secs(30)).await?;
            migrate_service(&pool, db).await?;
            pool.close().await;
        }
    }
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {scratch} RENAME TO {template}"
    )))
    .execute(&mut *admin)
    .await?;
    Ok(())
}
