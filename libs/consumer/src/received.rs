//! A delivery as the inbox records it. A message that is not a valid
//! Stratavore CloudEvent is still recorded (as a dead row with the reason),
//! so nothing delivered is ever dropped unseen.

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use stratavore_bus::decode_event;
use stratavore_events::Envelope;
use uuid::Uuid;

/// The stream name given to messages that could not be read at all.
pub const UNREADABLE_STREAM: &str = "unreadable";

/// One delivery, ready to insert into the inbox.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The message id (for an unreadable message without one, a UUIDv5 of
    /// its bytes, so a redelivery maps to the same row).
    pub message_id: Uuid,
    /// The service whose log it came from (from `source`).
    pub source_log: String,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub stream_version: i64,
    /// Its type.
    pub type_name: String,
    /// What is stored: the CloudEvent in structured JSON, or, for an
    /// unreadable message, its headers and body as text.
    pub stored: serde_json::Value,
    /// Why it cannot be applied, when it cannot even be read.
    pub unreadable: Option<String>,
    /// The message as read (none when it cannot be read): what a drain
    /// applies on receipt, without reading `stored` back.
    pub envelope: Option<Envelope>,
}

/// The service name of a `/stratavore/<service>[/<node>]` source.
pub fn source_log_of(source: &str) -> Option<&str> {
    source
        .strip_prefix("/stratavore/")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
}

/// Read a delivery.
pub fn read_delivery(properties: &BasicProperties, body: &[u8]) -> ReceivedMessage {
    let parsed = decode_event(properties, body)
        .map_err(|e| e.to_string())
        .and_then(|event| {
            Envelope::from_cloudevent(&event)
                .map(|env| (event, env))
                .map_err(|e| e.to_string())
        })
        .and_then(|(event, env)| match source_log_of(&env.source) {
            Some(source) => Ok((event, source.to_owned(), env)),
            None => Err(format!(
                "source {:?} is not /stratavore/<service>",
                env.source
            )),
        });
    match parsed {
        Ok((event, source_log, env)) => ReceivedMessage {
            message_id: env.id,
            source_log,
            stream: env.stream.clone(),
            stream_version: i64::try_from(env.sequence).unwrap_or(i64::MAX),
            type_name: env.type_name.clone(),
            // Stored re-encoded from the validated envelope, so the data is
            // JSON an operator can read, not the wire's base64 bytes.
            stored: env
                .to_cloudevent()
                .ok()
                .and_then(|canonical| serde_json::to_value(&canonical).ok())
                .unwrap_or_else(|| serde_json::to_value(&event).unwrap_or(serde_json::Value::Null)),
            unreadable: None,
            envelope: Some(env),
        },
        Err(reason) => unreadable(properties, body, reason),
    }
}

fn unreadable(properties: &BasicProperties, body: &[u8], reason: String) -> ReceivedMessage {
    let mut headers = serde_json::Map::new();
    if let Some(table) = properties.headers() {
        for (k, v) in table.inner() {
            headers.insert(k.as_str().to_owned(), header_as_json(v));
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let message_id = properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok())
        .unwrap_or_else(|| {
            Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                &[body, format!("{headers:?}").as_bytes()].concat(),
            )
        });
    let source_log = header("cloudEvents_source")
        .as_deref()
        .and_then(source_log_of)
        .unwrap_or("unknown")
        .to_owned();
    let type_name = header("cloudEvents_type").unwrap_or_else(|| "unknown".to_owned());
    let stored = serde_json::json!({
        "unreadable": true,
        "reason": reason,
        "content_type": properties.content_type().as_ref().map(|c| c.as_str().to_owned()),
        "message_id": properties.message_id().as_ref().map(|c| c.as_str().to_owned()),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
    });
    ReceivedMessage {
        message_id,
        source_log,
        stream: UNREADABLE_STREAM.to_owned(),
        stream_version: 0,
        type_name,
        stored,
        unreadable: Some(reason),
        envelope: None,
    }
}

fn header_as_json(value: &AMQPValue) -> serde_json::Value {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned().into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::Boolean(b) => (*b).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        other => format!("{other:?}").into(),
    }
}

/// The envelope of a stored inbox message (what `read_delivery` stored).
pub fn envelope_of_stored(stored: &serde_json::Value) -> Result<Envelope, String> {
    if stored.get("unreadable").is_some() {
        let reason = stored
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("unreadable");
        return Err(format!("the message could not be read: {reason}"));
    }
    let event: cloudevents::Event =
        serde_json::from_value(stored.clone()).map_err(|e| e.to_string())?;
    Envelope::from_cloudevent(&event).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_bus::encode_event;

    fn envelope() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "/stratavore/api-gateway".into(),
            type_name: "io.stratavore.command.project.create.v1".into(),
            subject: "web".into(),
            time: chrono::Utc::now(),
            data: serde_json::json!({"name": "web", "path": "/srv/web"}),
            stream: "command-1".into(),
            sequence: 1,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            idempotency_key: Some("k-1".into()),
        }
    }

    #[test]
    fn a_valid_delivery_is_stored_as_a_cloudevent_that_reads_back_the_same() {
        let env = envelope();
        let m = encode_event(env.to_cloudevent().unwrap()).unwrap();
        let r = read_delivery(&m.properties, &m.body);
        assert!(r.unreadable.is_none());
        assert_eq!(r.source_log, "api-gateway");
        assert_eq!((r.stream.as_str(), r.stream_version), ("command-1", 1));
        assert_eq!(
            r.stored["data"], env.data,
            "the stored data is readable JSON"
        );
        let back = envelope_of_stored(&r.stored).unwrap();
        assert_eq!(back.data, env.data);
        assert_eq!(back.time.timestamp_millis(), env.time.timestamp_millis());
        assert_eq!(back.idempotency_key.as_deref(), Some("k-1"));
    }

    #[test]
    fn garbage_is_recorded_with_its_reason_and_a_stable_id() {
        let props = BasicProperties::default();
        let a = read_delivery(&props, b"not an event");
        let b = read_delivery(&props, b"not an event");
        assert!(a.unreadable.is_some());
        assert_eq!(
            a.message_id, b.message_id,
            "a redelivery maps to the same row"
        );
        assert!(envelope_of_stored(&a.stored).is_err());
    }
}
