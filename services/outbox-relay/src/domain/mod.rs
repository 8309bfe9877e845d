//! The relay's decisions, free of I/O: how long to wait before the next
//! poll, and what each log row becomes on the wire.

pub mod poll_schedule;
pub mod wire;
