//! `make bench-smoke`'s verdict on what a run wrote: the JSON matches
//! `bench/results/schema.json`, every scenario the binary knows is in it and
//! was measured, and every figure is a finite number. Shape only, never
//! speed: a loaded machine passes.

use serde_json::Value;

/// The schema of a results file.
pub const SCHEMA: &str = include_str!("../results/schema.json");

/// Check `text` (a results file) and that each of `scenarios` was measured.
pub fn check(text: &str, scenarios: &[&str]) -> anyhow::Result<()> {
    let doc: Value = serde_json::from_str(text)?;
    let schema: Value = serde_json::from_str(SCHEMA)?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("the results schema is invalid: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "results do not match the schema: {}",
        errors.join("; ")
    );
    let listed = doc["scenarios"].as_array().cloned().unwrap_or_default();
    for id in scenarios {
        let s = listed
            .iter()
            .find(|s| s["id"] == *id)
            .ok_or_else(|| anyhow::anyhow!("scenario {id} is missing from the results"))?;
        anyhow::ensure!(
            s["status"] == "measured",
            "scenario {id} did not run: {}",
            s["reason"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results(status: &str, figures: Value) -> String {
        json!({
            "schema_version": 1,
            "started_at": "2026-05-01T10:00:00Z",
            "seconds": 3.5,
            "size": "smoke",
            "machine": {"cores": 2, "cpu": "x", "memory_mib": 1024, "kernel": "6.1"},
            "versions": {"postgres": "18.1", "pgvector": "0.8.1", "rabbitmq": "3.10.8",
                         "rustc": "rustc 1.95.0", "stratavore": "0.1.0", "build_profile": "debug"},
            "scenarios": [{
                "id": "event_pipeline", "title": "Event pipeline", "status": status,
                "reason": if status == "measured" { Value::Null } else { json!("broker away") },
                "started_at": "2026-05-01T10:00:01Z",
                "figures": figures, "parameters": {"events": 200}, "notes": [],
                "load_before": 1.0, "load_after": 1.2, "seconds": 2.0
            }]
        })
        .to_string()
    }

    fn figure() -> Value {
        json!([{"name": "throughput", "value": 900.0, "unit": "events/s",
                "baseline": {"name": "bare INSERT+COMMIT", "value": 9000.0}, "ratio": 0.1,
                "target": {"kind": "ratio_at_least", "value": 0.5}, "met": false}])
    }

    #[test]
    fn a_measured_scenario_with_figures_passes_whatever_its_speed() {
        check(&results("measured", figure()), &["event_pipeline"]).unwrap();
    }

    #[test]
    fn a_scenario_that_did_not_run_fails_the_check_with_its_reason() {
        let err = check(&results("failed", json!([])), &["event_pipeline"]).unwrap_err();
        assert!(err.to_string().contains("broker away"), "{err}");
    }

    #[test]
    fn a_missing_scenario_fails_the_check() {
        let err = check(
            &results("measured", figure()),
            &["event_pipeline", "footprint"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("footprint"), "{err}");
    }

    #[test]
    fn a_measured_scenario_without_figures_is_malformed() {
        assert!(check(&results("measured", json!([])), &["event_pipeline"]).is_err());
    }

    #[test]
    fn a_figure_that_is_not_a_number_is_malformed() {
        let bad = json!([{"name": "throughput", "value": null, "unit": "events/s",
                          "baseline": null, "ratio": null, "target": null, "met": null}]);
        assert!(check(&results("measured", bad), &["event_pipeline"]).is_err());
    }
}
