//! The checked-in schemas under `schemas/` match the Rust types.

use std::path::PathBuf;
use stratavore_events::schema;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events")
}

/// Set `STRATAVORE_UPDATE_SCHEMAS=1` (as `make schemas` does) to rewrite the
/// files instead of comparing.
#[test]
fn checked_in_schemas_match_the_rust_types() {
    let dir = schemas_dir();
    if std::env::var_os("STRATAVORE_UPDATE_SCHEMAS").is_some() {
        // Remove stale files too, so a deleted type's schema goes away.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        schema::write_all(&dir).unwrap();
    }
    let generated = schema::generate_all();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make schemas`", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let expected: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        on_disk, expected,
        "schema files differ from the catalogue; run `make schemas`"
    );
    for (name, text) in generated {
        let current = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert_eq!(
            current, text,
            "{name} drifted from its Rust type; run `make schemas`"
        );
    }
}

#[test]
fn every_payload_example_validates_against_its_checked_in_schema() {
    use stratavore_events::{Message, project::*};
    let samples: Vec<(String, serde_json::Value)> = vec![
        {
            let m = ProjectEvent::Created(ProjectCreated {
                command_id: uuid::Uuid::now_v7(),
                name: "web".into(),
                path: "/srv/web".into(),
                description: Some("d".into()),
                tags: vec![],
                max_concurrent_runners: 5,
            });
            (m.type_name().to_owned(), m.to_data())
        },
        {
            let m = ProjectCommand::Create(CreateProject {
                name: "web".into(),
                path: "/srv/web".into(),
                description: None,
                tags: vec!["x".into()],
                max_concurrent_runners: None,
            });
            (m.type_name().to_owned(), m.to_data())
        },
    ];
    for (type_name, data) in samples {
        let text =
            std::fs::read_to_string(schemas_dir().join(schema::schema_file_name(&type_name)))
                .unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&data), "{type_name}: {data}");
        let mut bad = data.clone();
        bad.as_object_mut()
            .unwrap()
            .insert("unexpected".into(), 1.into());
        assert!(
            !validator.is_valid(&bad),
            "{type_name} accepts unknown fields"
        );
    }
}
