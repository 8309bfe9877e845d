//! Telemetry on the live exchange (node heartbeats, orchestrator ticks):
//! CloudEvents like every other message, but not persistent, never logged
//! and never inboxed, with the node or replica appended to the routing key
//! (`node.heartbeat.<node>`, `orchestrator.tick.<replica>`).

use crate::amqp_binding::{BindingError, decode_event, encode_event};
use crate::publisher::OutgoingMessage;
use crate::topology::Topology;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use stratavore_events::process::LiveMessage;
use stratavore_events::{Envelope, EnvelopeError, Message};
use uuid::Uuid;

/// A live message could not be encoded or read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The envelope is not a valid CloudEvent.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The AMQP binding refused it.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// It is a CloudEvent of another type.
    #[error("not a live message: {0}")]
    NotLive(String),
}

/// A live queue of this connection, consumed: the connection, its channel
/// and the deliveries.
pub struct LiveListener {
    /// The connection the queue belongs to (it goes with it).
    pub connection: lapin::Connection,
    /// The channel it is consumed on.
    pub channel: lapin::Channel,
    /// Its deliveries, not acknowledged.
    pub deliveries: lapin::Consumer,
}

/// The live listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The broker could not be reached.
    #[error(transparent)]
    Broker(#[from] crate::BrokerError),
    /// The exchanges or the queue could not be declared.
    #[error(transparent)]
    Topology(#[from] crate::TopologyError),
    /// The channel or the consumer could not be opened.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
}

/// Connect as `connection_name`, declare the exchanges (they may be gone
/// after a broker reset) and a live queue `queue` of this connection bound
/// with `keys` ([`Topology::declare_live_queue`]), and consume it without
/// acknowledgements: telemetry lost with a connection is superseded by the
/// next, and acking each would only cost a round trip. Declare it again
/// after every reconnect: the queue went with the old connection.
pub async fn listen_live(
    broker_url: &str,
    connection_name: &str,
    topology: &Topology,
    queue: &str,
    keys: &[String],
    message_ttl_ms: u64,
) -> Result<LiveListener, ListenError> {
    use lapin::options::BasicConsumeOptions;
    use lapin::types::FieldTable;
    let connection = crate::connect(broker_url, connection_name).await?;
    let channel = connection.create_channel().await?;
    topology.declare_exchanges(&channel).await?;
    topology
        .declare_live_queue(&channel, queue, keys, message_ttl_ms)
        .await?;
    let deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(LiveListener {
        connection,
        channel,
        deliveries,
    })
}

impl LiveListener {
    /// Close the channel and the connection, waiting at most two seconds: a
    /// broker that stopped answering must not hold up a reconnect or a
    /// shutdown.
    pub async fn close(self, reason: &str) {
        let close = async {
            let _ = self.channel.close(200, reason.into()).await;
            let _ = self.connection.close(200, reason.into()).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
    }
}

/// The routing key of `message` from `who` (a node id or a replica id).
#[must_use]
pub fn live_routing_key(message: &LiveMessage, who: &str) -> String {
    format!("{}.{who}", message.routing_key())
}

/// `message` ready to publish on the live exchange, from `source`
/// (`/stratavore/<service>[/<node>]`), about `who`.
pub fn live_outgoing(
    topology: &Topology,
    message: &LiveMessage,
    source: &str,
    who: &str,
    time: DateTime<Utc>,
) -> Result<OutgoingMessage, LiveError> {
    let envelope = Envelope {
        id: Uuid::now_v7(),
        source: source.to_owned(),
        type_name: message.type_name().to_owned(),
        subject: who.to_owned(),
        time,
        data: message.to_data(),
        stream: format!("live-{who}"),
        sequence: 0,
        correlation_id: None,
        causation_id: None,
        traceparent: None,
        tracestate: None,
        idempotency_key: None,
    };
    Ok(OutgoingMessage {
        exchange: topology.live_exchange(),
        routing_key: live_routing_key(message, who),
        message: encode_event(envelope.to_cloudevent()?)?,
        persistent: false,
    })
}

/// Read a delivery from the live exchange.
pub fn decode_live(properties: &BasicProperties, body: &[u8]) -> Result<LiveMessage, LiveError> {
    let event = decode_event(properties, body)?;
    let envelope = Envelope::from_cloudevent(&event)?;
    LiveMessage::from_data(&envelope.type_name, envelope.data)
        .map_err(|_| LiveError::NotLive(envelope.type_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_events::process::{NodeHeartbeat, OrchestratorTick};

    #[test]
    fn a_heartbeat_goes_out_under_its_node_and_reads_back_the_same() {
        let topology = Topology::new("t", 10);
        let beat = LiveMessage::Heartbeat(NodeHeartbeat {
            node: "n1".into(),
            incarnation: Uuid::from_u128(9),
            seq: 4,
            interval_ms: 2000,
            capacity: 3,
            draining: false,
            runners: Vec::new(),
        });
        let out = live_outgoing(
            &topology,
            &beat,
            "/stratavore/runner-supervisor/n1",
            "n1",
            Utc::now(),
        )
        .unwrap();
        assert_eq!(out.routing_key, "node.heartbeat.n1");
        assert_eq!(out.exchange, topology.live_exchange());
        assert!(!out.persistent);
        let back = decode_live(&out.message.properties, &out.message.body).unwrap();
        assert_eq!(back, beat);
        let tick = LiveMessage::Tick(OrchestratorTick {
            replica: Uuid::from_u128(1),
            seq: 0,
        });
        assert_eq!(live_routing_key(&tick, "r1"), "orchestrator.tick.r1");
    }
}
