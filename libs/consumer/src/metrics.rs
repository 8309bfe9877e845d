//! The consumers' metric names.

/// Messages by queue and outcome (`inserted`, `duplicate`, `applied`,
/// `failed`, `dead`, `dead_lettered_by_broker`).
pub const MESSAGES_TOTAL: &str = "stratavore_consumer_messages_total";
/// Dead inbox rows waiting for an operator, by service.
pub const DEAD_ROWS: &str = "stratavore_inbox_dead_rows";
/// Age of the oldest row waiting for its predecessor, by service.
pub const OLDEST_WAITING_SECONDS: &str = "stratavore_inbox_oldest_waiting_seconds";
/// Age of the oldest message the last drain transaction applied, by
/// service (see [`crate::apply_lag`]).
pub const APPLY_LAG_SECONDS: &str = "stratavore_consumer_apply_lag_seconds";
/// Messages waiting in a dead-letter queue, by queue.
pub const DLQ_DEPTH: &str = "stratavore_dlq_depth";
/// Seconds a projection rebuild took, by service.
pub const REBUILD_SECONDS: &str = "stratavore_projection_rebuild_seconds";
