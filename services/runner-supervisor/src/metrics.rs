//! The node's metrics: runners by state, and how long spawns take.

use std::time::Duration;

/// Gauge: runners on this node by `state` (`claimed`, `starting`, `running`).
pub const RUNNERS: &str = "stratavore_supervisor_runners";
/// Histogram: seconds from an accepted `start` to the agent's pid.
pub const SPAWN_SECONDS: &str = "stratavore_supervisor_spawn_seconds";

/// A spawn took `took`.
pub fn spawned(took: Duration) {
    metrics::histogram!(SPAWN_SECONDS).record(took.as_secs_f64());
}

/// Agents that made no progress for their profile's stall timeout, by policy.
pub const STALLS_TOTAL: &str = "stratavore_supervisor_stalls_total";

/// An agent stalled and `policy` applies.
pub fn stalled(policy: stratavore_profiles::StallPolicy) {
    metrics::counter!(STALLS_TOTAL, "policy" => policy.name()).increment(1);
}

/// The runners of this node by state.
pub fn runners(claimed: u64, starting: u64, running: u64) {
    for (state, count) in [
        ("claimed", claimed),
        ("starting", starting),
        ("running", running),
    ] {
        metrics::gauge!(RUNNERS, "state" => state).set(count as f64);
    }
}
