//! The supervisor's decisions, free of I/O: what a runner directory's files
//! mean as process events, what tokens cost, what each command of the
//! orchestrator leads to, and the agent's command line.

pub mod agent_command;
pub mod desired_state;
pub mod node_commands;
pub mod pricing;
pub mod transcript_events;

#[cfg(test)]
mod tests;
