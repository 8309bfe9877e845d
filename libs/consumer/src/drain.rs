//! Draining: apply streams' received rows in version order while they are
//! contiguous with what the state reflects, each message in the transaction
//! of its effects, the messages it leads to appended last.
//!
//! A transaction applies a batch: the waiting rows of every stream a
//! delivery touched, up to `batch` messages, so the commit (and its fsync)
//! and the bookkeeping statements are shared. It ends early after a message
//! that appends, so the log's append lock is still taken last and held only
//! to the commit, as with one message per transaction (taking it earlier
//! would make other writers wait for the rest of the batch, and could
//! deadlock with one that holds a projection row we want).
//!
//! A message's own failure is known before anything is written (decisions
//! are pure): it is recorded in the same transaction and stops only its
//! stream. An infrastructure failure rolls the batch back; the streams are
//! then drained again one message per transaction, so a message that keeps
//! failing that way holds up its own stream and no other.

mod on_receipt;
mod quiet_run;
mod tally;

use crate::batch::{Candidate, contiguous, window};
use crate::inbox::{self, Inserted, NextRow};
use crate::metrics as m;
use crate::received::ReceivedMessage;
use crate::service::{Decider, HandleError, Projection};
use crate::{ApplyLag, Commits};
use sqlx::{PgConnection, PgPool};
use std::collections::VecDeque;
use std::sync::Arc;
use stratavore_store::{AppendError, Log, NewEntry, StoreError};
use tally::{Pass, Tally};

pub use on_receipt::Delivered;
pub(crate) use on_receipt::streams_of;

/// Where the messages a drain transaction applies come from, and so how it
/// records them.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The inbox's waiting rows, fetched and locked: those applied are
    /// marked so, a message's own failure is counted on its row.
    Inbox,
    /// A delivery batch not in the inbox yet, applied on receipt: the
    /// whole batch is inserted, those applied as applied; a message that
    /// fails goes in as received, with what follows it in its stream, and
    /// the inbox's drain decides it again and records its failure.
    Delivered(&'a [ReceivedMessage]),
}
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
    /// A delivery applied on receipt was in the inbox already (a
    /// redelivery whose first copy another transaction inserted): its
    /// effects are rolled back, and it is left to the inbox's drain.
    #[error("a message applied on receipt was in the inbox already")]
    AlreadyReceived,
}

impl DrainError {
    /// Another writer appended the version a decision wanted first: the
    /// decision is taken again on the new state.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DrainError::Append(AppendError::VersionConflict { .. })
        )
    }
}

/// Times a drain decides again right away after losing a version race,
/// before it leaves the rest to the sweeper.
const CONFLICT_RETRIES: usize = 3;

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
    let own: Vec<&stratavore_events::Envelope> = entries.iter().map(|e| &e.envelope).collect();
    projection.project_own_batch(conn, &own).await?;
    log.append(conn, entries).await
}

/// Roll a failed drain transaction back before its error is reported.
/// Dropped, it would be rolled back only as the pool takes its connection
/// back, in the background; until then its row locks would make the next
/// attempt's `SKIP LOCKED` fetch (the retry one message at a time) pass
/// over the very rows it is to retry, and a batch inserted alone wait for
/// them.
async fn roll_back(
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    error: DrainError,
) -> DrainError {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rolling a failed drain transaction back failed");
    }
    error
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
    /// Messages applied per drain transaction at most (`consumer.drain_batch`).
    pub batch: usize,
    /// The service's name, for metrics.
    pub name: String,
    /// Whose received rows it records and drains: '' for a service whose
    /// replicas are interchangeable, the node id for a supervisor node.
    pub owner: String,
    /// How far behind the drain runs, as its transactions commit.
    pub lag: ApplyLag,
    /// Ticked after each transaction that applied messages commits.
    pub commits: Commits,
    /// Held by each drain transaction, so that a process applies one at a
    /// time: the consuming loop's on receipt and the drain task's never
    /// wait for (or deadlock with) each other over the same projection
    /// rows. Clones share it.
    pub turn: Arc<tokio::sync::Mutex<()>>,
}

impl<S> Clone for Drainer<S> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            log: self.log.clone(),
            service: self.service.clone(),
            max_attempts: self.max_attempts,
            batch: self.batch,
            name: self.name.clone(),
            owner: self.owner.clone(),
            lag: self.lag.clone(),
            commits: self.commits.clone(),
            turn: self.turn.clone(),
        }
    }
}

impl<S: Decider + Projection> Drainer<S> {
    /// Apply the stream's rows in order until one is missing or fails.
    pub async fn drain_stream(
        &self,
        source_log: &str,
        stream: &str,
    ) -> Result<DrainOutcome, DrainError> {
        self.drain_streams(&[(source_log.to_owned(), stream.to_owned())])
            .await
    }

    /// Apply the rows of every stream given, each in order until one is
    /// missing or fails, in transactions of up to `batch` messages.
    pub async fn drain_streams(
        &self,
        streams: &[(String, String)],
    ) -> Result<DrainOutcome, DrainError> {
        let mut seen = std::collections::HashSet::with_capacity(streams.len());
        let mut pending: Vec<(String, String)> = streams
            .iter()
            .filter(|s| seen.insert(*s))
            .cloned()
            .collect();
        let mut outcome = DrainOutcome::default();
        let mut conflicts = 0;
        while !pending.is_empty() {
            let pass = match self.apply_batch(&pending, self.batch.max(1)).await {
                Ok(pass) => pass,
                Err(e) if e.is_conflict() && conflicts < CONFLICT_RETRIES => {
                    // Another writer decided first on a stream we append
                    // to (the last slot of a project): decide anew.
                    conflicts += 1;
                    continue;
                }
                Err(e) if self.batch > 1 => {
                    tracing::debug!(service = %self.name, error = %e,
                        "a drain batch failed; draining its streams one message at a time");
                    let one_by_one = self.drain_one_by_one(&pending).await?;
                    outcome.applied += one_by_one.applied;
                    outcome.blocked |= one_by_one.blocked;
                    return Ok(outcome);
                }
                Err(e) => return Err(e),
            };
            outcome.applied += pass.applied;
            outcome.blocked |= !pass.failures.is_empty();
            let mut more = pass.more.iter();
            pending.retain(|_| *more.next().unwrap_or(&false));
        }
        Ok(outcome)
    }

    /// Drain each stream alone, one message per transaction (after a batch
    /// failed on the infrastructure): the first error is returned once the
    /// other streams had their turn.
    async fn drain_one_by_one(
        &self,
        streams: &[(String, String)],
    ) -> Result<DrainOutcome, DrainError> {
        let mut outcome = DrainOutcome::default();
        let mut first_error = None;
        let mut conflicts = 0;
        for stream in streams {
            loop {
                match self.apply_batch(std::slice::from_ref(stream), 1).await {
                    Err(e) if e.is_conflict() && conflicts < CONFLICT_RETRIES => {
                        conflicts += 1;
                    }
                    Ok(pass) => {
                        outcome.applied += pass.applied;
                        outcome.blocked |= !pass.failures.is_empty();
                        if !pass.more.first().copied().unwrap_or(false) {
                            break;
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Wait for this process's turn to apply, then open the transaction,
    /// holding the rebuild lock shared. The turn ends when the guard drops.
    async fn begin_applying(
        &self,
    ) -> Result<
        (
            tokio::sync::MutexGuard<'_, ()>,
            sqlx::Transaction<'static, sqlx::Postgres>,
        ),
        StoreError,
    > {
        let turn = self.turn.lock().await;
        let tx = crate::begin_shared(&self.pool, self.log.schema(), "opening a drain transaction")
            .await?;
        Ok((turn, tx))
    }

    /// One drain transaction over `streams`, applying at most `batch` rows.
    async fn apply_batch(
        &self,
        streams: &[(String, String)],
        batch: usize,
    ) -> Result<Pass, DrainError> {
        let (_turn, mut tx) = self.begin_applying().await?;
        let per_stream = window(streams.len(), batch);
        let fetched =
            match inbox::lock_next_rows(&mut tx, streams, per_stream, batch, &self.owner).await {
                Ok(fetched) => fetched,
                Err(e) => return Err(roll_back(tx, e.into()).await),
            };
        let mut fetched_per_stream = vec![0_usize; streams.len()];
        for row in &fetched {
            fetched_per_stream[row.stream] += 1;
        }
        // When the limit cut the fetch, the streams from the last one
        // fetched onwards may hold rows it did not reach.
        let cut_from = (fetched.len() >= batch)
            .then(|| fetched.last().map(|r| r.stream))
            .flatten();
        let runs = contiguous(
            fetched
                .into_iter()
                .map(|r| Candidate {
                    stream: r.stream,
                    version: r.next.stream_version,
                    current: r.current,
                    row: r.next,
                })
                .collect(),
        );
        let mut run_len = vec![0_usize; streams.len()];
        for c in &runs {
            run_len[c.stream] += 1;
        }
        let (tally, _) = match self.apply_runs(&mut tx, streams, runs, Source::Inbox).await {
            Ok(applied) => applied,
            Err(e) => return Err(roll_back(tx, e).await),
        };
        tx.commit()
            .await
            .map_err(StoreError::new("committing a drain transaction"))?;
        let Tally {
            mut pass,
            blocked,
            done,
            ..
        } = tally;
        for (i, more) in pass.more.iter_mut().enumerate() {
            let whole_run_applied = done[i] == run_len[i];
            let run_may_continue = run_len[i] == fetched_per_stream[i]
                && (fetched_per_stream[i] == per_stream || cut_from.is_some_and(|s| i >= s));
            *more = !blocked[i] && (!whole_run_applied || run_may_continue);
        }
        self.count(&pass);
        Ok(pass)
    }

    /// Apply `runs` (each stream's messages that continue its version, in
    /// order) in the transaction `tx`, then record what was applied: the
    /// part of a drain transaction that does not depend on where its
    /// messages come from. Returns the account, and for a delivery batch
    /// what inserting it did.
    async fn apply_runs(
        &self,
        tx: &mut PgConnection,
        streams: &[(String, String)],
        runs: Vec<Candidate<NextRow>>,
        source: Source<'_>,
    ) -> Result<(Tally, Inserted), DrainError> {
        let mut tally = Tally::new(streams.len());
        let mut appended = false;
        let mut inserted = Inserted::default();
        // Messages decided but not folded yet wait in `tally.unfolded`: a
        // decider that reads the projection sees each message folded
        // before it decides the next; otherwise the batch is folded at
        // once, at its end.
        let fold_each = self.service.reads_projection();
        let mut queue: VecDeque<Candidate<NextRow>> = runs.into();
        // The message a quiet run stopped before: it is decided alone.
        let mut alone = None;
        while let Some(c) = queue.pop_front() {
            if appended {
                break;
            }
            if tally.blocked[c.stream] {
                continue;
            }
            if c.row.skipped {
                // An operator passed over this row: move the stream past it.
                tally.passed_over(c.stream, &c.row);
                continue;
            }
            let envelope = match c.row.message.envelope() {
                Ok(envelope) => envelope,
                Err(error) => {
                    self.record_failure(tx, &mut tally, &c, error, source)
                        .await?;
                    continue;
                }
            };
            if alone != Some(c.row.message_id) && self.service.may_be_quiet(&envelope.type_name) {
                let stopped_before = self
                    .apply_quiet_run(tx, &mut tally, &mut queue, (c, envelope))
                    .await?;
                alone = stopped_before;
                if fold_each && !tally.unfolded.is_empty() {
                    self.fold(tx, &mut tally).await?;
                }
                continue;
            }
            let entries = match self.service.decide(tx, &envelope).await {
                Ok(entries) => entries,
                Err(HandleError::Message(error)) => {
                    // Nothing of this message was written: count the
                    // attempt and stop its stream here.
                    self.record_failure(tx, &mut tally, &c, error, source)
                        .await?;
                    continue;
                }
                Err(HandleError::Store(e)) => return Err(e.into()),
            };
            tally.applied(c.stream, &c.row, envelope);
            if fold_each || !entries.is_empty() {
                self.fold(tx, &mut tally).await?;
            }
            if !entries.is_empty() {
                inserted = self.record_progress(tx, streams, &tally, source).await?;
                record_own(tx, &self.log, self.service.as_ref(), &entries).await?;
                appended = true;
            }
        }
        if !tally.unfolded.is_empty() {
            self.fold(tx, &mut tally).await?;
        }
        if !appended {
            inserted = self.record_progress(tx, streams, &tally, source).await?;
        }
        Ok((tally, inserted))
    }

    /// Stop the stream of a message that failed, and record the failure on
    /// its row (a delivery applied on receipt has none yet: see
    /// [`Source::Delivered`]).
    async fn record_failure(
        &self,
        conn: &mut PgConnection,
        tally: &mut Tally,
        c: &Candidate<NextRow>,
        error: String,
        source: Source<'_>,
    ) -> Result<(), StoreError> {
        match source {
            Source::Inbox => {
                let dead = inbox::record_failure(conn, c.row.message_id, &error, self.max_attempts)
                    .await?;
                tally.failed(c.stream, c.row.message_id, error, dead);
            }
            Source::Delivered(_) => tally.blocked[c.stream] = true,
        }
        Ok(())
    }

    /// Fold the messages applied and not folded yet.
    async fn fold(&self, conn: &mut PgConnection, tally: &mut Tally) -> Result<(), StoreError> {
        self.service
            .project_received_batch(conn, &tally.unfolded)
            .await?;
        tally.unfolded.clear();
        Ok(())
    }

    /// Record what this transaction applied (marking the inbox's rows
    /// applied, or inserting the delivery batch), and move its streams on.
    async fn record_progress(
        &self,
        conn: &mut PgConnection,
        streams: &[(String, String)],
        tally: &Tally,
        source: Source<'_>,
    ) -> Result<Inserted, DrainError> {
        // The last version applied of each stream (rows come in version
        // order, so a later entry of a stream supersedes an earlier one).
        let mut last = vec![None; streams.len()];
        for &(i, version) in &tally.versions {
            last[i] = Some(version);
        }
        let latest: Vec<(&str, &str, i64)> = streams
            .iter()
            .zip(last)
            .filter_map(|((log, stream), v)| Some((log.as_str(), stream.as_str(), v?)))
            .collect();
        match source {
            Source::Inbox => {
                inbox::record_applied(conn, &tally.applied_ids, &latest).await?;
                Ok(Inserted::default())
            }
            Source::Delivered(batch) => {
                let inserted =
                    inbox::insert_batch(conn, batch, &self.owner, &tally.applied_ids, &latest)
                        .await?;
                if inserted.applied != tally.applied_ids.len() {
                    return Err(DrainError::AlreadyReceived);
                }
                Ok(inserted)
            }
        }
    }

    /// Metrics, logs and the tick of a committed pass.
    fn count(&self, pass: &Pass) {
        if pass.applied > 0 {
            self.commits.tick();
        }
        if let Some(oldest) = pass.oldest {
            let lag = (chrono::Utc::now() - oldest).to_std().unwrap_or_default();
            self.lag.record(lag);
            metrics::gauge!(m::APPLY_LAG_SECONDS, "service" => self.name.clone())
                .set(lag.as_secs_f64());
        }
        metrics::counter!(m::MESSAGES_TOTAL, "service" => self.name.clone(), "outcome" => "applied")
            .increment(pass.folded);
        for (message_id, _, error, dead) in &pass.failures {
            let outcome_label = if *dead { "dead" } else { "failed" };
            metrics::counter!(m::MESSAGES_TOTAL, "service" => self.name.clone(), "outcome" => outcome_label)
                .increment(1);
            if *dead {
                tracing::error!(service = %self.name, %message_id, %error,
                    "a message failed too often and is dead; its stream waits for an operator");
            } else {
                tracing::warn!(service = %self.name, %message_id, %error, "applying a message failed");
            }
        }
    }

    /// Every stream that has rows waiting to be applied (swept at start,
    /// after an outage, and periodically, so nothing waits for a delivery
    /// that already came), oldest first, at most 1,000.
    pub async fn waiting_streams(&self) -> Result<Vec<(String, String)>, DrainError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::new("listing waiting streams"))?;
        Ok(inbox::waiting_streams(&mut conn, 1000, &self.owner).await?)
    }
}
