//! The orchestrator's decisions, free of I/O: state in, events out.

pub mod paths;
pub mod projects;
pub mod runners;
