//! The shim against real processes: one test binary, tests run in parallel,
//! each in a directory of its own under `.local/tmp/shim-tests/`.

mod control;
mod exit;
mod harness;
mod lease;
mod spawn_failure;
