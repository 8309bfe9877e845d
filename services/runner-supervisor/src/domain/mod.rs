//! The supervisor's decisions, free of I/O: what a runner directory's files
//! mean as process events, and what tokens cost.

pub mod pricing;
pub mod transcript_events;

#[cfg(test)]
mod tests;
