//! One replica's liveness watch (DESIGN.md section 4, "Liveness"): a queue
//! of its own on the live exchange, bound to every node's heartbeats and to
//! its own ticks, which it publishes at the heartbeat interval. Reading
//! both from one queue, in the order the broker got them, is what makes
//! the count fair: a replica that stalls or is cut off gets no ticks
//! either, so it convicts no one. The counting is `domain::liveness`; this
//! is the shell around it.
//!
//! A conviction is recorded at once, by this replica, in one transaction:
//! `node.lost` at version 1 of the incarnation's own stream and the
//! decision about every runner the loss concerns (nothing waits for the
//! relay). Two replicas convicting the same incarnation conflict on that
//! stream; the second finds the loss recorded and drops its own.

use crate::SERVICE;
use crate::domain::liveness::{Conviction, Liveness};
use crate::handlers::{Orchestrator, SOURCE};
use crate::metrics as m;
use crate::node_store;
use futures::StreamExt;
use lapin::message::Delivery;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use stratavore_bus::{
    BrokerError, ListenError, PublishError, Publisher, Topology, decode_live, listen_live,
    live_outgoing,
};
use stratavore_consumer::{HandleError, begin_shared, record_own};
use stratavore_events::process::{LiveMessage, OrchestratorTick};
use stratavore_runtime::Shutdown;
use stratavore_store::{AppendError, Log, StoreError};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

/// Watches node heartbeats for one replica until shutdown.
pub struct LivenessWatch {
    /// This replica (random at each start): its queue and ticks.
    pub replica: Uuid,
    /// AMQP URL.
    pub broker_url: String,
    /// Names.
    pub topology: Topology,
    /// The orchestrator's pool.
    pub pool: sqlx::PgPool,
    /// Its log.
    pub log: Log,
    /// Decides what a loss means for runners.
    pub service: Arc<Orchestrator>,
    /// How often this replica ticks.
    pub interval: Duration,
    /// Ticks without a heartbeat that convict a node.
    pub ticks_to_convict: u32,
    /// How long an unread message stays in the replica's queue.
    pub queue_ttl_ms: u64,
    /// Wait before reconnecting after a broker failure.
    pub retry_backoff: Duration,
}

/// Why the watch must reconnect.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("publishing a tick: {0}")]
    Publish(#[from] PublishError),
    #[error("the delivery stream ended")]
    Ended,
}

/// Why a loss was not recorded this time (tried again at the next tick).
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("{0}")]
    Decision(String),
    #[error("the runners it concerns kept changing while it was being recorded")]
    Contended,
}

impl From<HandleError> for RecordError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Store(s) => Self::Store(s),
            HandleError::Message(m) => Self::Decision(m),
        }
    }
}

/// What survives a reconnect: the counts, and when each node was last
/// heard.
struct WatchState {
    liveness: Liveness,
    last_heartbeat: BTreeMap<String, Instant>,
    ticks_sent: u64,
}

impl LivenessWatch {
    /// Run until shutdown, reconnecting after broker failures.
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(replica = %self.replica, k = self.ticks_to_convict, "liveness watch starting");
        let mut state = WatchState {
            liveness: Liveness::new(self.ticks_to_convict),
            last_heartbeat: BTreeMap::new(),
            ticks_sent: 0,
        };
        while !shutdown.is_triggered() {
            match self.watch(&mut state, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(replica = %self.replica, error = %e, "liveness watch stopped; reconnecting");
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(self.retry_backoff) => {}
                    }
                }
            }
        }
    }

    fn queue(&self) -> String {
        self.topology
            .replica_live_queue(SERVICE, &self.replica.to_string())
    }

    async fn watch(&self, state: &mut WatchState, shutdown: &Shutdown) -> Result<(), WatchError> {
        let keys = [
            "node.heartbeat.*".to_owned(),
            format!("orchestrator.tick.{}", self.replica),
        ];
        let mut listener = listen_live(
            &self.broker_url,
            &format!("{SERVICE} liveness {}", self.replica),
            &self.topology,
            &self.queue(),
            &keys,
            self.queue_ttl_ms,
        )
        .await?;
        // Ticks go out on the listener's own connection: a replica cut off
        // from the broker sends none and receives none.
        let publisher = match Publisher::open(&listener.connection).await {
            Ok(p) => p,
            Err(e) => {
                listener.close("liveness watch stopping").await;
                return Err(e.into());
            }
        };
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                _ = ticker.tick() => {
                    if let Err(e) = self.publish_tick(&publisher, state).await {
                        break Err(e);
                    }
                }
                next = listener.deliveries.next() => match next {
                    None => break Err(WatchError::Ended),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(delivery)) => self.receive(&delivery, state).await,
                },
            }
        };
        listener.close("liveness watch stopping").await;
        result
    }

    async fn publish_tick(
        &self,
        publisher: &Publisher,
        state: &mut WatchState,
    ) -> Result<(), WatchError> {
        let tick = LiveMessage::Tick(OrchestratorTick {
            replica: self.replica,
            seq: state.ticks_sent,
        });
        let replica = self.replica.to_string();
        let out = match live_outgoing(
            &self.topology,
            &tick,
            SOURCE,
            &replica,
            self.service.clock.now(),
        ) {
            Ok(out) => out,
            Err(e) => {
                // A bug, not an outage: say so and skip this tick.
                tracing::error!(error = %e, "a tick cannot be encoded");
                return Ok(());
            }
        };
        publisher.publish_batch(&[out]).await?;
        state.ticks_sent += 1;
        Ok(())
    }

    async fn receive(&self, delivery: &Delivery, state: &mut WatchState) {
        match decode_live(&delivery.properties, &delivery.data) {
            Ok(LiveMessage::Heartbeat(h)) => {
                state.liveness.heartbeat(&h.node, h.incarnation);
                state.last_heartbeat.insert(h.node, Instant::now());
            }
            Ok(LiveMessage::Tick(t)) if t.replica == self.replica => self.on_tick(state).await,
            Ok(LiveMessage::Tick(_)) => {}
            // Not bound by this queue; a runner's output is the gateway's.
            Ok(LiveMessage::Output(_)) => {}
            Err(e) => tracing::debug!(error = %e, "an unreadable live message was dropped"),
        }
    }

    async fn on_tick(&self, state: &mut WatchState) {
        // Registered nodes that never heartbeat are counted too, and a loss
        // another replica recorded stops the count here.
        match self.known_nodes().await {
            Ok(nodes) => {
                for n in nodes {
                    state.liveness.known(&n.node, n.incarnation, n.lost);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the nodes projection this tick"),
        }
        let convicted = state.liveness.tick();
        for (node, at) in &state.last_heartbeat {
            metrics::gauge!(m::NODE_HEARTBEAT_AGE_SECONDS, "node" => node.clone())
                .set(at.elapsed().as_secs_f64());
        }
        for conviction in convicted {
            match self.record_loss(&conviction).await {
                Ok(here) => {
                    state
                        .liveness
                        .recorded(&conviction.node, conviction.incarnation);
                    if here {
                        metrics::counter!(m::NODE_LOSSES_TOTAL).increment(1);
                        tracing::warn!(node = %conviction.node, incarnation = %conviction.incarnation,
                            missed = conviction.missed, "node declared lost");
                    }
                }
                Err(e) => tracing::warn!(node = %conviction.node, error = %e,
                    "recording a node's loss failed; trying again at the next tick"),
            }
        }
    }

    async fn known_nodes(&self) -> Result<Vec<node_store::KnownNode>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::new("reading the nodes projection"))?;
        node_store::known_nodes(&mut conn).await
    }

    /// Record a conviction with its decisions; false when the loss was
    /// recorded already (by another replica).
    async fn record_loss(&self, c: &Conviction) -> Result<bool, RecordError> {
        // A conflict means another writer went first: another replica
        // recorded this loss (found on the next try), or a runner's stream
        // moved meanwhile (decided again on fresh state).
        const TRIES: usize = 3;
        for _ in 0..TRIES {
            let mut tx = begin_shared(
                &self.pool,
                self.log.schema(),
                "opening a node-loss transaction",
            )
            .await?;
            let Some(entries) = self
                .service
                .node_lost_entries(&mut tx, &c.node, c.incarnation, c.missed)
                .await?
            else {
                return Ok(false);
            };
            match record_own(&mut tx, &self.log, self.service.as_ref(), &entries).await {
                Ok(_) => {
                    tx.commit()
                        .await
                        .map_err(StoreError::new("committing a node's loss"))?;
                    return Ok(true);
                }
                Err(AppendError::VersionConflict { .. }) => {
                    tx.rollback()
                        .await
                        .map_err(StoreError::new("rolling back a node's loss"))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RecordError::Contended)
    }
}
