//! Operators' decisions about dead rows: replay (back to `received`, applied
//! again in order) or skip (passed over; a skipped command still gets its
//! terminal answer). Each decision is an event in the service's own log.

use crate::drain::{DrainError, DrainOutcome, Drainer, record_own};
use crate::inbox::{self, DeadRow};
use crate::received::envelope_of_stored;
use crate::service::{Decider, Projection};
use stratavore_events::inbox::{DeadLetterDecision, InboxEvent};
use stratavore_runtime::Clock;
use stratavore_store::{NewEntry, StoreError};
use uuid::Uuid;

/// A decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// No dead row has this id (it may have been replayed or skipped).
    #[error("no dead row {0}")]
    NotDead(Uuid),
    /// The database failed.
    #[error(transparent)]
    Drain(#[from] DrainError),
}

impl From<StoreError> for DeadLetterError {
    fn from(e: StoreError) -> Self {
        Self::Drain(DrainError::Store(e))
    }
}

/// Every dead row of the service.
pub async fn list<S>(drainer: &Drainer<S>) -> Result<Vec<DeadRow>, StoreError> {
    let mut conn = drainer
        .pool
        .acquire()
        .await
        .map_err(StoreError::new("listing dead rows"))?;
    inbox::list_dead(&mut conn).await
}

#[derive(Clone, Copy)]
enum Decision {
    Replay,
    Skip,
}

/// Put a dead row back and apply its stream again.
pub async fn replay<S: Decider + Projection>(
    drainer: &Drainer<S>,
    clock: &dyn Clock,
    message_id: Uuid,
) -> Result<DrainOutcome, DeadLetterError> {
    decide(drainer, clock, message_id, Decision::Replay).await
}

/// Pass over a dead row; its stream moves on without it.
pub async fn skip<S: Decider + Projection>(
    drainer: &Drainer<S>,
    clock: &dyn Clock,
    message_id: Uuid,
) -> Result<DrainOutcome, DeadLetterError> {
    decide(drainer, clock, message_id, Decision::Skip).await
}

async fn decide<S: Decider + Projection>(
    drainer: &Drainer<S>,
    clock: &dyn Clock,
    message_id: Uuid,
    decision: Decision,
) -> Result<DrainOutcome, DeadLetterError> {
    let mut tx =
        crate::begin_shared(&drainer.pool, drainer.log.schema(), "opening a decision").await?;
    let row = inbox::lock_dead(&mut tx, message_id)
        .await?
        .ok_or(DeadLetterError::NotDead(message_id))?;
    let payload = DeadLetterDecision {
        service: drainer.name.clone(),
        message_id,
        source_log: row.source_log.clone(),
        stream: row.stream.clone(),
        stream_version: u64::try_from(row.stream_version).unwrap_or(0),
        message_type: row.type_name.clone(),
        last_error: row.last_error.clone(),
    };
    let event = match decision {
        Decision::Replay => InboxEvent::Replayed(payload),
        Decision::Skip => InboxEvent::Skipped(payload),
    };
    let stream = format!("dead-letter-{message_id}");
    let version = drainer.log.stream_version(&mut tx, &stream).await? + 1;
    let source = format!("/stratavore/{}", drainer.name);
    let mut entries = vec![NewEntry::of(
        &event,
        &source,
        stream,
        version,
        message_id.to_string(),
        clock.now(),
    )];
    match decision {
        Decision::Replay => inbox::revive(&mut tx, message_id).await?,
        Decision::Skip => {
            inbox::mark_skipped(&mut tx, message_id).await?;
            if let Ok(envelope) = envelope_of_stored(&row.stored) {
                entries.extend(drainer.service.on_skipped(&envelope));
            }
        }
    }
    record_own(&mut tx, &drainer.log, drainer.service.as_ref(), &entries)
        .await
        .map_err(DrainError::from)?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a decision"))?;
    tracing::info!(service = %drainer.name, %message_id, decision = match decision {
        Decision::Replay => "replay",
        Decision::Skip => "skip",
    }, "dead letter decided");
    Ok(drainer.drain_stream(&row.source_log, &row.stream).await?)
}
