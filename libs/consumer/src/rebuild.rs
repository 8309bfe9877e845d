//! Rebuilding a service's projections from its own history, in one
//! transaction: the rebuild lock is taken exclusively (consumers take it
//! shared per batch, so they pause), the projection rows are deleted (DELETE,
//! not TRUNCATE: readers keep seeing the old rows until the commit), the log
//! is replayed in position order and the applied inbox rows in apply order,
//! and the whole is committed at once. A crashed rebuild rolls back.
//!
//! The streams' versions are written once, at the end, from the inbox (no
//! fold reads them, so the replay needs none in between): one statement
//! instead of one per message.

use crate::received::envelope_of_stored;
use crate::service::Projection;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use std::time::Instant;
use stratavore_events::Envelope;
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
    /// The task decoding a page of inbox rows ended abnormally.
    #[error("decoding applied inbox rows failed: {0}")]
    Decoding(String),
}

/// The envelopes of a page of applied inbox rows, in order; skipped rows
/// have none (their stream moves on with no effect).
fn decode(rows: &[PgRow]) -> Result<Vec<Envelope>, RebuildError> {
    let mut envelopes = Vec::with_capacity(rows.len());
    for r in rows {
        if r.get::<bool, _>(1) {
            continue;
        }
        let message_id: uuid::Uuid = r.get(0);
        let stored: serde_json::Value = r.get(2);
        envelopes.push(
            envelope_of_stored(&stored)
                .map_err(|reason| RebuildError::Unreadable { message_id, reason })?,
        );
    }
    Ok(envelopes)
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
    set_rebuilding(&mut tx, true).await?;
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
        let own: Vec<&Envelope> = rows.iter().map(|r| &r.envelope).collect();
        projection.project_own_batch(&mut tx, &own).await?;
        report.own += rows.len();
        after = last;
    }
    // Each page is decoded on a blocking thread while the page before it
    // is folded: the fold waits on the database, statement by statement,
    // and the decoding (JSON into envelopes) would otherwise wait for it.
    let mut after_seq = 0_i64;
    let mut decoding: Option<tokio::task::JoinHandle<Result<Vec<Envelope>, RebuildError>>> = None;
    loop {
        let rows = sqlx::query(
            "SELECT message_id, status = 'skipped', message, applied_seq
             FROM inbox WHERE status IN ('applied', 'skipped') AND applied_seq > $1
             ORDER BY applied_seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::new("reading applied inbox rows"))?;
        let next = rows.last().map(|r| r.get::<i64, _>(3)).map(|last| {
            after_seq = last;
            tokio::task::spawn_blocking(move || decode(&rows))
        });
        if let Some(page) = decoding.take() {
            let envelopes = page
                .await
                .map_err(|e| RebuildError::Decoding(e.to_string()))??;
            projection
                .project_received_batch(&mut tx, &envelopes)
                .await?;
            report.received += envelopes.len();
        }
        match next {
            Some(page) => decoding = Some(page),
            None => break,
        }
    }
    set_rebuilding(&mut tx, false).await?;
    projection.finish_rebuild(&mut tx).await?;
    set_stream_versions(&mut tx).await?;
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

/// Say to the projection's SQL whether a rebuild is replaying (for the
/// rest of the transaction).
async fn set_rebuilding(conn: &mut PgConnection, on: bool) -> Result<(), StoreError> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(crate::service::REBUILDING)
        .bind(if on { "on" } else { "off" })
        .execute(conn)
        .await
        .map_err(StoreError::new("marking the rebuild"))?;
    Ok(())
}

/// Each stream's version, as the replay leaves it: that of its last row in
/// apply order (a skipped row moves its stream on like an applied one).
async fn set_stream_versions(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stream_versions (source_log, stream, version)
         SELECT DISTINCT ON (source_log, stream) source_log, stream, stream_version
         FROM inbox WHERE status IN ('applied', 'skipped') AND applied_seq IS NOT NULL
         ORDER BY source_log, stream, applied_seq DESC",
    )
    .execute(conn)
    .await
    .map_err(StoreError::new("recording the streams' versions"))?;
    Ok(())
}
