//! The envelope: one Stratavore message with its CloudEvents attributes, and
//! its conversion to and from a validated `cloudevents::Event`.
//!
//! Besides the CloudEvents core attributes a message carries the extensions
//! of DESIGN.md section 2: `sequence` (the stream version after this message,
//! zero-padded so it sorts as a string), `stream` (the stream it belongs to,
//! so a consumer can track versions per stream without knowing every
//! aggregate's naming rule), `correlationid`, `causationid`, and the
//! distributed-tracing pair `traceparent` / `tracestate`.

use crate::{TypeName, catalogue::schema_urn};
use chrono::{DateTime, Utc};
use cloudevents::{
    AttributesReader, Data, Event, EventBuilder, EventBuilderV10, event::ExtensionValue,
};
use uuid::Uuid;

/// The only content type Stratavore payloads use.
pub const JSON: &str = "application/json";
/// Width of the zero-padded `sequence` extension: every `u64` fits.
pub const SEQUENCE_WIDTH: usize = 20;

/// A message as it is stored in a log and travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// CloudEvents `id`: a UUIDv7, also the AMQP `message_id`.
    pub id: Uuid,
    /// `/stratavore/<service>[/<node>]`.
    pub source: String,
    /// CloudEvents `type`.
    pub type_name: String,
    /// The aggregate id.
    pub subject: String,
    /// When it happened, by the writer's injectable wall clock.
    pub time: DateTime<Utc>,
    /// The payload.
    pub data: serde_json::Value,
    /// The stream (one writer each) this message belongs to.
    pub stream: String,
    /// The stream version after this message (1 for a stream's first).
    pub sequence: u64,
    /// The conversation this message belongs to (the first command's id).
    pub correlation_id: Option<Uuid>,
    /// The message that caused this one.
    pub causation_id: Option<Uuid>,
    /// W3C trace context, carried so one trace spans the services.
    pub traceparent: Option<String>,
    /// W3C trace state, beside `traceparent`.
    pub tracestate: Option<String>,
    /// On a command a client sent: the client's `Idempotency-Key`, kept in
    /// the log so the gateway's read model of keys can be rebuilt from it.
    pub idempotency_key: Option<String>,
}

/// Why a CloudEvent is not a valid Stratavore message.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// A required attribute or extension is absent.
    #[error("the CloudEvent has no {0}")]
    Missing(&'static str),
    /// An attribute is present but malformed.
    #[error("the CloudEvent attribute {attribute} is invalid: {reason}")]
    Invalid {
        /// Which attribute.
        attribute: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The SDK refused to build the event.
    #[error("the CloudEvent cannot be built: {0}")]
    Build(#[from] cloudevents::event::EventBuilderError),
}

fn invalid(attribute: &'static str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Invalid {
        attribute,
        reason: reason.into(),
    }
}

/// Format a stream version as the `sequence` extension.
pub fn format_sequence(version: u64) -> String {
    format!("{version:0width$}", width = SEQUENCE_WIDTH)
}

impl Envelope {
    /// Build the CloudEvent (binary-mode ready) for this message.
    pub fn to_cloudevent(&self) -> Result<Event, EnvelopeError> {
        let mut builder = EventBuilderV10::new()
            .id(self.id.to_string())
            .source(self.source.clone())
            .ty(self.type_name.clone())
            .subject(self.subject.clone())
            .time(self.time)
            .data_with_schema(
                JSON,
                schema_urn(&self.type_name).as_str(),
                self.data.clone(),
            )
            .extension("sequence", format_sequence(self.sequence))
            .extension("stream", self.stream.clone());
        let optional = [
            ("correlationid", self.correlation_id.map(|u| u.to_string())),
            ("causationid", self.causation_id.map(|u| u.to_string())),
            ("traceparent", self.traceparent.clone()),
            ("tracestate", self.tracestate.clone()),
            ("idempotencykey", self.idempotency_key.clone()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                builder = builder.extension(name, value);
            }
        }
        Ok(builder.build()?)
    }

    /// Validate a received CloudEvent and take it apart.
    pub fn from_cloudevent(event: &Event) -> Result<Self, EnvelopeError> {
        let id = Uuid::parse_str(event.id()).map_err(|e| invalid("id", e.to_string()))?;
        let type_name = event.ty().to_owned();
        TypeName::parse(&type_name).map_err(|e| invalid("type", e.to_string()))?;
        match event.datacontenttype() {
            Some(ct) if ct == JSON || ct.starts_with("application/json;") => {}
            Some(other) => {
                return Err(invalid(
                    "datacontenttype",
                    format!("{other:?} is not {JSON}"),
                ));
            }
            None => return Err(EnvelopeError::Missing("datacontenttype")),
        }
        let data = match event.data() {
            Some(Data::Json(v)) => v.clone(),
            Some(Data::Binary(bytes)) => {
                serde_json::from_slice(bytes).map_err(|e| invalid("data", e.to_string()))?
            }
            Some(Data::String(s)) => {
                serde_json::from_str(s).map_err(|e| invalid("data", e.to_string()))?
            }
            None => return Err(EnvelopeError::Missing("data")),
        };
        let subject = event
            .subject()
            .ok_or(EnvelopeError::Missing("subject"))?
            .to_owned();
        let time = *event.time().ok_or(EnvelopeError::Missing("time"))?;
        let sequence = string_extension(event, "sequence")?
            .ok_or(EnvelopeError::Missing("sequence extension"))?;
        let sequence = sequence
            .parse::<u64>()
            .map_err(|e| invalid("sequence", e.to_string()))?;
        let stream =
            string_extension(event, "stream")?.ok_or(EnvelopeError::Missing("stream extension"))?;
        let uuid_extension = |name: &'static str| -> Result<Option<Uuid>, EnvelopeError> {
            string_extension(event, name)?
                .map(|s| Uuid::parse_str(&s).map_err(|e| invalid(name, e.to_string())))
                .transpose()
        };
        Ok(Self {
            id,
            source: event.source().to_string(),
            type_name,
            subject,
            time,
            data,
            stream,
            sequence,
            correlation_id: uuid_extension("correlationid")?,
            causation_id: uuid_extension("causationid")?,
            traceparent: string_extension(event, "traceparent")?,
            tracestate: string_extension(event, "tracestate")?,
            idempotency_key: string_extension(event, "idempotencykey")?,
        })
    }

    /// The extensions other than `sequence` and `stream`, as stored in the
    /// log's `extensions` column.
    pub fn extensions_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(v) = self.correlation_id {
            map.insert("correlationid".into(), v.to_string().into());
        }
        if let Some(v) = self.causation_id {
            map.insert("causationid".into(), v.to_string().into());
        }
        if let Some(v) = &self.traceparent {
            map.insert("traceparent".into(), v.clone().into());
        }
        if let Some(v) = &self.tracestate {
            map.insert("tracestate".into(), v.clone().into());
        }
        if let Some(v) = &self.idempotency_key {
            map.insert("idempotencykey".into(), v.clone().into());
        }
        serde_json::Value::Object(map)
    }

    /// Apply the log's `extensions` column to this envelope.
    pub fn with_extensions_json(mut self, ext: &serde_json::Value) -> Result<Self, EnvelopeError> {
        let get = |name: &str| ext.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let uuid = |name: &'static str| -> Result<Option<Uuid>, EnvelopeError> {
            get(name)
                .map(|s| Uuid::parse_str(&s).map_err(|e| invalid(name, e.to_string())))
                .transpose()
        };
        self.correlation_id = uuid("correlationid")?;
        self.causation_id = uuid("causationid")?;
        self.traceparent = get("traceparent");
        self.tracestate = get("tracestate");
        self.idempotency_key = get("idempotencykey");
        Ok(self)
    }
}

/// Read an extension that must be a string when present (every extension of
/// ours is; the AMQP binding delivers them as strings).
fn string_extension(event: &Event, name: &'static str) -> Result<Option<String>, EnvelopeError> {
    match event.extension(name) {
        None => Ok(None),
        Some(ExtensionValue::String(s)) => Ok(Some(s.clone())),
        Some(ExtensionValue::Integer(i)) => Ok(Some(i.to_string())),
        Some(ExtensionValue::Boolean(_)) => {
            Err(invalid(name, "a boolean where a string was expected"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "/stratavore/session-orchestrator".into(),
            type_name: "io.stratavore.project.created.v1".into(),
            subject: "web".into(),
            time: DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123Z")
                .unwrap()
                .into(),
            data: serde_json::json!({"name": "web"}),
            stream: "project-web".into(),
            sequence: 7,
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn an_envelope_survives_a_trip_through_a_cloudevent() {
        let env = sample();
        let event = env.to_cloudevent().unwrap();
        assert_eq!(
            event.extension("sequence"),
            Some(&ExtensionValue::String("00000000000000000007".into()))
        );
        assert_eq!(
            event.dataschema().map(|u| u.as_str()),
            Some("urn:stratavore:schema:io.stratavore.project.created.v1")
        );
        assert_eq!(Envelope::from_cloudevent(&event).unwrap(), env);
    }

    #[test]
    fn sequences_sort_as_strings_in_numeric_order() {
        let mut v: Vec<String> = [10u64, 9, 100, 1, u64::MAX]
            .iter()
            .map(|v| format_sequence(*v))
            .collect();
        v.sort();
        assert_eq!(v.last().unwrap(), &u64::MAX.to_string());
        assert_eq!(v[0], format_sequence(1));
        assert_eq!(v[2], format_sequence(10));
    }

    #[test]
    fn a_cloudevent_without_our_extensions_or_with_foreign_types_is_refused() {
        let mut event = sample().to_cloudevent().unwrap();
        event.remove_extension("stream");
        assert!(matches!(
            Envelope::from_cloudevent(&event),
            Err(EnvelopeError::Missing(_))
        ));

        let mut env = sample();
        env.type_name = "com.example.thing.v1".into();
        let event = env.to_cloudevent().unwrap();
        assert!(matches!(
            Envelope::from_cloudevent(&event),
            Err(EnvelopeError::Invalid {
                attribute: "type",
                ..
            })
        ));
    }

    #[test]
    fn extensions_json_round_trips() {
        let env = sample();
        let ext = env.extensions_json();
        let mut bare = env.clone();
        bare.correlation_id = None;
        bare.traceparent = None;
        assert_eq!(bare.with_extensions_json(&ext).unwrap(), env);
    }
}
