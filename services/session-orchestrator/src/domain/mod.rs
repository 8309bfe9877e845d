//! The orchestrator's decisions, free of I/O: state in, events out.

pub mod budgets;
pub mod launch;
pub mod liveness;
pub mod nodes;
pub mod paths;
pub mod projects;
pub mod runners;
pub mod spending_runs;
