//! The node's metrics: runners by state, how long spawns take, stalls,
//! heartbeats, bounced offers and live output lines.

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

/// Heartbeats sent, by outcome (`confirmed`, `unconfirmed`, `timed_out`).
pub const HEARTBEATS_TOTAL: &str = "stratavore_supervisor_heartbeats_total";
/// Seconds since the publish of the last confirmed heartbeat.
pub const HEARTBEAT_CONFIRM_AGE_SECONDS: &str =
    "stratavore_supervisor_heartbeat_confirm_age_seconds";
/// Incarnations ended because no heartbeat was confirmed for half the TTL.
pub const FENCED_TOTAL: &str = "stratavore_supervisor_fenced_total";

/// A heartbeat ended with `outcome`.
pub fn heartbeat(outcome: &'static str) {
    metrics::counter!(HEARTBEATS_TOTAL, "outcome" => outcome).increment(1);
}

/// The last confirm was published `age` ago.
pub fn heartbeat_confirm_age(age: Duration) {
    metrics::gauge!(HEARTBEAT_CONFIRM_AGE_SECONDS).set(age.as_secs_f64());
}

/// The node ended its incarnation for want of confirms.
pub fn fenced() {
    metrics::counter!(FENCED_TOTAL).increment(1);
}

/// Offers sent back because the node was full or draining.
pub const OFFERS_BOUNCED_TOTAL: &str = "stratavore_supervisor_offers_bounced_total";

/// An offer went back to its queue.
pub fn offer_bounced() {
    metrics::counter!(OFFERS_BOUNCED_TOTAL).increment(1);
}

/// Output lines offered to the live exchange, by `outcome`: `published`,
/// `dropped_full` (the publisher's queue was full), `dropped_broker` (the
/// broker was away or refused), `dropped_closed` (the node is stopping).
/// A dropped line is still in the transcript.
pub const OUTPUT_LINES_TOTAL: &str = "stratavore_supervisor_output_lines_total";

/// An output line ended with `outcome`.
pub fn output_line(outcome: &'static str) {
    metrics::counter!(OUTPUT_LINES_TOTAL, "outcome" => outcome).increment(1);
}

/// Agents whose shim ended them because their lease ran out.
pub const LEASE_EXPIRIES_TOTAL: &str = "stratavore_supervisor_lease_expiries_total";

/// A shim ended its agent when the lease ran out.
pub fn lease_expired() {
    metrics::counter!(LEASE_EXPIRIES_TOTAL).increment(1);
}
