//! The AsyncAPI 3.0 document for outside subscribers, generated from the
//! message catalogue and the topology and checked in as
//! `schemas/asyncapi.json` (a test fails when it drifts; `make schemas`
//! rewrites it).
//!
//! One channel per message type (its address is the routing key, on the
//! events or commands exchange; for telemetry, the routing key with the
//! node or replica appended, on the live exchange), one operation per type
//! (subscribers `receive` events and telemetry, clients and services `send`
//! commands), and one message per type whose payload is the very schema
//! document written to `schemas/events/`, so the two generated artefacts
//! cannot disagree.

use crate::Topology;
use crate::amqp_binding::HEADER_PREFIX;
use serde_json::{Map, Value, json};
use stratavore_events::envelope::{JSON, SEQUENCE_WIDTH};
use stratavore_events::process::LiveMessage;
use stratavore_events::{Catalogue, Message, MessageKind, TypeInfo, schema::schema_document};

/// The broker prefix the checked-in document is written for: the default of
/// `broker.prefix`.
pub const DEFAULT_PREFIX: &str = "stratavore";

/// The AsyncAPI version the document follows.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The version of the AsyncAPI AMQP 0-9-1 bindings used.
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// The id of the one server entry.
const SERVER_ID: &str = "rabbitmq";

/// Where the document is checked in, relative to the workspace root.
pub const FILE_PATH: &str = "schemas/asyncapi.json";

/// The channel parameter a live message's routing key ends with: the node
/// (a heartbeat), the orchestrator replica (a tick) or the runner (an
/// output line) it is about.
pub const LIVE_PARAMETER: &str = "who";

/// Whether a type is telemetry, published on the live exchange rather than
/// through a log and the relay.
pub fn is_live(info: &TypeInfo) -> bool {
    LiveMessage::types()
        .iter()
        .any(|t| t.type_name == info.type_name)
}

/// Where a type is published: its exchange and its channel address (the
/// routing key; for telemetry, with `.{who}` appended).
pub fn channel_address(topology: &Topology, info: &TypeInfo) -> (String, String) {
    if is_live(info) {
        return (
            topology.live_exchange(),
            format!("{}.{{{LIVE_PARAMETER}}}", info.routing_key),
        );
    }
    let exchange = match info.kind {
        MessageKind::Event => topology.events_exchange(),
        MessageKind::Command => topology.commands_exchange(),
    };
    (exchange, info.routing_key.to_owned())
}

/// The operation id of a type: what the outside does with it, then the type.
pub fn operation_id(info: &TypeInfo) -> String {
    format!("{}.{}", operation_action(info.kind), info.type_name)
}

/// Subscribers receive events; clients and services send commands.
fn operation_action(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Event => "receive",
        MessageKind::Command => "send",
    }
}

/// The whole AsyncAPI document for the topology under `prefix`.
pub fn asyncapi_document(prefix: &str) -> Value {
    // The delivery limit shapes only queue arguments, which this document
    // does not show.
    let topology = Topology::new(prefix, 0);
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for info in Catalogue::all() {
        let message_ref = json!({ "$ref": format!("#/components/messages/{}", info.type_name) });
        channels.insert(info.type_name.into(), channel(&topology, info, message_ref));
        operations.insert(operation_id(info), operation(info));
        messages.insert(info.type_name.into(), message(info));
    }
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:stratavore:asyncapi",
        "info": {
            "title": "Stratavore events and commands",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description(&topology),
        },
        "defaultContentType": JSON,
        "servers": {
            SERVER_ID: {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ as `stratavore up` runs it on one machine; \
                    on Kubernetes, the broker service of the installation.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "x-stratavore-queues": service_queues(&topology),
        },
    })
}

/// The checked-in text: pretty JSON with a trailing newline.
pub fn asyncapi_text(prefix: &str) -> String {
    // Serialising a `Value` (string keys only) cannot fail.
    serde_json::to_string_pretty(&asyncapi_document(prefix)).unwrap_or_default() + "\n"
}

fn description(topology: &Topology) -> String {
    let prefix = topology.prefix();
    let h = HEADER_PREFIX;
    format!(
        "The messages Stratavore publishes on RabbitMQ (AMQP 0-9-1), for \
         outside subscribers.\n\n\
         Names: every exchange and queue name starts with the configurable \
         broker prefix (`broker.prefix`); this document is written for the \
         default prefix `{prefix}`, so with another prefix replace the leading \
         `{prefix}.` of every name. Events go to the topic exchange `{events}` \
         with routing key `<aggregate>.<event>`; commands to the topic exchange \
         `{commands}` with routing key `<service>.<command>[.<node>]`. \
         Telemetry (node heartbeats, orchestrator ticks, runners' output \
         lines) goes to the topic exchange `{live}` with routing key \
         `<aggregate>.<event>.<who>` (the node, replica or runner it is \
         about); it is published straight from the \
         process, not persistent, never logged, and nobody keeps what no \
         queue was bound for: to watch it, bind a non-durable, exclusive \
         queue of your own (for example to `node.heartbeat.*`).\n\n\
         Subscribing: bind your own queue to `{events}` with a routing key \
         pattern `<aggregate>.<event>` (for example `project.*`, or `#` for \
         every event). Delivery is at least once: the same message can arrive \
         more than once, so deduplicate by its CloudEvents `id`; to apply a \
         stream in order, track the last `sequence` seen per (`source`, \
         `stream`).\n\n\
         Envelope: CloudEvents 1.0 in the AMQP binding's binary content mode. \
         The body is the event's `data` (`{JSON}`, described by each message's \
         payload schema); `datacontenttype` is the AMQP `content_type` \
         property; `id` is also the `message_id` property and `time` also the \
         `timestamp` property (seconds); every other attribute and extension \
         is a header `{h}<name>` (header values are strings). Extensions: \
         `sequence` (the stream version after this message, zero-padded to \
         {SEQUENCE_WIDTH} digits so it sorts as text), `stream` (the stream \
         the message belongs to), `correlationid`, `causationid`, and the \
         distributed-tracing pair `traceparent` / `tracestate`. `dataschema` \
         is `urn:stratavore:schema:<type>`, the `$id` of the payload schema \
         (also checked in under `schemas/events/<type>.json`).",
        events = topology.events_exchange(),
        commands = topology.commands_exchange(),
        live = topology.live_exchange(),
    )
}

fn channel(topology: &Topology, info: &TypeInfo, message_ref: Value) -> Value {
    let (exchange, address) = channel_address(topology, info);
    let what = match info.kind {
        MessageKind::Event if is_live(info) => {
            "Bind a queue of your own to the live exchange with this address, \
             `{who}` replaced by an id or by `*`, to receive this telemetry while \
             the queue exists; it is delivered at most once."
        }
        MessageKind::Event => {
            "Bind a queue to the events exchange with this routing key, or a \
             pattern that matches it, to receive this event."
        }
        MessageKind::Command => {
            "Publish this command to the commands exchange with this routing \
             key; the owning service's inbox queue is bound to it."
        }
    };
    let mut channel = json!({
        "address": address,
        "title": info.type_name,
        "description": what,
        "messages": { info.type_name: message_ref },
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": exchange,
                    "type": "topic",
                    "durable": true,
                    "autoDelete": false,
                    "vhost": "/",
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    });
    if is_live(info) {
        channel["parameters"] = json!({
            LIVE_PARAMETER: {
                "description": "The node (a heartbeat), the orchestrator replica (a tick) \
                    or the runner (an output line) the message is about; also its \
                    CloudEvents `subject`.",
            }
        });
    }
    channel
}

fn operation(info: &TypeInfo) -> Value {
    let summary = match info.kind {
        MessageKind::Event => format!("Subscribers receive {}.", info.type_name),
        MessageKind::Command => format!("Clients and services send {}.", info.type_name),
    };
    // Every message from a log comes through the relay, which publishes it
    // persistent; telemetry is published directly, transient.
    let delivery_mode = if is_live(info) { 1 } else { 2 };
    json!({
        "action": operation_action(info.kind),
        "summary": summary,
        "channel": { "$ref": format!("#/channels/{}", info.type_name) },
        "messages": [
            { "$ref": format!("#/channels/{0}/messages/{0}", info.type_name) }
        ],
        "bindings": {
            "amqp": {
                "deliveryMode": delivery_mode,
                "timestamp": true,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    })
}

fn message(info: &TypeInfo) -> Value {
    let payload = schema_document(info);
    let mut message = Map::new();
    message.insert("name".into(), info.type_name.into());
    message.insert("title".into(), info.type_name.into());
    if let Some(summary) = payload.get("description").and_then(Value::as_str) {
        message.insert("summary".into(), summary.into());
    }
    message.insert("contentType".into(), JSON.into());
    message.insert("headers".into(), headers(info));
    message.insert("payload".into(), payload);
    message.insert(
        "correlationId".into(),
        json!({
            "description": "Ties together every message that follows from one command or request.",
            "location": format!("$message.header#/{HEADER_PREFIX}correlationid"),
        }),
    );
    message.insert(
        "bindings".into(),
        json!({
            "amqp": {
                "messageType": info.type_name,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        }),
    );
    Value::Object(message)
}

/// The `cloudEvents_` headers of one type, as a JSON Schema object.
fn headers(info: &TypeInfo) -> Value {
    let string = |description: &str| json!({ "type": "string", "description": description });
    let uuid = |description: &str| json!({ "type": "string", "format": "uuid", "description": description });
    let constant = |value: String, description: &str| json!({ "type": "string", "const": value, "description": description });
    // Telemetry belongs to no log stream: its order is its payload's own.
    let (sequence, stream) = if is_live(info) {
        (
            "Not a stream version (telemetry is never logged); order by the payload's own counters.",
            "`live-<who>`: telemetry belongs to no log stream.",
        )
    } else {
        (
            "The stream version after this message, zero-padded so it sorts as text.",
            "The stream this message belongs to (one writer each).",
        )
    };
    let fields: [(&str, bool, Value); 13] = [
        (
            "specversion",
            true,
            constant("1.0".into(), "CloudEvents version."),
        ),
        (
            "id",
            true,
            uuid("CloudEvents `id`, a UUIDv7; also the `message_id` property. Deduplicate by it."),
        ),
        (
            "source",
            true,
            string("The writer: `/stratavore/<service>[/<node>]`."),
        ),
        (
            "type",
            true,
            constant(info.type_name.into(), "CloudEvents `type`."),
        ),
        ("subject", true, string("The aggregate id.")),
        (
            "time",
            true,
            json!({
                "type": "string",
                "format": "date-time",
                "description": "When it happened (RFC 3339); also the `timestamp` property, in seconds.",
            }),
        ),
        (
            "dataschema",
            true,
            constant(info.schema_urn(), "The `$id` of the payload schema."),
        ),
        (
            "sequence",
            true,
            json!({
                "type": "string",
                "pattern": format!("^[0-9]{{{SEQUENCE_WIDTH}}}$"),
                "description": sequence,
            }),
        ),
        ("stream", true, string(stream)),
        (
            "correlationid",
            false,
            uuid("The id of the message that started this exchange."),
        ),
        (
            "causationid",
            false,
            uuid("The id of the message that directly caused this one."),
        ),
        (
            "traceparent",
            false,
            string("W3C Trace Context `traceparent`."),
        ),
        (
            "tracestate",
            false,
            string("W3C Trace Context `tracestate`."),
        ),
    ];
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, is_required, schema) in fields {
        let header = format!("{HEADER_PREFIX}{name}");
        if is_required {
            required.push(Value::from(header.clone()));
        }
        properties.insert(header, schema);
    }
    json!({
        "type": "object",
        "description": "CloudEvents attributes and extensions other than `datacontenttype`; \
            other headers (the broker's, a dead letter's reason) may be present.",
        "properties": properties,
        "required": required,
    })
}

fn service_queues(topology: &Topology) -> Value {
    let queues: Vec<Value> = topology
        .service_queues()
        .into_iter()
        .map(|spec| {
            let bindings: Vec<Value> = spec
                .bindings
                .iter()
                .map(|(exchange, key)| json!({ "exchange": exchange, "routingKey": key }))
                .collect();
            json!({
                "name": spec.name,
                "type": "quorum",
                "durable": true,
                "singleActiveConsumer": spec.single_active_consumer,
                "deadLetterQueue": spec
                    .dead_letters
                    .then(|| Topology::dead_letter_queue(&spec.name)),
                "bindings": bindings,
            })
        })
        .collect();
    json!({
        "description": "For information: the services' own inbox queues and what they bind. \
            Outside subscribers declare queues of their own instead of consuming these.",
        "queues": queues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_in_the_document_follows_the_prefix() {
        let doc = asyncapi_document("t-42");
        for (id, channel) in doc["channels"].as_object().into_iter().flatten() {
            let exchange = channel["bindings"]["amqp"]["exchange"]["name"]
                .as_str()
                .unwrap();
            assert!(exchange.starts_with("t-42."), "{id}: {exchange}");
        }
        for queue in doc["components"]["x-stratavore-queues"]["queues"]
            .as_array()
            .unwrap()
        {
            assert!(queue["name"].as_str().unwrap().starts_with("t-42."));
        }
        let text = asyncapi_text("t-42");
        let defaults = Topology::new(DEFAULT_PREFIX, 0);
        for name in defaults
            .all_exchange_names()
            .into_iter()
            .chain(defaults.all_queue_names())
        {
            assert!(!text.contains(&name), "{name} ignores the prefix");
        }
    }

    #[test]
    fn telemetry_is_documented_on_the_live_exchange_with_its_subject_in_the_address() {
        let doc = asyncapi_document("p");
        let live: Vec<&TypeInfo> = Catalogue::all().filter(|t| is_live(t)).collect();
        assert!(
            live.iter()
                .any(|t| t.type_name == "io.stratavore.node.heartbeat.v1"),
            "heartbeats are telemetry"
        );
        for info in Catalogue::all() {
            let channel = &doc["channels"][info.type_name];
            let exchange = &channel["bindings"]["amqp"]["exchange"]["name"];
            let operation = &doc["operations"][operation_id(info)];
            let mode = &operation["bindings"]["amqp"]["deliveryMode"];
            if is_live(info) {
                assert_eq!(exchange, "p.live", "{}", info.type_name);
                assert_eq!(
                    channel["address"],
                    format!("{}.{{who}}", info.routing_key),
                    "{}",
                    info.type_name
                );
                assert!(channel["parameters"][LIVE_PARAMETER].is_object());
                assert_eq!(operation["action"], "receive");
                assert_eq!(mode, 1, "telemetry is not persistent");
            } else {
                assert_ne!(exchange, "p.live", "{}", info.type_name);
                assert_eq!(channel["address"], info.routing_key);
                assert!(channel.get("parameters").is_none());
                assert_eq!(mode, 2);
            }
        }
        assert_eq!(
            doc["channels"]["io.stratavore.node.heartbeat.v1"]["address"],
            "node.heartbeat.{who}"
        );
        assert_eq!(
            doc["channels"]["io.stratavore.node.registered.v1"]["bindings"]["amqp"]["exchange"]["name"],
            "p.events"
        );
    }
}
