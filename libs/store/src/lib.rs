//! Persistence shared by every service: per-schema migrations with their own
//! history, one login role per service, the append-only log with optimistic
//! concurrency and its append lock, and the inbox table.

#![deny(missing_docs)]

pub mod log;
pub mod migrate;
pub mod pool;
pub mod provision;
pub mod services;

pub use log::{AppendError, Log, LogRow, NewEntry};
pub use migrate::{MigrateError, migrator_for};
pub use pool::{PoolError, resolve_database_url, service_connect_options, service_pool};
pub use services::{SERVICE_DBS, ServiceDb};

/// A database failure that is not a decision: the caller retries later.
#[derive(Debug, thiserror::Error)]
#[error("database error while {context}: {source}")]
pub struct StoreError {
    /// What was being done.
    pub context: &'static str,
    /// sqlx's error.
    #[source]
    pub source: sqlx::Error,
}

impl StoreError {
    /// Wrap an sqlx error with what was being done.
    pub fn new(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self { context, source }
    }
}
