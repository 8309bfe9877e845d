//! Ordered, idempotent consumers (DESIGN.md section 3), shared by every
//! service that consumes: deliveries are inserted into the service's inbox
//! and committed before they are acked; then each stream they touched is
//! drained in version order, each message applied in the transaction of its
//! effects, the resulting messages appended to the log last. Also the
//! rebuild of projections and the operators' dead-letter decisions.

#![deny(missing_docs)]

pub mod admin;
pub mod amqp_loop;
pub mod apply_lag;
pub mod batch;
pub mod commits;
pub mod dead_letters;
pub mod drain;
pub mod inbox;
pub mod metrics;
pub mod rebuild;
pub mod received;
pub mod service;
pub mod settings;

pub use amqp_loop::{Consumer, ConsumerSettings};
pub use apply_lag::ApplyLag;
pub use commits::Commits;
pub use drain::{DrainError, Drainer, record_own};
pub use service::{Decider, HandleError, Projection};
pub use settings::ConsumerSection;

/// Advisory-lock key space of each service's rebuild lock: consumers and
/// workers take it shared for each batch transaction that writes
/// projections; a rebuild takes it exclusively.
pub const REBUILD_LOCK_SPACE: i32 = 5;

/// The rebuild lock key of a schema.
pub fn rebuild_lock_key(schema: &str) -> i32 {
    stratavore_store::log::log_lock_key(schema)
}

/// Open a transaction on `pool` holding the rebuild lock shared: the way
/// every transaction that writes projections or appends begins.
///
/// `BEGIN` and the lock go in one simple query, so the lock costs no round
/// trip of its own (on two busy cores each round trip is a wait for the
/// scheduler, twice). The next statement still takes its snapshot after
/// the lock is granted, so it sees whatever a rebuild that held the lock
/// committed. A failing lock (a timeout while a rebuild holds it) fails
/// the begin, with `what` as its context.
pub async fn begin_shared(
    pool: &sqlx::PgPool,
    schema: &str,
    what: &'static str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, stratavore_store::StoreError> {
    // Two integers: nothing of the caller's reaches the SQL text.
    let begin = format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({REBUILD_LOCK_SPACE}, {})",
        rebuild_lock_key(schema)
    );
    pool.begin_with(sqlx::AssertSqlSafe(begin))
        .await
        .map_err(stratavore_store::StoreError::new(what))
}
