//! Relaying one source schema's log: hold its lease, read the rows above the
//! cursor, publish them as a batch with confirms, and advance the cursor only
//! once the whole batch is confirmed (the next batches may go out meanwhile:
//! [`BATCHES_IN_FLIGHT`]). A crash anywhere republishes from the cursor:
//! duplicates, never loss.
//!
//! The lease is a session advisory lock held on a dedicated connection (not
//! a pooled one, which the pool may recycle and so release the lock behind
//! our back). Reading, the lease check and the cursor update all go through
//! that connection, so if it dies the relay stops at once: it cannot advance
//! a cursor it no longer owns.

use crate::domain::{poll_schedule::PollSchedule, wire::outgoing_for};
use crate::metrics as m;
use futures::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use stratavore_bus::{Confirms, OutgoingMessage, PublishError, Publisher, Topology, connect};
use stratavore_runtime::{Readiness, Shutdown};
use stratavore_store::{Log, StoreError};

/// Advisory-lock key space of relay leases (append locks use space 1).
pub const LEASE_KEY_SPACE: i32 = 2;

/// Everything one source's relay loop needs.
#[derive(Debug, Clone)]
pub struct SourceRelay {
    /// The log relayed.
    pub log: Log,
    /// The relay role's connection options (search path `relay`).
    pub db: PgConnectOptions,
    /// AMQP URL.
    pub broker_url: String,
    /// Names of exchanges.
    pub topology: Topology,
    /// Polling.
    pub schedule: PollSchedule,
    /// How often a standby tries for the lease.
    pub lease_retry: Duration,
    /// Wait after a failure before retrying.
    pub retry_backoff: Duration,
    /// How often lag is measured.
    pub measure_interval: Duration,
    /// The longest a batch may wait for its confirms.
    pub publish_timeout: Duration,
    /// Where to report database and broker health.
    pub readiness: Readiness,
}

/// Why the loop let go of the lease.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the lease of {0} was lost")]
    LeaseLost(String),
    #[error(transparent)]
    Encode(#[from] crate::domain::wire::WireError),
}

/// Whether this backend holds the lease of `key`, in SQL: its own session
/// advisory lock in `pg_locks` (two integers, so nothing else reaches the
/// text).
pub fn lease_held_sql(key: i32) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
             AND pid = pg_backend_pid() AND classid = {LEASE_KEY_SPACE}::oid
             AND objid = {key}::oid AND objsubid = 2 AND granted)"
    )
}

/// The lease key of a schema: the log's lock key, kept non-negative so it
/// compares cleanly with `pg_locks.objid` (an unsigned oid).
pub fn lease_key(schema: &str) -> i32 {
    stratavore_store::log::log_lock_key(schema) & i32::MAX
}

impl SourceRelay {
    fn source(&self) -> String {
        self.log.schema().to_owned()
    }

    /// Run until shutdown: contend for the lease, relay while holding it,
    /// and start over after any failure.
    pub async fn run(self, shutdown: Shutdown) {
        let source = self.source();
        let mut publisher: Option<Publisher> = None;
        while !shutdown.is_triggered() {
            match self.lead(&shutdown, &mut publisher).await {
                Ok(()) => break,
                Err(e) => {
                    metrics::gauge!(m::LEASE_HELD, "source" => source.clone()).set(0.0);
                    tracing::warn!(source = %source, error = %e, "relay loop failed; retrying");
                    self.readiness.set("database", false, e.to_string());
                    pause(&shutdown, self.retry_backoff).await;
                }
            }
        }
        metrics::gauge!(m::LEASE_HELD, "source" => source).set(0.0);
    }

    /// Connect, wait to hold the lease, then relay. Ok means shutdown.
    async fn lead(
        &self,
        shutdown: &Shutdown,
        publisher: &mut Option<Publisher>,
    ) -> Result<(), LoopError> {
        let source = self.source();
        let mut conn = self
            .db
            .connect()
            .await
            .map_err(StoreError::new("opening the lease connection"))?;
        self.readiness.set("database", true, "connected");
        let key = lease_key(&source);
        metrics::gauge!(m::LEASE_HELD, "source" => source.clone()).set(0.0);
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LEASE_KEY_SPACE)
                .bind(key)
                .fetch_one(&mut conn)
                .await
                .map_err(StoreError::new("trying for the lease"))?;
            if got {
                break;
            }
            if !pause(shutdown, self.lease_retry).await {
                return Ok(());
            }
        }
        metrics::gauge!(m::LEASE_HELD, "source" => source.clone()).set(1.0);
        tracing::info!(source = %source, "holding the relay lease");
        let result = self
            .relay_while_leader(&mut conn, key, shutdown, publisher)
            .await;
        // Closing the connection releases the lease for a standby at once.
        let _ = conn.close().await;
        result
    }

    async fn relay_while_leader(
        &self,
        conn: &mut PgConnection,
        key: i32,
        shutdown: &Shutdown,
        publisher: &mut Option<Publisher>,
    ) -> Result<(), LoopError> {
        let source = self.source();
        let mut cursor: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT position FROM relay.cursors WHERE source_schema = $1), 0)",
        )
        .bind(&source)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::new("reading the relay cursor"))?;
        let mut delay = Duration::ZERO;
        let mut last_measure: Option<Instant> = None;
        let batch_limit = i64::try_from(self.schedule.batch_size).unwrap_or(i64::MAX);
        let lease_held = lease_held_sql(key);
        // Batches sent and not yet confirmed, oldest first, and where the
        // next read starts: above the last batch sent, not the cursor.
        let mut window: VecDeque<InFlight> = VecDeque::with_capacity(BATCHES_IN_FLIGHT);
        let mut read_from = cursor;
        // The last read found nothing new while batches were in flight:
        // wait for the broker's answer rather than poll.
        let mut idle_with_batches_out = false;
        while !shutdown.is_triggered() {
            let must_wait = window.len() >= BATCHES_IN_FLIGHT || idle_with_batches_out;
            match self.settle(&mut window, must_wait).await {
                Ok(Some(last)) => {
                    advance_cursor(conn, &source, last).await?;
                    cursor = last;
                }
                Ok(None) => {}
                Err(e) => {
                    read_from = cursor;
                    if !self.start_over(&e, publisher, &mut window, shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            if window.len() >= BATCHES_IN_FLIGHT {
                continue;
            }
            // The lease is checked before every batch, in the statement
            // that reads it; an empty read publishes nothing and skips the
            // check (reading `pg_locks` costs more than the read).
            let (rows, held) = self
                .log
                .read_after_checking(conn, read_from, batch_limit, &lease_held)
                .await?;
            if !held {
                return Err(LoopError::LeaseLost(self.source()));
            }
            if let Some(last) = rows.last().map(|r| r.position) {
                let batch = self.encode(&rows)?;
                match self.send(publisher, &batch).await {
                    Ok(confirms) => {
                        window.push_back(InFlight {
                            last,
                            count: rows.len(),
                            sent_at: Instant::now(),
                            confirms: Box::pin(confirms.confirmed()),
                        });
                        read_from = last;
                    }
                    Err(e) => {
                        read_from = cursor;
                        if !self.start_over(&e, publisher, &mut window, shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            if last_measure.is_none_or(|t| t.elapsed() >= self.measure_interval) {
                let (max_position, lag_seconds) = self.log.lag_after(conn, cursor).await?;
                metrics::gauge!(m::LAG_POSITIONS, "source" => source.clone())
                    .set((max_position - cursor).max(0) as f64);
                metrics::gauge!(m::LAG_SECONDS, "source" => source.clone()).set(lag_seconds);
                last_measure = Some(Instant::now());
            }
            idle_with_batches_out = rows.is_empty() && !window.is_empty();
            if idle_with_batches_out {
                continue;
            }
            delay = self.schedule.next_delay(delay, rows.len());
            if !delay.is_zero() && !pause(shutdown, delay).await {
                break;
            }
        }
        // Shutdown: the batches in flight are let finish and the cursor
        // moves over them, so a graceful restart republishes nothing; one
        // that fails now is published again by whoever leads next.
        while !window.is_empty() {
            match self.settle(&mut window, true).await {
                Ok(Some(last)) => advance_cursor(conn, &source, last).await?,
                Ok(None) => {}
                Err(e) => {
                    self.publish_failed(&e, publisher);
                    break;
                }
            }
        }
        Ok(())
    }

    /// After a failed batch: count it, drop the channel and every batch out
    /// (whatever was sent after the failed one is sent again too, from the
    /// cursor, on a fresh channel), and wait before reading again. False
    /// when shutdown came first.
    async fn start_over(
        &self,
        e: &PublishError,
        publisher: &mut Option<Publisher>,
        window: &mut VecDeque<InFlight>,
        shutdown: &Shutdown,
    ) -> bool {
        self.publish_failed(e, publisher);
        window.clear();
        pause(shutdown, self.retry_backoff).await
    }

    /// Take the batches at the front of `window` that the broker confirmed
    /// whole, in order, and return the last one's position; with `wait`,
    /// wait (up to its deadline) for the oldest first. A batch past its
    /// deadline, nacked or returned is an error: nothing from it on counts
    /// as sent.
    async fn settle(
        &self,
        window: &mut VecDeque<InFlight>,
        wait: bool,
    ) -> Result<Option<i64>, PublishError> {
        let mut settled = None;
        while let Some(front) = window.front_mut() {
            // Bounded: a broker that stops answering (no confirm, no
            // error) must count as a failed batch, not as a relay that
            // hangs.
            let deadline = front.sent_at + self.publish_timeout;
            let answer = if wait && settled.is_none() {
                tokio::time::timeout_at(deadline.into(), front.confirms.as_mut())
                    .await
                    .unwrap_or(Err(PublishError::TimedOut(self.publish_timeout)))
            } else {
                match front.confirms.as_mut().now_or_never() {
                    Some(answer) => answer,
                    None if Instant::now() >= deadline => {
                        Err(PublishError::TimedOut(self.publish_timeout))
                    }
                    None => break,
                }
            };
            answer?;
            let Some(done) = window.pop_front() else {
                break;
            };
            let source = self.source();
            metrics::counter!(m::PUBLISHED_TOTAL, "source" => source.clone())
                .increment(done.count as u64);
            metrics::histogram!(m::BATCH_SIZE, "source" => source.clone())
                .record(done.count as f64);
            metrics::histogram!(m::BATCH_SECONDS, "source" => source)
                .record(done.sent_at.elapsed().as_secs_f64());
            settled = Some(done.last);
        }
        Ok(settled)
    }

    /// The messages of a batch of rows. A row that cannot be encoded is a
    /// writer bug; skipping it would lose it, so the relay stops at it,
    /// loudly, and retries from the cursor.
    fn encode(&self, rows: &[stratavore_store::LogRow]) -> Result<Vec<OutgoingMessage>, LoopError> {
        rows.iter()
            .map(|row| {
                outgoing_for(&self.topology, row).map_err(|e| {
                    let source = self.source();
                    tracing::error!(source = %source, error = %e, "cannot encode a log row");
                    metrics::counter!(m::PUBLISH_FAILURES_TOTAL, "source" => source, "reason" => "encode")
                        .increment(1);
                    e.into()
                })
            })
            .collect()
    }

    /// Send a batch without waiting for its confirms, connecting first if
    /// need be; bounded like a confirm.
    async fn send(
        &self,
        publisher: &mut Option<Publisher>,
        batch: &[OutgoingMessage],
    ) -> Result<Confirms, PublishError> {
        let attempt = async { self.publisher(publisher).await?.send_batch(batch).await };
        tokio::time::timeout(self.publish_timeout, attempt)
            .await
            .unwrap_or(Err(PublishError::TimedOut(self.publish_timeout)))
    }

    /// Count and log a failed batch, and drop the channel: unconfirmed
    /// publishes count as not sent, and are sent again on a fresh one.
    fn publish_failed(&self, e: &PublishError, publisher: &mut Option<Publisher>) {
        let source = self.source();
        let reason = match e {
            PublishError::Broker(_) => "broker",
            PublishError::Nacked { .. } => "nacked",
            PublishError::Returned { .. } => "returned",
            PublishError::TimedOut(_) => "timeout",
        };
        metrics::counter!(m::PUBLISH_FAILURES_TOTAL, "source" => source.clone(), "reason" => reason)
            .increment(1);
        tracing::warn!(source = %source, error = %e, "publishing a batch failed; retrying from the cursor");
        *publisher = None;
        self.readiness.set("broker", false, e.to_string());
    }

    async fn publisher<'a>(
        &self,
        slot: &'a mut Option<Publisher>,
    ) -> Result<&'a Publisher, PublishError> {
        let publisher = match slot.take() {
            Some(p) if p.is_usable() => p,
            _ => {
                let name = format!("outbox-relay/{}", self.source());
                let connection = connect(&self.broker_url, &name).await?;
                let publisher = Publisher::open_owning(connection).await?;
                // The exchanges (and their alternate exchange) must exist
                // before anything is published, or the broker would close
                // the channel.
                self.topology
                    .declare_exchanges(publisher.channel())
                    .await
                    .map_err(stratavore_bus::BrokerError::from)?;
                self.readiness.set("broker", true, "connected");
                publisher
            }
        };
        Ok(slot.insert(publisher))
    }
}

/// Batches the relay may have sent and not yet seen confirmed. It sends the
/// next while the broker confirms the last: a quorum queue's confirm waits
/// for its log's fsync, a few milliseconds that each batch used to wait out
/// before the next was read (most of the relay's cycle at half the
/// pipeline's peak, docs/performance.md). The cursor still moves only over
/// batches confirmed whole, in order; a crash republishes at most these.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// A batch sent and not yet confirmed.
struct InFlight {
    /// Its last row's position: where the cursor moves once it is confirmed.
    last: i64,
    /// Its rows.
    count: usize,
    sent_at: Instant,
    /// The broker's answer.
    confirms: Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>,
}

/// Move the cursor to `last`. Monotone: a stale leader (if one could
/// exist) never moves it back.
async fn advance_cursor(
    conn: &mut PgConnection,
    source: &str,
    last: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO relay.cursors (source_schema, position) VALUES ($1, $2)
         ON CONFLICT (source_schema) DO UPDATE
         SET position = greatest(relay.cursors.position, excluded.position),
             updated_at = now()",
    )
    .bind(source)
    .bind(last)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::new("advancing the relay cursor"))?;
    Ok(())
}

/// Sleep unless shutdown comes first; true when the full wait elapsed.
async fn pause(shutdown: &Shutdown, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
