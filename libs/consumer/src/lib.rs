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

/// Take the rebuild lock shared for the current transaction.
pub async fn lock_shared(
    conn: &mut sqlx::PgConnection,
    schema: &str,
) -> Result<(), stratavore_store::StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(REBUILD_LOCK_SPACE)
        .bind(rebuild_lock_key(schema))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(stratavore_store::StoreError::new(
            "taking the rebuild lock shared",
        ))
}
