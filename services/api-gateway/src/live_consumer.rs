//! The gateway's listener on the live exchange: node heartbeats into the
//! in-memory [`HeartbeatCache`], and runners' output lines to their
//! followers through the [`OutputHub`].
//!
//! Telemetry goes around the inbox on purpose (DESIGN.md section 1): it must
//! not wait behind a backlog of events, and nothing of it is kept. So each
//! gateway process declares a queue of its own
//! ([`Topology::declare_live_queue`]: non-durable, exclusive, auto-delete),
//! which lives only as long as its connection, consumes it without
//! acknowledgements, and declares it again, under a new name, after a
//! reconnect.

use crate::heartbeats::HeartbeatCache;
use crate::runner_logs::output_hub::OutputHub;
use futures::StreamExt;
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;
use stratavore_bus::{ListenError, LiveListener, Topology, decode_live, listen_live};
use stratavore_events::process::{LiveMessage, NodeHeartbeat};
use stratavore_runtime::{Clock, Shutdown};
use uuid::Uuid;

/// A binding of the live queue: every node's heartbeats
/// (`node.heartbeat.<node>`).
pub const HEARTBEAT_BINDING: &str = "node.heartbeat.*";

/// A binding of the live queue: every runner's output lines
/// (`runner.output.<runner>`). All of them, followed or not: one binding
/// that never changes is simpler to keep right across reconnects than one
/// per follower, and a line nobody follows is dropped at once.
pub const OUTPUT_BINDING: &str = "runner.output.*";

/// How long a message may wait in the queue for a gateway slow to read
/// it; older ones are dropped by the broker (a newer heartbeat supersedes
/// them, and a follower reads a lost line from the node).
const MESSAGE_TTL_MS: u64 = 30_000;

/// The name of one live queue: `<prefix>.api-gateway.live.<id>`, a new id
/// for each connection (a queue of a connection the broker has not yet
/// noticed is dead would still hold the old name).
pub fn live_queue_name(topology: &Topology, id: Uuid) -> String {
    topology.replica_live_queue(crate::SERVICE, &id.simple().to_string())
}

/// The heartbeat in a delivery; None for another live message.
pub fn read_heartbeat(
    properties: &BasicProperties,
    body: &[u8],
) -> Result<Option<NodeHeartbeat>, stratavore_bus::LiveError> {
    match decode_live(properties, body)? {
        LiveMessage::Heartbeat(heartbeat) => Ok(Some(heartbeat)),
        LiveMessage::Tick(_) | LiveMessage::Output(_) => Ok(None),
    }
}

/// Why the listener must reconnect.
#[derive(Debug, thiserror::Error)]
enum LiveError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the delivery stream ended")]
    Ended,
}

/// The listener of one gateway process.
pub struct LiveConsumer {
    /// AMQP URL.
    pub broker_url: String,
    /// Names.
    pub topology: Topology,
    /// Where heartbeats go.
    pub cache: HeartbeatCache,
    /// Where output lines go.
    pub outputs: OutputHub,
    /// Stamps each heartbeat's arrival.
    pub clock: Arc<dyn Clock>,
    /// Wait before reconnecting.
    pub retry_backoff: Duration,
}

impl LiveConsumer {
    /// Run under `shutdown`, reconnecting until it is triggered.
    pub fn spawn(self, shutdown: &Shutdown) {
        shutdown.spawn("api-gateway live consumer", self.run(shutdown.clone()));
    }

    async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match self.consume(&shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "live consumer stopped; reconnecting");
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(self.retry_backoff) => {}
                    }
                }
            }
        }
    }

    async fn open(&self) -> Result<LiveListener, ListenError> {
        let queue = live_queue_name(&self.topology, Uuid::now_v7());
        let listener = listen_live(
            &self.broker_url,
            "api-gateway live",
            &self.topology,
            &queue,
            &[HEARTBEAT_BINDING.to_owned(), OUTPUT_BINDING.to_owned()],
            MESSAGE_TTL_MS,
        )
        .await?;
        tracing::info!(%queue, "listening for node heartbeats and output lines");
        Ok(listener)
    }

    async fn consume(&self, shutdown: &Shutdown) -> Result<(), LiveError> {
        let mut listener = self.open().await?;
        let result = loop {
            let next = tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                next = listener.deliveries.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => break Err(LiveError::Amqp(e)),
                None => break Err(LiveError::Ended),
            };
            match decode_live(&delivery.properties, &delivery.data) {
                Ok(LiveMessage::Heartbeat(heartbeat)) => {
                    self.cache.record(heartbeat, self.clock.now());
                }
                Ok(LiveMessage::Output(output)) => self.outputs.publish(output),
                Ok(LiveMessage::Tick(_)) => {}
                Err(e) => tracing::warn!(
                    routing_key = %delivery.routing_key,
                    error = %e,
                    "dropped an unreadable live message"
                ),
            }
        };
        listener.close("live consumer stopping").await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_events::Message;
    use stratavore_events::process::{OrchestratorTick, RunnerSample};

    fn amqp(message: &LiveMessage) -> stratavore_bus::AmqpMessage {
        let topology = Topology::new("t-1", 100);
        stratavore_bus::live_outgoing(
            &topology,
            message,
            "/stratavore/runner-supervisor/n1",
            "n1",
            chrono::Utc::now(),
        )
        .unwrap()
        .message
    }

    #[test]
    fn a_heartbeat_is_read_from_the_wire_and_a_tick_is_passed_over() {
        let heartbeat = NodeHeartbeat {
            node: "n1".into(),
            incarnation: Uuid::now_v7(),
            seq: 7,
            interval_ms: 2000,
            capacity: 4,
            draining: false,
            runners: vec![RunnerSample {
                runner_id: Uuid::now_v7(),
                attempt: 2,
                pid: 4242,
                cpu_seconds: 1.5,
                rss_bytes: 1 << 20,
            }],
        };
        let m = amqp(&LiveMessage::Heartbeat(heartbeat.clone()));
        assert_eq!(
            read_heartbeat(&m.properties, &m.body).unwrap(),
            Some(heartbeat)
        );
        let tick = amqp(&LiveMessage::Tick(OrchestratorTick {
            replica: Uuid::now_v7(),
            seq: 1,
        }));
        assert_eq!(read_heartbeat(&tick.properties, &tick.body).unwrap(), None);
    }

    #[test]
    fn an_output_line_goes_out_under_its_runner_and_reads_back_the_same() {
        let runner = Uuid::now_v7();
        let line = LiveMessage::Output(stratavore_events::process::RunnerOutput {
            runner_id: runner,
            attempt: 2,
            offset: 120,
            line: r#"{"type":"assistant"}"#.into(),
            truncated: false,
        });
        let out = stratavore_bus::live_outgoing(
            &Topology::new("t-1", 100),
            &line,
            "/stratavore/runner-supervisor/n1",
            &runner.to_string(),
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(out.routing_key, format!("runner.output.{runner}"));
        assert!(!out.persistent);
        let back = decode_live(&out.message.properties, &out.message.body).unwrap();
        assert_eq!(back, line);
        assert_eq!(
            read_heartbeat(&out.message.properties, &out.message.body).unwrap(),
            None
        );
    }

    #[test]
    fn anything_else_is_unreadable() {
        let m = amqp(&LiveMessage::Tick(OrchestratorTick {
            replica: Uuid::now_v7(),
            seq: 1,
        }));
        assert!(read_heartbeat(&BasicProperties::default(), b"{}").is_err());
        assert!(read_heartbeat(&m.properties, b"[1, 2]").is_err());
    }

    #[test]
    fn the_bindings_match_the_catalogued_keys_with_the_node_or_runner_appended() {
        let key = |name: &str| {
            LiveMessage::types()
                .iter()
                .find(|t| t.type_name == name)
                .unwrap()
                .routing_key
        };
        assert_eq!(
            HEARTBEAT_BINDING,
            format!("{}.*", key("io.stratavore.node.heartbeat.v1"))
        );
        assert_eq!(
            OUTPUT_BINDING,
            format!("{}.*", key("io.stratavore.runner.output.v1"))
        );
        let t = Topology::new("t-1", 100);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(live_queue_name(&t, a).starts_with("t-1.api-gateway.live."));
        assert_ne!(live_queue_name(&t, a), live_queue_name(&t, b));
    }
}
