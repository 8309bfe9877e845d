//! The CloudEvents AMQP 0-9-1 binding in binary content mode, built on the
//! SDK's `BinarySerializer` / `BinaryDeserializer` traits so that a message
//! read from the wire is a validated `cloudevents::Event`.
//!
//! Mapping (after the CloudEvents AMQP binding): the body is the data;
//! `datacontenttype` is the `content_type` property; `id` is also the
//! `message_id` property and `time` also the `timestamp` property (seconds);
//! every attribute and extension other than `datacontenttype` is a header
//! `cloudEvents_<name>`. On read the older `cloudEvents:` prefix is accepted
//! as well.

use cloudevents::Event;
use cloudevents::event::SpecVersion;
use cloudevents::message::{
    BinaryDeserializer, BinarySerializer, Encoding, MessageAttributeValue, MessageDeserializer,
    StructuredDeserializer, StructuredSerializer,
};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Header prefix written by this binding.
pub const HEADER_PREFIX: &str = "cloudEvents_";
/// Older header prefix, accepted on read.
pub const LEGACY_HEADER_PREFIX: &str = "cloudEvents:";
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// An AMQP message ready to publish: properties and body.
#[derive(Debug, Clone, Default)]
pub struct AmqpMessage {
    /// Properties, headers included.
    pub properties: BasicProperties,
    /// The body (the event's data).
    pub body: Vec<u8>,
}

/// The binding could not encode or decode a message.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The SDK rejected the event or message.
    #[error("CloudEvents binding error: {0}")]
    CloudEvents(#[from] cloudevents::message::Error),
    /// The message is not a CloudEvent in either mode.
    #[error("the AMQP message is not a CloudEvent: no {HEADER_PREFIX}specversion header")]
    NotACloudEvent,
    /// A header value has a type we cannot read as text.
    #[error("header {0} has a value that is not text")]
    HeaderType(String),
}

/// Serialise an event into an AMQP message (binary content mode).
pub fn encode_event(event: Event) -> Result<AmqpMessage, BindingError> {
    Ok(BinaryDeserializer::deserialize_binary(
        event,
        AmqpSerializer::default(),
    )?)
}

/// Read an AMQP message as a CloudEvent (binary mode, or structured mode
/// when the content type says so).
pub fn decode_event(properties: &BasicProperties, body: &[u8]) -> Result<Event, BindingError> {
    let message = AmqpDeserializer::new(properties, body)?;
    Ok(MessageDeserializer::into_event(message)?)
}

#[derive(Default)]
struct AmqpSerializer {
    headers: FieldTable,
    properties: BasicProperties,
    body: Vec<u8>,
}

impl AmqpSerializer {
    fn header(&mut self, name: &str, value: String) {
        self.headers.insert(
            ShortString::from(format!("{HEADER_PREFIX}{name}")),
            AMQPValue::LongString(LongString::from(value)),
        );
    }

    fn finish(self) -> AmqpMessage {
        AmqpMessage {
            properties: self.properties.with_headers(self.headers),
            body: self.body,
        }
    }
}

impl BinarySerializer<AmqpMessage> for AmqpSerializer {
    fn set_spec_version(mut self, spec_version: SpecVersion) -> cloudevents::message::Result<Self> {
        self.header("specversion", spec_version.to_string());
        Ok(self)
    }

    fn set_attribute(
        mut self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        match (name, &value) {
            ("datacontenttype", _) => {
                self.properties = self.properties.with_content_type(value.to_string().into());
                return Ok(self);
            }
            ("id", _) => {
                self.properties = self.properties.with_message_id(value.to_string().into());
            }
            ("time", MessageAttributeValue::DateTime(t)) => {
                let seconds = u64::try_from(t.timestamp()).unwrap_or(0);
                self.properties = self.properties.with_timestamp(seconds);
            }
            _ => {}
        }
        self.header(name, value.to_string());
        Ok(self)
    }

    fn set_extension(
        mut self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        self.header(name, value.to_string());
        Ok(self)
    }

    fn end_with_data(mut self, bytes: Vec<u8>) -> cloudevents::message::Result<AmqpMessage> {
        self.body = bytes;
        Ok(self.finish())
    }

    fn end(self) -> cloudevents::message::Result<AmqpMessage> {
        Ok(self.finish())
    }
}

/// A received message, as the SDK's deserializer sees it.
struct AmqpDeserializer {
    /// Header name without prefix → text value, in header order.
    attributes: Vec<(String, String)>,
    content_type: Option<String>,
    message_id: Option<String>,
    body: Vec<u8>,
}

fn header_text(name: &str, value: &AMQPValue) -> Result<String, BindingError> {
    Ok(match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec())
            .map_err(|_| BindingError::HeaderType(name.into()))?,
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8(b.as_slice().to_vec())
            .map_err(|_| BindingError::HeaderType(name.into()))?,
        _ => return Err(BindingError::HeaderType(name.into())),
    })
}

impl AmqpDeserializer {
    fn new(properties: &BasicProperties, body: &[u8]) -> Result<Self, BindingError> {
        let mut attributes = Vec::new();
        if let Some(headers) = properties.headers() {
            for (key, value) in headers.inner() {
                let key = key.as_str();
                let name = key
                    .strip_prefix(HEADER_PREFIX)
                    .or_else(|| key.strip_prefix(LEGACY_HEADER_PREFIX));
                if let Some(name) = name {
                    attributes.push((name.to_owned(), header_text(key, value)?));
                }
            }
        }
        Ok(Self {
            attributes,
            content_type: properties
                .content_type()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            message_id: properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            body: body.to_vec(),
        })
    }
}

impl BinaryDeserializer for AmqpDeserializer {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut visitor: V,
    ) -> cloudevents::message::Result<R> {
        let spec = self
            .attributes
            .iter()
            .find(|(n, _)| n == "specversion")
            .map(|(_, v)| v.as_str())
            .ok_or(cloudevents::message::Error::WrongEncoding {})?;
        let spec_version = SpecVersion::try_from(spec)?;
        let names = spec_version.attribute_names();
        visitor = visitor.set_spec_version(spec_version)?;
        if let Some(ct) = self.content_type {
            visitor =
                visitor.set_attribute("datacontenttype", MessageAttributeValue::String(ct))?;
        }
        let has_id = self.attributes.iter().any(|(n, _)| n == "id");
        if let (false, Some(id)) = (has_id, self.message_id) {
            visitor = visitor.set_attribute("id", MessageAttributeValue::String(id))?;
        }
        for (name, value) in self.attributes {
            if name == "specversion" || name == "datacontenttype" {
                continue;
            }
            visitor = if names.contains(&name.as_str()) {
                visitor.set_attribute(&name, MessageAttributeValue::String(value))?
            } else {
                visitor.set_extension(&name, MessageAttributeValue::String(value))?
            };
        }
        if self.body.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.body)
        }
    }
}

impl StructuredDeserializer for AmqpDeserializer {
    fn deserialize_structured<R: Sized, V: StructuredSerializer<R>>(
        self,
        visitor: V,
    ) -> cloudevents::message::Result<R> {
        visitor.set_structured_event(self.body)
    }
}

impl MessageDeserializer for AmqpDeserializer {
    fn encoding(&self) -> Encoding {
        if self
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with(STRUCTURED_CONTENT_TYPE))
        {
            Encoding::STRUCTURED
        } else if self.attributes.iter().any(|(n, _)| n == "specversion") {
            Encoding::BINARY
        } else {
            Encoding::UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use stratavore_events::Envelope;
    use uuid::Uuid;

    fn envelope() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "/stratavore/session-orchestrator".into(),
            type_name: "io.stratavore.project.created.v1".into(),
            subject: "web".into(),
            time: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            data: serde_json::json!({"name": "web", "tags": ["a"]}),
            stream: "project-web".into(),
            sequence: 3,
            correlation_id: Some(Uuid::now_v7()),
            causation_id: Some(Uuid::now_v7()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            idempotency_key: None,
        }
    }

    fn header<'a>(m: &'a AmqpMessage, name: &str) -> Option<&'a AMQPValue> {
        m.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name))
    }

    #[test]
    fn binary_mode_puts_attributes_in_properties_and_prefixed_headers() {
        let env = envelope();
        let m = encode_event(env.to_cloudevent().unwrap()).unwrap();
        assert_eq!(
            m.properties.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(
            m.properties.message_id().as_ref().unwrap().as_str(),
            env.id.to_string()
        );
        assert_eq!(*m.properties.timestamp(), Some(env.time.timestamp() as u64));
        assert!(header(&m, "cloudEvents_specversion").is_some());
        assert!(header(&m, "cloudEvents_type").is_some());
        assert!(header(&m, "cloudEvents_datacontenttype").is_none());
        match header(&m, "cloudEvents_sequence") {
            Some(AMQPValue::LongString(s)) => assert_eq!(s.as_bytes(), b"00000000000000000003"),
            other => panic!("sequence header: {other:?}"),
        }
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, env.data);
    }

    #[test]
    fn a_decoded_message_is_the_same_validated_envelope() {
        let env = envelope();
        let m = encode_event(env.to_cloudevent().unwrap()).unwrap();
        let event = decode_event(&m.properties, &m.body).unwrap();
        assert_eq!(Envelope::from_cloudevent(&event).unwrap(), env);
    }

    #[test]
    fn the_legacy_colon_prefix_is_accepted_on_read() {
        let env = envelope();
        let m = encode_event(env.to_cloudevent().unwrap()).unwrap();
        let mut legacy = FieldTable::default();
        for (k, v) in m.properties.headers().as_ref().unwrap().inner() {
            let k = k.as_str().replacen(HEADER_PREFIX, LEGACY_HEADER_PREFIX, 1);
            legacy.insert(k.into(), v.clone());
        }
        let props = m.properties.clone().with_headers(legacy);
        let event = decode_event(&props, &m.body).unwrap();
        assert_eq!(Envelope::from_cloudevent(&event).unwrap(), env);
    }

    #[test]
    fn a_plain_amqp_message_is_not_a_cloudevent() {
        let props = BasicProperties::default().with_content_type("application/json".into());
        assert!(decode_event(&props, b"{}").is_err());
    }
}
