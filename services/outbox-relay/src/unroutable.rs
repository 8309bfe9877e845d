//! Watching the unroutable queue: every message that matched no binding is
//! kept there (the events and commands exchanges' alternate exchange), and
//! its depth is exported so it can be alerted on. The same periodic check is
//! the relay's broker readiness probe, so a standby with nothing to publish
//! still reports the broker truthfully.

use crate::metrics as m;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;
use stratavore_bus::{Topology, connect};
use stratavore_runtime::Shutdown;

/// Measures the unroutable queue's depth at an interval.
#[derive(Debug, Clone)]
pub struct UnroutableMonitor {
    /// AMQP URL.
    pub broker_url: String,
    /// Names.
    pub topology: Topology,
    /// How often to measure.
    pub interval: Duration,
    /// Where the broker's health is reported.
    pub readiness: stratavore_runtime::Readiness,
}

impl UnroutableMonitor {
    /// Run until shutdown; broker failures only delay the next measurement.
    pub async fn run(self, shutdown: Shutdown) {
        // The connection is kept beside its channel so it lives as long.
        let mut link: Option<(lapin::Connection, lapin::Channel)> = None;
        loop {
            if link.as_ref().is_none_or(|(_, ch)| !ch.status().connected()) {
                link = self.open().await;
            }
            if let Some((_, ch)) = &link {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                match ch
                    .queue_declare(
                        self.topology.unroutable_queue().as_str().into(),
                        passive,
                        FieldTable::default(),
                    )
                    .await
                {
                    Ok(q) => {
                        metrics::gauge!(m::UNROUTABLE_MESSAGES).set(f64::from(q.message_count()));
                        self.readiness.set("broker", true, "connected");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot measure the unroutable queue");
                        self.readiness.set("broker", false, e.to_string());
                        link = None;
                    }
                }
            } else {
                self.readiness.set("broker", false, "not reachable");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        if let Some((conn, _)) = link {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), conn.close(200, "shutdown".into()))
                    .await;
        }
    }

    async fn open(&self) -> Option<(lapin::Connection, lapin::Channel)> {
        match connect(&self.broker_url, "outbox-relay/unroutable-monitor").await {
            Ok(conn) => match conn.create_channel().await {
                Ok(ch) => Some((conn, ch)),
                Err(e) => {
                    tracing::debug!(error = %e, "unroutable monitor cannot open a channel");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "unroutable monitor cannot reach the broker");
                None
            }
        }
    }
}
