//! Rebuilding a service's projections from its own history, in one
//! transaction: the rebuild lock is taken exclusively (consumers take it
//! shared per batch, so they pause), the projection rows are deleted (DELETE,
//! not TRUNCATE: readers keep seeing the old rows until the commit), the log
//! is replayed in position order and the applied inbox rows in apply order,
//! and the whole is committed at once. A crashed rebuild rolls back.

use crate::inbox;
use crate::received::envelope_of_stored;
use crate::service::Projection;
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::time::Instant;
use stratavore_store::{Log, StoreError};

/// Rows replayed per read.
const PAGE: i64 = 1000;

/// What a rebuild replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    /// Own log rows folded.
    pub own: usize,
    /// Received messages folded.
    pub received: usize,
}

/// A rebuild failed and changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An applied inbox row no longer reads as a message.
    #[error("applied inbox row {message_id} cannot be read: {reason}")]
    Unreadable {
        /// The row.
        message_id: uuid::Uuid,
        /// Why.
        reason: String,
    },
}

/// Rebuild every projection of the service whose log is `log`.
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    log: &Log,
    projection: &P,
    service: &str,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut tx = pool
        .begin()
        .await
        .map_err(StoreError::new("opening the rebuild transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(crate::REBUILD_LOCK_SPACE)
        .bind(crate::rebuild_lock_key(log.schema()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::new("taking the rebuild lock"))?;
    for table in projection.tables().iter().chain(&["stream_versions"]) {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::new("emptying a projection"))?;
    }
    let mut report = RebuildReport {
        own: 0,
        received: 0,
    };
    let mut after = 0;
    loop {
        let rows = log.read_after(&mut tx, after, PAGE).await?;
        let Some(last) = rows.last().map(|r| r.position) else {
            break;
        };
        for row in &rows {
            projection.project_own(&mut tx, &row.envelope).await?;
        }
        report.own += rows.len();
        after = last;
    }
    let mut after_seq = 0_i64;
    loop {
        let rows = sqlx::query(
            "SELECT message_id, source_log, stream, stream_version, status = 'skipped', message, applied_seq
             FROM inbox WHERE status IN ('applied', 'skipped') AND applied_seq > $1
             ORDER BY applied_seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::new("reading applied inbox rows"))?;
        let Some(last) = rows.last().map(|r| r.get::<i64, _>(6)) else {
            break;
        };
        for r in &rows {
            let (message_id, source_log, stream, version, skipped, stored): (
                uuid::Uuid,
                String,
                String,
                i64,
                bool,
                serde_json::Value,
            ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            if !skipped {
                let envelope = envelope_of_stored(&stored)
                    .map_err(|reason| RebuildError::Unreadable { message_id, reason })?;
                projection.project_received(&mut tx, &envelope).await?;
                report.received += 1;
            }
            inbox::set_stream_version(&mut tx, &source_log, &stream, version).await?;
        }
        after_seq = last;
    }
    tx.commit()
        .await
        .map_err(StoreError::new("committing the rebuild"))?;
    metrics::histogram!(crate::metrics::REBUILD_SECONDS, "service" => service.to_owned())
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        service,
        own = report.own,
        received = report.received,
        "projections rebuilt"
    );
    Ok(report)
}
