//! The supervisor's decisions, free of I/O: what a runner directory's files
//! mean as process events, what tokens cost, what each command of the
//! orchestrator leads to, and when an agent has stalled.

pub mod desired_state;
pub mod liveness;
pub mod node_commands;
pub mod pricing;
pub mod stall;
pub mod transcript_events;

#[cfg(test)]
mod tests;
