//! Draining: apply a stream's received rows in version order while they are
//! contiguous with what the state reflects, one transaction per message with
//! its effects, the resulting messages appended last.
//!
//! One message per transaction keeps a failure confined to its own row:
//! a message's own failure is known before anything is written (decisions
//! are pure), and an infrastructure failure rolls back exactly one message.

use crate::inbox;
use crate::metrics as m;
use crate::received::envelope_of_stored;
use crate::service::{Decider, HandleError, Projection};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use stratavore_store::{AppendError, Log, NewEntry, StoreError};

/// Draining stopped on the infrastructure (the stream is drained again
/// later, no attempt counted).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Appending the decision failed (a version conflict means another
    /// writer decided first on stale state: draining again decides anew).
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// What draining a stream ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainOutcome {
    /// Messages applied.
    pub applied: usize,
    /// Whether the stream stopped at a failing row (counted or dead).
    pub blocked: bool,
}

/// Project the service's own new messages, then append them: the one path
/// by which a service records what it decided (the consumer's drain and the
/// gateway's request handlers alike). Call inside a transaction that holds
/// the rebuild lock shared.
pub async fn record_own<P: Projection>(
    conn: &mut PgConnection,
    log: &Log,
    projection: &P,
    entries: &[NewEntry],
) -> Result<Vec<i64>, AppendError> {
    for entry in entries {
        projection.project_own(conn, &entry.envelope).await?;
    }
    log.append(conn, entries).await
}

/// Applies waiting inbox rows for one service.
pub struct Drainer<S> {
    /// The service's pool (its role, its schema first on the path).
    pub pool: PgPool,
    /// The service's own log.
    pub log: Log,
    /// Decider and projection.
    pub service: Arc<S>,
    /// Attempts before a failing row becomes dead.
    pub max_attempts: i32,
    /// The service's name, for metrics.
    pub name: String,
    /// Whose received rows it records and drains: '' for a service whose
    /// replicas are interchangeable, the node id for a supervisor node.
    pub owner: String,
}

impl<S> Clone for Drainer<S> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            log: self.log.clone(),
            service: self.service.clone(),
            max_attempts: self.max_attempts,
            name: self.name.clone(),
            owner: self.owner.clone(),
        }
    }
}

enum Step {
    Applied,
    Nothing,
    Failed {
        message_id: uuid::Uuid,
        error: String,
    },
}

impl<S: Decider + Projection> Drainer<S> {
    /// Apply the stream's rows in order until one is missing or fails.
    pub async fn drain_stream(
        &self,
        source_log: &str,
        stream: &str,
    ) -> Result<DrainOutcome, DrainError> {
        let mut outcome = DrainOutcome::default();
        loop {
            match self.apply_next(source_log, stream).await? {
                Step::Applied => outcome.applied += 1,
                Step::Nothing => return Ok(outcome),
                Step::Failed { message_id, error } => {
                    let mut conn = self
                        .pool
                        .acquire()
                        .await
                        .map_err(StoreError::new("recording a failure"))?;
                    let dead =
                        inbox::record_failure(&mut conn, message_id, &error, self.max_attempts)
                            .await?;
                    let outcome_label = if dead { "dead" } else { "failed" };
                    metrics::counter!(m::MESSAGES_TOTAL, "service" => self.name.clone(), "outcome" => outcome_label)
                        .increment(1);
                    if dead {
                        tracing::error!(service = %self.name, %message_id, %source_log, %stream, %error,
                            "a message failed too often and is dead; its stream waits for an operator");
                    } else {
                        tracing::warn!(service = %self.name, %message_id, %error, "applying a message failed");
                    }
                    outcome.blocked = true;
                    return Ok(outcome);
                }
            }
        }
    }

    async fn apply_next(&self, source_log: &str, stream: &str) -> Result<Step, DrainError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::new("opening a drain transaction"))?;
        crate::lock_shared(&mut tx, self.log.schema()).await?;
        let current = inbox::stream_version(&mut tx, source_log, stream).await?;
        let Some(row) =
            inbox::lock_row(&mut tx, source_log, stream, current + 1, &self.owner).await?
        else {
            return Ok(Step::Nothing);
        };
        if row.skipped {
            // An operator passed over this row: move the stream past it.
            inbox::set_stream_version(&mut tx, source_log, stream, row.stream_version).await?;
            tx.commit()
                .await
                .map_err(StoreError::new("passing a skipped row"))?;
            return Ok(Step::Applied);
        }
        let decided = match envelope_of_stored(&row.stored) {
            Ok(envelope) => match self.service.decide(&mut tx, &envelope).await {
                Ok(entries) => Ok((envelope, entries)),
                Err(HandleError::Message(error)) => Err(error),
                Err(HandleError::Store(e)) => return Err(e.into()),
            },
            Err(error) => Err(error),
        };
        let (envelope, entries) = match decided {
            Ok(decided) => decided,
            Err(error) => {
                // Release the row lock now: the failure is recorded on
                // another connection.
                tx.rollback()
                    .await
                    .map_err(StoreError::new("rolling back a failed message"))?;
                return Ok(Step::Failed {
                    message_id: row.message_id,
                    error,
                });
            }
        };
        self.service.project_received(&mut tx, &envelope).await?;
        inbox::mark_applied(&mut tx, row.message_id).await?;
        inbox::set_stream_version(&mut tx, source_log, stream, row.stream_version).await?;
        record_own(&mut tx, &self.log, self.service.as_ref(), &entries).await?;
        tx.commit()
            .await
            .map_err(StoreError::new("committing a drain transaction"))?;
        metrics::counter!(m::MESSAGES_TOTAL, "service" => self.name.clone(), "outcome" => "applied").increment(1);
        Ok(Step::Applied)
    }

    /// Drain every stream that has waiting rows (at start, after an outage,
    /// and periodically, so nothing waits for a delivery that already came).
    pub async fn drain_waiting(&self) -> Result<usize, DrainError> {
        let streams = {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(StoreError::new("listing waiting streams"))?;
            inbox::waiting_streams(&mut conn, 1000, &self.owner).await?
        };
        let mut applied = 0;
        for (source_log, stream) in streams {
            applied += self.drain_stream(&source_log, &stream).await?.applied;
        }
        Ok(applied)
    }
}
