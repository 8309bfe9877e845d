//! The agent shim of Stratavore and the runner directory it shares with the
//! supervisor.
//!
//! Every agent CLI runs under a `stratavore-shim` process (as conmon is for
//! containers): in a session of its own, a child subreaper, the agent's
//! parent. The runner directory ([`runner_dir`]) is the only interface
//! between shim and supervisor; [`shim`] holds the shim's logic, so that the
//! binary is a thin wrapper and the parts can be tested.

#![deny(missing_docs)]

pub mod runner_dir;
pub mod shim;
