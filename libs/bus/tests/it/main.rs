//! The checked-in AsyncAPI document matches the catalogue and the topology,
//! is internally consistent, and agrees with the checked-in JSON Schemas.

use serde_json::Value;
use std::path::PathBuf;
use stratavore_bus::Topology;
use stratavore_bus::asyncapi::{self, DEFAULT_PREFIX, FILE_PATH};
use stratavore_events::{Catalogue, MessageKind, schema};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Set `STRATAVORE_UPDATE_SCHEMAS=1` (as `make schemas` does) to rewrite the
/// file instead of comparing.
#[test]
fn the_checked_in_asyncapi_document_matches_the_catalogue() {
    let path = workspace_root().join(FILE_PATH);
    let generated = asyncapi::asyncapi_text(DEFAULT_PREFIX);
    if std::env::var_os("STRATAVORE_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make schemas`", path.display()));
    assert!(
        current == generated,
        "{FILE_PATH} drifted from the catalogue and topology; run `make schemas`"
    );
}

#[test]
fn every_catalogue_type_has_a_channel_a_message_and_an_operation() {
    let doc = asyncapi::asyncapi_document(DEFAULT_PREFIX);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"]["rabbitmq"]["protocol"], "amqp");
    let topology = Topology::new(DEFAULT_PREFIX, 100);
    let channels = doc["channels"].as_object().unwrap();
    let operations = doc["operations"].as_object().unwrap();
    let messages = doc["components"]["messages"].as_object().unwrap();
    let count = Catalogue::all().count();
    assert_eq!(channels.len(), count, "one channel per type, no stale ones");
    assert_eq!(operations.len(), count, "one operation per type");
    assert_eq!(messages.len(), count, "one message per type");

    for info in Catalogue::all() {
        let name = info.type_name;
        let channel = &channels[name];
        // Events and commands on their exchanges under their routing keys;
        // telemetry on the live exchange, its node or replica appended.
        let (exchange, address) = asyncapi::channel_address(&topology, info);
        assert_eq!(channel["address"], address.as_str(), "{name}");
        let amqp = &channel["bindings"]["amqp"];
        assert_eq!(amqp["is"], "routingKey", "{name}");
        assert_eq!(amqp["exchange"]["name"], exchange.as_str(), "{name}");
        assert_eq!(amqp["exchange"]["type"], "topic", "{name}");
        assert_eq!(amqp["exchange"]["durable"], true, "{name}");

        let operation = &operations[&asyncapi::operation_id(info)];
        let action = match info.kind {
            MessageKind::Event => "receive",
            MessageKind::Command => "send",
        };
        assert_eq!(operation["action"], action, "{name}");
        assert_eq!(
            resolve(&doc, &operation["channel"]),
            Some(channel),
            "{name}: the operation names its channel"
        );
        let operation_messages = operation["messages"].as_array().unwrap();
        assert_eq!(operation_messages.len(), 1, "{name}");
        let message = &messages[name];
        assert_eq!(
            resolve(&doc, &operation_messages[0]).and_then(|m| resolve(&doc, m)),
            Some(message),
            "{name}: the operation's message is the channel's"
        );
        assert_eq!(message["name"], name);
        assert_eq!(message["contentType"], "application/json");
        assert_eq!(message["bindings"]["amqp"]["messageType"], name);
        assert_eq!(message["payload"]["$id"], info.schema_urn().as_str());
        let headers = &message["headers"];
        assert_eq!(headers["type"], "object");
        assert_eq!(
            headers["properties"]["cloudEvents_type"]["const"], name,
            "{name}"
        );
        let required: Vec<&str> = headers["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for header in [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "dataschema",
            "sequence",
            "stream",
        ] {
            let header = format!("cloudEvents_{header}");
            assert!(required.contains(&header.as_str()), "{name}: {header}");
        }
        for header in ["correlationid", "causationid", "traceparent", "tracestate"] {
            let header = format!("cloudEvents_{header}");
            assert!(
                headers["properties"].get(&header).is_some()
                    && !required.contains(&header.as_str()),
                "{name}: {header} is an optional header"
            );
        }
    }

    let key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    for (section, map) in [
        ("channels", channels),
        ("operations", operations),
        ("components.messages", messages),
    ] {
        for k in map.keys() {
            assert!(key(k), "{section}: {k} is not a valid AsyncAPI key");
        }
    }

    let mut refs = Vec::new();
    collect_refs(&doc, &doc, "#", &mut refs);
    assert!(!refs.is_empty());
    for (at, base, reference) in refs {
        assert!(
            resolve_pointer(base, &reference).is_some(),
            "{at}: $ref {reference} resolves to nothing"
        );
    }
}

#[test]
fn every_message_payload_is_its_checked_in_json_schema() {
    // The generated document, not the file: the drift test ties the two, and
    // this way `make schemas` does not depend on the order tests run in.
    let doc = asyncapi::asyncapi_document(DEFAULT_PREFIX);
    for info in Catalogue::all() {
        let path = workspace_root()
            .join("schemas/events")
            .join(schema::schema_file_name(info.type_name));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make schemas`", path.display()));
        let file: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["components"]["messages"][info.type_name]["payload"],
            file,
            "{} and {FILE_PATH} disagree; run `make schemas`",
            path.display()
        );
    }
}

/// Follow a `{"$ref": ...}` object against the document root.
fn resolve<'a>(doc: &'a Value, reference: &Value) -> Option<&'a Value> {
    resolve_pointer(doc, reference.get("$ref")?.as_str()?)
}

fn resolve_pointer<'a>(base: &'a Value, reference: &str) -> Option<&'a Value> {
    base.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` with where it sits and the value it is relative to: the
/// document, or, inside a payload schema (a resource with its own `$id`),
/// that schema, as JSON Schema resolves it.
fn collect_refs<'a>(
    value: &'a Value,
    base: &'a Value,
    at: &str,
    out: &mut Vec<(String, &'a Value, String)>,
) {
    match value {
        Value::Object(map) => {
            let base = if map.contains_key("$id") { value } else { base };
            for (k, v) in map {
                let here = format!("{at}/{k}");
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((here, base, r.clone())),
                    _ => collect_refs(v, base, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_refs(v, base, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}
