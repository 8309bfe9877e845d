//! The relay's metric names, in one place so dashboards and tests agree.

/// Rows published (confirmed), by source schema.
pub const PUBLISHED_TOTAL: &str = "stratavore_relay_published_total";
/// Rows per published batch, by source schema.
pub const BATCH_SIZE: &str = "stratavore_relay_batch_size";
/// Seconds from sending a batch to its last confirm, by source schema.
pub const BATCH_SECONDS: &str = "stratavore_relay_batch_seconds";
/// Rows committed but not yet published, by source schema.
pub const LAG_POSITIONS: &str = "stratavore_relay_lag_positions";
/// Age of the oldest unpublished row, by source schema.
pub const LAG_SECONDS: &str = "stratavore_relay_lag_seconds";
/// 1 while this replica holds the source's lease, else 0.
pub const LEASE_HELD: &str = "stratavore_relay_lease_held";
/// Batches that failed to publish, by source schema and reason.
pub const PUBLISH_FAILURES_TOTAL: &str = "stratavore_relay_publish_failures_total";
/// Messages waiting in the unroutable queue (matched no binding).
pub const UNROUTABLE_MESSAGES: &str = "stratavore_unroutable_messages";
