//! What a log row becomes on the wire: a CloudEvent in AMQP binary mode, on
//! the events or commands exchange, with the routing key stored in the row.

use stratavore_bus::{OutgoingMessage, Topology, encode_event};
use stratavore_events::MessageKind;
use stratavore_store::LogRow;

/// A row that cannot be turned into a message (it would be a bug in the
/// writer, since rows are validated before they are appended).
#[derive(Debug, thiserror::Error)]
#[error("log row at position {position} cannot be published: {reason}")]
pub struct WireError {
    /// The row.
    pub position: i64,
    /// Why.
    pub reason: String,
}

/// The message to publish for one row.
pub fn outgoing_for(topology: &Topology, row: &LogRow) -> Result<OutgoingMessage, WireError> {
    let fail = |reason: String| WireError {
        position: row.position,
        reason,
    };
    let event = row
        .envelope
        .to_cloudevent()
        .map_err(|e| fail(e.to_string()))?;
    let message = encode_event(event).map_err(|e| fail(e.to_string()))?;
    let exchange = match row.kind {
        MessageKind::Event => topology.events_exchange(),
        MessageKind::Command => topology.commands_exchange(),
    };
    Ok(OutgoingMessage {
        exchange,
        routing_key: row.routing_key.clone(),
        message,
        persistent: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use stratavore_events::Envelope;
    use uuid::Uuid;

    fn row(kind: MessageKind, key: &str) -> LogRow {
        LogRow {
            position: 9,
            kind,
            routing_key: key.into(),
            recorded_at: Utc::now(),
            envelope: Envelope {
                id: Uuid::now_v7(),
                source: "/stratavore/api-gateway".into(),
                type_name: "io.stratavore.command.project.create.v1".into(),
                subject: "web".into(),
                time: Utc::now(),
                data: serde_json::json!({"name": "web", "path": "/p"}),
                stream: "command-1".into(),
                sequence: 1,
                correlation_id: None,
                causation_id: None,
                traceparent: None,
                tracestate: None,
                idempotency_key: None,
            },
        }
    }

    #[test]
    fn commands_go_to_the_commands_exchange_with_the_stored_key() {
        let t = Topology::new("p", 100);
        let out = outgoing_for(
            &t,
            &row(MessageKind::Command, "session-orchestrator.project.create"),
        )
        .unwrap();
        assert_eq!(out.exchange, "p.commands");
        assert_eq!(out.routing_key, "session-orchestrator.project.create");
        assert!(out.persistent);
        let out = outgoing_for(&t, &row(MessageKind::Event, "project.created")).unwrap();
        assert_eq!(out.exchange, "p.events");
    }
}
