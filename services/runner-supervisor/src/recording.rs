//! Appending the node's own facts outside the consumer's drain (spawns,
//! transcript events, exits, registration): each in a transaction of its
//! own that holds the rebuild lock shared, projected then appended.
//!
//! Process events have deterministic ids and versions, so a fact written
//! before a crash is refused by the log when it is derived again: such a
//! refusal means "already recorded" and is skipped, never an error.

use crate::handlers::Supervisor;
use sqlx::PgPool;
use std::sync::Arc;
use stratavore_consumer::record_own;
use stratavore_store::{AppendError, Log, NewEntry, StoreError};

/// Why recording failed (the database, not a duplicate).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The append failed.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Records the node's own entries in its log.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The service pool.
    pub pool: PgPool,
    /// The supervisor's log.
    pub log: Log,
    /// The projection its entries are folded by.
    pub service: Arc<Supervisor>,
}

fn is_already_recorded(e: &AppendError) -> bool {
    matches!(
        e,
        AppendError::VersionConflict { .. } | AppendError::DuplicateMessage(_)
    )
}

impl Recorder {
    /// Append `entries` in one transaction; a conflict is an error.
    pub async fn record(&self, entries: &[NewEntry]) -> Result<(), RecordError> {
        let mut tx = stratavore_consumer::begin_shared(
            &self.pool,
            self.log.schema(),
            "opening a transaction",
        )
        .await?;
        record_own(&mut tx, &self.log, self.service.as_ref(), entries).await?;
        tx.commit()
            .await
            .map_err(StoreError::new("committing the node's facts"))?;
        Ok(())
    }

    /// Append `entries`, skipping those already in the log. Returns how many
    /// were new.
    pub async fn record_once(&self, entries: &[NewEntry]) -> Result<usize, RecordError> {
        if entries.is_empty() {
            return Ok(0);
        }
        match self.record(entries).await {
            Ok(()) => return Ok(entries.len()),
            Err(RecordError::Append(e)) if is_already_recorded(&e) => {}
            Err(e) => return Err(e),
        }
        // Some were written before: one at a time, to keep the rest.
        let mut new = 0;
        for entry in entries {
            match self.record(std::slice::from_ref(entry)).await {
                Ok(()) => new += 1,
                Err(RecordError::Append(e)) if is_already_recorded(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(new)
    }

    /// Append several groups of entries (each runner's) in one
    /// transaction. When some were written before (a restart derived them
    /// again), each group is recorded on its own, skipping those. Returns
    /// how many were new.
    pub async fn record_groups(&self, groups: &[&[NewEntry]]) -> Result<usize, RecordError> {
        let all: Vec<NewEntry> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
        if all.is_empty() {
            return Ok(0);
        }
        match self.record(&all).await {
            Ok(()) => return Ok(all.len()),
            Err(RecordError::Append(e)) if is_already_recorded(&e) => {}
            Err(e) => return Err(e),
        }
        let mut new = 0;
        for group in groups {
            new += self.record_once(group).await?;
        }
        Ok(new)
    }

    /// The current version of a stream in the log.
    pub async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::new("reading a stream version"))?;
        self.log.stream_version(&mut conn, stream).await
    }
}
