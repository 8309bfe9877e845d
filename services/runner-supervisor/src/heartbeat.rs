//! The node's heartbeat: every `node.heartbeat_interval_ms`, one message on
//! the live exchange, mandatory and confirmed. Only a confirmed heartbeat
//! (none returned, none nacked) moves the lease clock, by its publish time;
//! every beat first checks the fence, which ends the incarnation once no
//! heartbeat was confirmed for half the TTL.

use crate::domain::node_commands::NodeIdentity;
use crate::liveness::{Liveness, boot_now};
use std::sync::Arc;
use std::time::Duration;
use stratavore_bus::{Publisher, Topology, connect, live_outgoing};
use stratavore_events::process::{LiveMessage, NodeHeartbeat};
use stratavore_runtime::Shutdown;

/// The heartbeat task's settings.
pub struct Heartbeat {
    /// Shared with the watcher.
    pub liveness: Arc<Liveness>,
    /// This node and incarnation.
    pub me: NodeIdentity,
    /// Runners it takes at once.
    pub capacity: u32,
    /// How often.
    pub interval: Duration,
    /// The broker.
    pub broker_url: String,
    /// Names of the exchanges.
    pub topology: Topology,
    /// The `source` of its messages.
    pub source: String,
}

impl Heartbeat {
    /// Beat until the scope ends (shutdown, or the fence).
    pub async fn run(self, scope: Shutdown) {
        let mut publisher: Option<Publisher> = None;
        let mut seq = 0_u64;
        loop {
            if self.liveness.check_fence() {
                return;
            }
            if publisher.as_ref().is_none_or(|p| !p.is_usable()) {
                publisher = self.open().await;
            }
            if let Some(p) = &publisher {
                self.beat(p, seq).await;
                seq += 1;
            }
            tokio::select! {
                _ = scope.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn open(&self) -> Option<Publisher> {
        let opened = async {
            let name = format!("runner-supervisor {} heartbeat", self.me.node);
            let connection = connect(&self.broker_url, &name).await?;
            Publisher::open_owning(connection).await
        };
        match tokio::time::timeout(self.interval, opened).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach the broker to send heartbeats");
                None
            }
            Err(_) => {
                tracing::warn!("connecting to the broker for heartbeats timed out");
                None
            }
        }
    }

    async fn beat(&self, publisher: &Publisher, seq: u64) {
        let message = LiveMessage::Heartbeat(NodeHeartbeat {
            node: self.me.node.clone(),
            incarnation: self.me.incarnation,
            seq,
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            capacity: self.capacity,
            draining: self.liveness.draining(),
            runners: self.liveness.samples(),
        });
        let out = match live_outgoing(
            &self.topology,
            &message,
            &self.source,
            &self.me.node,
            chrono::Utc::now(),
        ) {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a heartbeat");
                return;
            }
        };
        // The lease counts from the publish, not from the confirm: a confirm
        // that took long proves only that the broker had it by then.
        let published_at = boot_now();
        match tokio::time::timeout(self.interval, publisher.publish_batch(&[out])).await {
            Ok(Ok(())) => {
                self.liveness.confirmed(published_at);
                crate::metrics::heartbeat("confirmed");
            }
            Ok(Err(e)) => {
                // Returned (no orchestrator or gateway listens), nacked, or
                // the channel failed: no lease moves.
                tracing::warn!(error = %e, "a heartbeat was not confirmed");
                crate::metrics::heartbeat("unconfirmed");
            }
            Err(_) => {
                tracing::warn!("a heartbeat's confirm did not come in time");
                crate::metrics::heartbeat("timed_out");
            }
        }
    }
}
