//! Agent profiles: how a node starts each agent CLI, and what a launch may
//! choose among. Profiles are configuration, never client input: a client
//! names a profile and picks a model, a permission setting and tools from the
//! profile's allowlists; it never sends a command line.
//!
//! The orchestrator and every supervisor node read the same `[profiles.*]`
//! sections: the orchestrator to refuse a bad choice before anything is
//! offered, the node to build the command line (and to refuse again, since
//! its config is its own).
#![deny(missing_docs)]

mod builtin;
mod choice;
mod command_line;
mod profile;

pub use builtin::builtin_profiles;
pub use choice::{Choice, ChoiceError, Chosen};
pub use command_line::{AgentCommand, LaunchValues, MAX_PROMPT_ARG_BYTES, agent_command};
pub use profile::{ProfileError, ProfileSection, Profiles, StallPolicy};
pub use stratavore_agent_protocols::ParserKind;
