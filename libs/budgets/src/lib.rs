//! Budgets' pure rules, shared by the session-orchestrator (which decides
//! alerts, stops and launch refusals) and the api-gateway (which shows a
//! budget's standing): calendar periods in a time zone, what a usage event
//! adds to a budget, when a budget is exhausted and which alerts are due,
//! and the checks a definition must pass. No I/O: the services sum usage
//! in their own tables and pass the sums in.

#![deny(missing_docs)]

pub mod period;
pub mod standing;
pub mod validate;

pub use period::{Period, UnknownTimeZone, period_at, period_in_zone, time_zone};
pub use standing::{
    AlertKind, Limits, Spend, alerts_due, describe, spend_of_reconciliation, spend_of_usage,
    state_name,
};
pub use validate::{InvalidField, check_limits, check_target};

/// What the API says about overshoot: a budget is checked as usage
/// arrives, so the runners in scope may spend a little past the limit
/// before the stop reaches them (DESIGN.md section 4).
pub const OVERSHOOT_NOTE: &str = "a budget can be overshot by what the runners in its scope spend before the stop reaches them: the turn each has in flight, plus about a second for the usage and the stop to travel between the node and the orchestrator";
