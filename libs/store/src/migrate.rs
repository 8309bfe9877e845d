//! Per-schema migrations, each schema with its own history table: the log
//! and inbox (migrations/service-log, versions below 100) and then the
//! service's own files (migrations/<schema>, versions 100 and up).

use crate::services::ServiceDb;
use sqlx::PgPool;
use sqlx::migrate::{Migration, Migrator};

/// Migrating a schema failed.
#[derive(Debug, thiserror::Error)]
#[error("migrating schema {schema} failed: {source}")]
pub struct MigrateError {
    /// The schema.
    pub schema: String,
    /// sqlx's error.
    #[source]
    pub source: sqlx::migrate::MigrateError,
}

static SERVICE_LOG: Migrator = sqlx::migrate!("../../migrations/service-log");
static ORCHESTRATOR: Migrator = sqlx::migrate!("../../migrations/orchestrator");
static SUPERVISOR: Migrator = sqlx::migrate!("../../migrations/supervisor");
static REGISTRY: Migrator = sqlx::migrate!("../../migrations/registry");
static GATEWAY: Migrator = sqlx::migrate!("../../migrations/gateway");
static RELAY: Migrator = sqlx::migrate!("../../migrations/relay");

fn own_migrations(schema: &str) -> &'static Migrator {
    match schema {
        "orchestrator" => &ORCHESTRATOR,
        "supervisor" => &SUPERVISOR,
        "registry" => &REGISTRY,
        "gateway" => &GATEWAY,
        _ => &RELAY,
    }
}

/// The migrator of a service's schema, with its history in
/// `<schema>._sqlx_migrations`.
pub fn migrator_for(db: &ServiceDb) -> Migrator {
    let shared = if db.has_log {
        SERVICE_LOG.iter()
    } else {
        [].iter()
    };
    let migrations: Vec<Migration> = shared
        .chain(own_migrations(db.schema).iter())
        .cloned()
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{}._sqlx_migrations", db.schema));
    migrator
}

/// Migrate a service's schema with the service's own pool (its role owns
/// the schema; provisioning created it).
pub async fn migrate_service(pool: &PgPool, db: &ServiceDb) -> Result<(), MigrateError> {
    migrator_for(db)
        .run(pool)
        .await
        .map_err(|source| MigrateError {
            schema: db.schema.to_owned(),
            source,
        })
}

/// A digest of every migration of every schema: test templates are named
/// after it, so a changed migration gets a fresh template.
pub fn migrations_digest() -> String {
    let mut acc: u64 = 0xcbf2_9ce4_8422_2325;
    for m in SERVICE_LOG
        .iter()
        .chain(ORCHESTRATOR.iter())
        .chain(SUPERVISOR.iter())
        .chain(REGISTRY.iter())
        .chain(GATEWAY.iter())
        .chain(RELAY.iter())
    {
        for b in m.checksum.iter().chain(m.version.to_le_bytes().iter()) {
            acc ^= u64::from(*b);
            acc = acc.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{acc:016x}")
}
