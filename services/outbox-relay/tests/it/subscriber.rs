//! An outside subscriber, using no Stratavore code to read: a plain queue
//! bound to `<prefix>.events` gets a relayed event with its CloudEvents
//! headers and a body valid against the type's schema in `schemas/`.

use crate::support::*;
use lapin::types::AMQPValue;
use std::time::Duration;
use stratavore_testkit::TestEnv;

fn header(delivery: &lapin::message::Delivery, name: &str) -> String {
    let headers = delivery
        .properties
        .headers()
        .as_ref()
        .expect("CloudEvents headers");
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test]
async fn an_outside_subscriber_receives_a_relayed_event_with_cloudevents_headers_and_a_valid_body()
{
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env
        .broker
        .subscribe_events("project.created")
        .await
        .unwrap();
    let relay = start_relay(relay_config(&env)).await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();
    let entry = project_created("outside", 1);
    append_committed(&pool, std::slice::from_ref(&entry))
        .await
        .unwrap();

    let d = subscriber
        .next(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a delivery");
    let props = &d.properties;
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        entry.envelope.id.to_string()
    );
    assert_eq!(*props.delivery_mode(), Some(2), "events are persistent");
    assert!(props.timestamp().is_some());
    assert_eq!(header(&d, "cloudEvents_specversion"), "1.0");
    assert_eq!(header(&d, "cloudEvents_id"), entry.envelope.id.to_string());
    assert_eq!(
        header(&d, "cloudEvents_type"),
        "io.stratavore.project.created.v1"
    );
    assert_eq!(header(&d, "cloudEvents_source"), "/stratavore/api-gateway");
    assert_eq!(header(&d, "cloudEvents_subject"), "outside");
    assert_eq!(header(&d, "cloudEvents_sequence"), "00000000000000000001");
    assert_eq!(header(&d, "cloudEvents_stream"), "outside");
    let schema_uri = header(&d, "cloudEvents_dataschema");
    assert_eq!(
        schema_uri,
        "urn:stratavore:schema:io.stratavore.project.created.v1"
    );
    chrono::DateTime::parse_from_rfc3339(&header(&d, "cloudEvents_time")).unwrap();

    let schema_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/events/io.stratavore.project.created.v1.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    assert_eq!(
        schema["$id"],
        schema_uri.as_str(),
        "dataschema names the checked-in schema"
    );
    let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(
        validator.is_valid(&body),
        "body {body} does not match its schema"
    );

    stop_relay(relay).await.unwrap();
    pool.close().await;
    env.cleanup().await.unwrap();
}
