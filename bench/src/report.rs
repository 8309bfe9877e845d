//! What a run writes: every scenario's figures, each beside the baseline
//! measured in the same run, the ratio, the target and whether it was met,
//! and the parameters the figures depend on. Serialised as
//! `bench/results/latest.json`, checked against `bench/results/schema.json`.

use crate::machine::{Machine, Versions};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of this file's shape; the schema pins it.
pub const SCHEMA_VERSION: u32 = 1;

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Every scenario at the sizes the issue names.
    Full,
    /// Every scenario tiny: proves it runs, measures nothing worth quoting.
    Smoke,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Full or smoke.
    pub size: Size,
    /// The machine the figures are of.
    pub machine: Machine,
    /// What ran.
    pub versions: Versions,
    /// One per scenario, in priority order, measured or not.
    pub scenarios: Vec<ScenarioResult>,
}

/// Whether a scenario produced figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It ran; its figures are below.
    Measured,
    /// It could not run (the reason says why): `make bench` exits non-zero.
    Failed,
    /// It was not selected in this run.
    Skipped,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Stable key (`event_pipeline`).
    pub id: String,
    /// What it measures, for the table.
    pub title: String,
    /// Measured, failed or skipped.
    pub status: Status,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// When it started (RFC 3339): a scenario measured again alone
    /// (`--only`) keeps the others' results, each with its own time
    /// (results written before this field existed take their run's time).
    #[serde(default)]
    pub started_at: String,
    /// Its figures.
    pub figures: Vec<Figure>,
    /// Batch size, message size, concurrency, counts: whatever the figures
    /// depend on, the same for the figure and its baseline.
    pub parameters: Map<String, Value>,
    /// What bounds a figure, a query plan, a stage breakdown.
    pub notes: Vec<String>,
    /// The machine's 1-minute load average before and after, so a figure
    /// taken beside other work says so.
    pub load_before: f64,
    /// See `load_before`.
    pub load_after: f64,
    /// Wall time of the scenario.
    pub seconds: f64,
}

/// One measured number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// Stable key (`throughput`).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit (`events/s`, `ms`, `MiB`).
    pub unit: String,
    /// The baseline it is compared with, measured in the same run.
    pub baseline: Option<Baseline>,
    /// `value / baseline.value`.
    pub ratio: Option<f64>,
    /// What it should reach.
    pub target: Option<Target>,
    /// Whether it did (None without a target).
    pub met: Option<bool>,
}

/// A baseline figure: the machine's own limit for the same work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// What it is (`bare lapin publisher + consumer`).
    pub name: String,
    /// Its value, in the figure's unit.
    pub value: f64,
}

/// A target, on the value itself or on its ratio to the baseline.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// value <= this.
    AtMost(f64),
    /// value >= this.
    AtLeast(f64),
    /// value / baseline >= this.
    RatioAtLeast(f64),
}

impl Target {
    /// Whether `value` (with `ratio` to its baseline) meets it; None when
    /// the ratio it needs is unknown.
    pub fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::AtMost(t) => Some(value <= t),
            Self::AtLeast(t) => Some(value >= t),
            Self::RatioAtLeast(t) => ratio.map(|r| r >= t),
        }
    }

    /// As the table prints it.
    pub fn describe(self, unit: &str) -> String {
        match self {
            Self::AtMost(t) => format!("< {} {unit}", trim(t)),
            Self::AtLeast(t) => format!("≥ {} {unit}", trim(t)),
            Self::RatioAtLeast(t) => format!("≥ {}% of baseline", trim(t * 100.0)),
        }
    }
}

/// Now, as the results write times.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A number without needless decimals.
pub fn trim(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Figure {
    /// A figure with no baseline and no target.
    pub fn plain(name: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    /// Compare with a baseline of the same unit.
    pub fn against(mut self, baseline: &str, value: f64) -> Self {
        self.ratio = crate::stats::ratio(self.value, value);
        self.baseline = Some(Baseline {
            name: baseline.to_owned(),
            value,
        });
        self.refresh();
        self
    }

    /// The p50 and the p99 of `summary`, in ms, named by `name` from "p50"
    /// and "p99" (each figure of latency a scenario reports is such a
    /// pair).
    pub fn percentiles(
        summary: &crate::stats::LatencySummary,
        name: impl Fn(&str) -> String,
    ) -> [Self; 2] {
        [
            Self::plain(&name("p50"), summary.p50_ms, "ms"),
            Self::plain(&name("p99"), summary.p99_ms, "ms"),
        ]
    }

    /// Set the target and judge it.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self.refresh();
        self
    }

    fn refresh(&mut self) {
        self.met = self.target.and_then(|t| t.met(self.value, self.ratio));
    }
}

impl ScenarioResult {
    /// A result with no figures yet.
    pub fn new(id: &str, title: &str) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            status: Status::Measured,
            reason: None,
            started_at: String::new(),
            figures: Vec::new(),
            parameters: Map::new(),
            notes: Vec::new(),
            load_before: 0.0,
            load_after: 0.0,
            seconds: 0.0,
        }
    }

    /// Record a parameter.
    pub fn param(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.parameters.insert(key.to_owned(), value.into());
        self
    }

    /// Add a figure.
    pub fn push(&mut self, figure: Figure) -> &mut Self {
        self.figures.push(figure);
        self
    }

    /// Add a note.
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_target_is_judged_against_the_baseline() {
        let f = Figure::plain("throughput", 600.0, "events/s")
            .against("database", 1000.0)
            .target(Target::RatioAtLeast(0.5));
        assert_eq!(f.ratio, Some(0.6));
        assert_eq!(f.met, Some(true));
        let f = Figure::plain("throughput", 400.0, "events/s")
            .target(Target::RatioAtLeast(0.5))
            .against("database", 1000.0);
        assert_eq!(
            f.met,
            Some(false),
            "the order of the builders does not matter"
        );
    }

    #[test]
    fn a_ratio_target_without_a_baseline_is_not_judged() {
        let f = Figure::plain("throughput", 400.0, "events/s").target(Target::RatioAtLeast(0.5));
        assert_eq!(f.met, None);
    }

    #[test]
    fn value_targets_are_bounds() {
        assert_eq!(Target::AtMost(20.0).met(19.0, None), Some(true));
        assert_eq!(Target::AtMost(20.0).met(21.0, None), Some(false));
        assert_eq!(Target::AtLeast(20_000.0).met(25_000.0, None), Some(true));
    }

    #[test]
    fn targets_and_numbers_read_naturally() {
        assert_eq!(Target::AtMost(20.0).describe("ms"), "< 20 ms");
        assert_eq!(Target::RatioAtLeast(0.6).describe(""), "≥ 60% of baseline");
        assert_eq!(trim(12345.678), "12346");
        assert_eq!(trim(12.345), "12.3");
        assert_eq!(trim(0.01234), "0.012");
    }
}
