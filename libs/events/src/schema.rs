//! JSON Schemas of every message type, generated from the Rust payload types
//! and checked into `schemas/` (a test fails when they drift).

use crate::{Catalogue, catalogue::schema_urn};
use std::path::Path;

/// The schema document for one type: the payload schema with its `$id` set
/// to the type's `dataschema` URN and a title naming the type.
pub fn schema_document(info: &crate::TypeInfo) -> serde_json::Value {
    let mut schema = serde_json::to_value((info.schema)()).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), schema_urn(info.type_name).into());
        obj.insert("title".into(), info.type_name.into());
        obj.insert("x-stratavore-routing-key".into(), info.routing_key.into());
        obj.insert("x-stratavore-kind".into(), info.kind.as_str().into());
    }
    schema
}

/// The file name of a type's schema under `schemas/`.
pub fn schema_file_name(type_name: &str) -> String {
    format!("{type_name}.json")
}

/// Every schema file that should exist, as (file name, pretty JSON text).
pub fn generate_all() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Catalogue::all()
        .map(|info| {
            let text =
                serde_json::to_string_pretty(&schema_document(info)).unwrap_or_default() + "\n";
            (schema_file_name(info.type_name), text)
        })
        .collect();
    files.sort();
    files
}

/// Write every schema into `dir` (used by `make schemas`).
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in generate_all() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
