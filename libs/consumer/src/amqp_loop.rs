//! The consuming loop: take a batch of deliveries, insert them all into the
//! inbox, applying on receipt those that continue their streams, and
//! commit; ack exactly those, then hand the streams with messages left
//! waiting to the drain task. Nothing is acked before its row is
//! committed, so a crash anywhere only causes redeliveries, which the inbox
//! absorbs.
//!
//! The drain runs beside the loop (one drain transaction at a time per
//! process, theirs or the loop's), and the streams handed over meanwhile
//! are drained together. The hand-over queue is short: when the drain
//! falls behind, the loop waits instead of filling the inbox far ahead of
//! it.
//!
//! While Postgres is away the consumer holds no deliveries: it closes its
//! channel (the broker requeues them), reports not ready, and comes back
//! later. The service's dead-letter queue (what the broker gave up on, past
//! its delivery limit) is consumed into the inbox as dead rows.

use crate::drain::{Drainer, streams_of};
use crate::inbox;
use crate::metrics as m;
use crate::received::{ReceivedMessage, read_delivery};
use crate::service::{Decider, Projection};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use std::collections::HashSet;
use std::time::Duration;
use stratavore_bus::{BrokerError, Topology, connect};
use stratavore_runtime::{Readiness, Shutdown};
use stratavore_store::StoreError;
use tokio::sync::mpsc;

/// How a consumer behaves; every duration comes from config.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The queue consumed.
    pub queue: String,
    /// Deliveries per batch (also the prefetch).
    pub batch_size: u16,
    /// How long to wait for more deliveries after the first of a batch.
    pub batch_linger: Duration,
    /// Wait before reconnecting after a failure.
    pub retry_backoff: Duration,
    /// How often waiting streams are drained and the inbox measured.
    pub sweep_interval: Duration,
    /// A row waiting this long for its predecessor raises an alert.
    pub gap_alert_after: Duration,
}

/// A consumer of one service queue.
pub struct Consumer<S> {
    /// Applies what was inserted.
    pub drainer: Drainer<S>,
    /// AMQP URL.
    pub broker_url: String,
    /// Names.
    pub topology: Topology,
    /// Behaviour.
    pub settings: ConsumerSettings,
    /// Where health is reported (`consumer`).
    pub readiness: Readiness,
}

/// Why the loop must reconnect.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the delivery stream ended")]
    Ended,
}

impl<S: Decider + Projection> Consumer<S> {
    /// The consumer of a started service's own queue, run under `shutdown`.
    pub fn spawn_for_service(
        drainer: Drainer<S>,
        base: &stratavore_runtime::ServiceBase,
        config: &stratavore_runtime::ServiceConfig,
        section: &crate::ConsumerSection,
        shutdown: &Shutdown,
    ) {
        let queue = base.topology.service_queue(&drainer.name);
        let consumer = Consumer {
            broker_url: config.broker.url.clone(),
            topology: base.topology.clone(),
            settings: section.settings(queue, config.retry_backoff()),
            readiness: base.readiness.clone(),
            drainer,
        };
        shutdown.spawn(
            format!("{} consumer", consumer.drainer.name),
            consumer.run(shutdown.clone()),
        );
    }

    /// Run the consumer, its dead-letter consumer and its sweeper until
    /// shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        self.readiness.set("consumer", false, "starting");
        let (touched, to_drain) = mpsc::channel(TOUCHED_QUEUE);
        let sweeper = Sweeper {
            drainer: self.drainer.clone(),
            settings: self.settings.clone(),
            touched: touched.clone(),
        };
        shutdown.spawn(
            format!("{} sweeper", self.settings.queue),
            sweeper.run(shutdown.clone()),
        );
        shutdown.spawn(
            format!("{} drain", self.settings.queue),
            drain_touched(
                self.drainer.clone(),
                to_drain,
                self.readiness.clone(),
                shutdown.clone(),
            ),
        );
        let dlq = Topology::dead_letter_queue(&self.settings.queue);
        shutdown.spawn(
            format!("{dlq} consumer"),
            consume_dead_letters(
                self.drainer.clone(),
                self.broker_url.clone(),
                dlq,
                self.settings.retry_backoff,
                shutdown.clone(),
            ),
        );
        while !shutdown.is_triggered() {
            match self.consume(&shutdown, &touched).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(queue = %self.settings.queue, error = %e, "consumer stopped; reconnecting");
                    self.readiness.set("consumer", false, e.to_string());
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(self.settings.retry_backoff) => {}
                    }
                }
            }
        }
    }

    async fn open(&self) -> Result<(Connection, Channel, lapin::Consumer), LoopError> {
        let conn = connect(&self.broker_url, &format!("{} consumer", self.drainer.name)).await?;
        let channel = conn.create_channel().await?;
        // The topology may be missing after a broker reset: declare it again
        // (idempotent) before consuming.
        self.topology
            .declare_all(&channel)
            .await
            .map_err(BrokerError::from)?;
        channel
            .basic_qos(self.settings.batch_size, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.settings.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((conn, channel, consumer))
    }

    async fn consume(&self, shutdown: &Shutdown, touched: &Touched) -> Result<(), LoopError> {
        let (conn, channel, mut deliveries) = self.open().await?;
        self.readiness.set("consumer", true, "consuming");
        let result = loop {
            let first = tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                next = deliveries.next() => next,
            };
            let mut batch = match first {
                Some(d) => vec![d?],
                None => break Err(LoopError::Ended),
            };
            let linger = tokio::time::Instant::now() + self.settings.batch_linger;
            while batch.len() < usize::from(self.settings.batch_size) {
                match tokio::time::timeout_at(linger, deliveries.next()).await {
                    Ok(Some(d)) => batch.push(d?),
                    Ok(None) | Err(_) => break,
                }
            }
            if let Err(e) = self.handle_batch(&batch, touched).await {
                break Err(e);
            }
        };
        // Closing the channel returns whatever is unacked to the queue.
        // Bounded: a broker that stopped answering must not hold the
        // reconnect (or shutdown) up.
        let close = async {
            let _ = channel.close(200, "consumer stopping".into()).await;
            let _ = conn.close(200, "consumer stopping".into()).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        result
    }

    async fn handle_batch(&self, batch: &[Delivery], touched: &Touched) -> Result<(), LoopError> {
        let received: Vec<ReceivedMessage> = batch
            .iter()
            .map(|d| read_delivery(&d.properties, &d.data))
            .collect();
        let (inserted, streams) = match self.drainer.apply_delivered(&received).await {
            Ok(delivered) => (delivered.inserted, delivered.waiting),
            Err(e) => {
                // Rolled back whole: insert the batch alone, and leave all
                // of it to the drain.
                tracing::debug!(service = %self.drainer.name, error = %e,
                    "applying a batch on receipt failed; inserting it alone");
                let mut tx = self
                    .drainer
                    .pool
                    .begin()
                    .await
                    .map_err(StoreError::new("opening an inbox transaction"))?;
                let inserted =
                    inbox::insert_batch(&mut tx, &received, &self.drainer.owner, &[], &[]).await?;
                tx.commit()
                    .await
                    .map_err(StoreError::new("committing deliveries"))?;
                (inserted.rows, streams_of(&received).0)
            }
        };
        let name = self.drainer.name.clone();
        metrics::counter!(m::MESSAGES_TOTAL, "service" => name.clone(), "outcome" => "inserted")
            .increment(inserted);
        metrics::counter!(m::MESSAGES_TOTAL, "service" => name.clone(), "outcome" => "duplicate")
            .increment(received.len() as u64 - inserted);
        for r in received.iter().filter(|r| r.unreadable.is_some()) {
            tracing::error!(service = %name, message_id = %r.message_id, reason = ?r.unreadable,
                "an unreadable message was recorded as a dead row");
            metrics::counter!(m::MESSAGES_TOTAL, "service" => name.clone(), "outcome" => "dead")
                .increment(1);
        }
        stratavore_runtime::failpoint::failpoint("consumer_after_inbox_commit");
        // Everything of the batch is committed: ack exactly these.
        if let Some(last) = batch.last() {
            last.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(LoopError::Amqp)?;
        }
        if !streams.is_empty() && touched.send(streams).await.is_err() {
            // The drain task ended (shutdown): the rows are safe in the
            // inbox and drained at the next start.
            tracing::debug!(service = %name, "the drain task is gone");
        }
        Ok(())
    }
}

/// Batches of touched streams the loop may hand over before it waits for
/// the drain.
const TOUCHED_QUEUE: usize = 4;

/// Where the loop hands the streams a batch touched.
type Touched = mpsc::Sender<Vec<(String, String)>>;

/// Drain the streams the loop hands over, merging whatever arrived while
/// the last drain ran into one.
async fn drain_touched<S: Decider + Projection>(
    drainer: Drainer<S>,
    mut touched: mpsc::Receiver<Vec<(String, String)>>,
    readiness: Readiness,
    shutdown: Shutdown,
) {
    let mut failing = false;
    loop {
        let mut streams = tokio::select! {
            _ = shutdown.wait() => return,
            next = touched.recv() => match next {
                Some(streams) => streams,
                None => return,
            },
        };
        let mut seen: HashSet<(String, String)> = streams.iter().cloned().collect();
        while let Ok(more) = touched.try_recv() {
            for stream in more {
                if seen.insert(stream.clone()) {
                    streams.push(stream);
                }
            }
        }
        match drainer.drain_streams(&streams).await {
            Ok(_) if failing => {
                failing = false;
                readiness.set("consumer", true, "consuming");
            }
            Ok(_) => {}
            Err(e) => {
                // The rows are safe in the inbox; the sweeper drains them
                // when the database is back.
                tracing::warn!(service = %drainer.name, error = %e, "draining failed; will retry");
                readiness.set("consumer", false, e.to_string());
                failing = true;
            }
        }
    }
}

/// Hands the streams with waiting rows to the drain task and measures the
/// inbox, periodically. It does not drain itself: one drainer per process
/// means a batch never waits for (or deadlocks with) a sibling's batch
/// over the same projection rows.
struct Sweeper<S> {
    drainer: Drainer<S>,
    settings: ConsumerSettings,
    touched: Touched,
}

impl<S: Decider + Projection> Sweeper<S> {
    async fn run(self, shutdown: Shutdown) {
        let name = self.drainer.name.clone();
        loop {
            match self.drainer.waiting_streams().await {
                Ok(streams) => {
                    for chunk in streams.chunks(self.drainer.batch.max(1)) {
                        if self.touched.send(chunk.to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %name, error = %e, "listing waiting streams failed")
                }
            }
            match self.drainer.pool.acquire().await {
                Ok(mut conn) => match inbox::health(&mut conn).await {
                    Ok((dead, oldest_waiting)) => {
                        metrics::gauge!(m::DEAD_ROWS, "service" => name.clone()).set(dead as f64);
                        metrics::gauge!(m::OLDEST_WAITING_SECONDS, "service" => name.clone())
                            .set(oldest_waiting);
                        if oldest_waiting > self.settings.gap_alert_after.as_secs_f64() {
                            tracing::warn!(service = %name, oldest_waiting,
                                "a message has waited for its predecessor longer than the alert threshold");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot measure the inbox"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot measure the inbox"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.settings.sweep_interval) => {}
            }
        }
    }
}

/// The reason the broker gave when it dead-lettered a message.
fn death_reason(delivery: &Delivery) -> String {
    let reason = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|first| match first {
            AMQPValue::FieldTable(t) => t.inner().get("reason").cloned(),
            _ => None,
        })
        .map(|r| match r {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => format!("{other:?}"),
        });
    format!(
        "dead-lettered by the broker ({})",
        reason.unwrap_or_else(|| "no x-death reason".to_owned())
    )
}

async fn consume_dead_letters<S: Decider + Projection>(
    drainer: Drainer<S>,
    broker_url: String,
    dlq: String,
    backoff: Duration,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        let result: Result<(), LoopError> = async {
            let conn = connect(&broker_url, &format!("{} dead letters", drainer.name)).await?;
            let channel = conn.create_channel().await?;
            channel.basic_qos(16, BasicQosOptions::default()).await?;
            let mut deliveries = channel
                .basic_consume(dlq.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            loop {
                let next = tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    next = deliveries.next() => next,
                };
                let delivery = next.ok_or(LoopError::Ended)??;
                let received = read_delivery(&delivery.properties, &delivery.data);
                let reason = death_reason(&delivery);
                let mut db = drainer.pool.acquire().await.map_err(StoreError::new("recording a dead letter"))?;
                let new = inbox::insert_dead(&mut db, &received, &reason, &drainer.owner).await?;
                delivery.acker.ack(BasicAckOptions::default()).await?;
                if new > 0 {
                    tracing::error!(service = %drainer.name, message_id = %received.message_id, %reason,
                        "the broker dead-lettered a message; recorded as a dead row");
                    metrics::counter!(m::MESSAGES_TOTAL, "service" => drainer.name.clone(),
                        "outcome" => "dead_lettered_by_broker")
                    .increment(1);
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(queue = %dlq, error = %e, "dead-letter consumer stopped; reconnecting");
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}
