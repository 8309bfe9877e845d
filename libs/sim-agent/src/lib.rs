//! The simulated agent: a stand-in for `claude -p ... --output-format
//! stream-json --verbose` that prints the same kind of lines, keeps
//! sessions the same way, and misbehaves on request (runs long, spends
//! tokens, crashes, hangs, ignores SIGTERM, hits a usage limit, leaves
//! grandchildren behind), so that runner tests need no login or network.
//!
//! Behaviour comes from a [`Script`]: the `SIM_AGENT_SCRIPT` environment
//! variable (JSON), else a `sim:{...}` prefix of the prompt, else defaults
//! (one turn, small usage, success).
//!
//! A script with `replay` prints a recorded output of any agent CLI instead
//! (see [`replay()`]). Given in `SIM_AGENT_SCRIPT`, it is read before the
//! command line, which is then not parsed at all: the agent is started as
//! any profile's executable (`codex exec --json ...`, `opencode run ...`),
//! and the replay needs nothing from those words, while parsing them as
//! Claude Code's flags would refuse them.
#![deny(missing_docs)]

pub mod args;
pub mod process;
pub mod replay;
pub mod run;
pub mod script;
pub mod session_store;
pub mod stream;

pub use args::{Cli, OutputFormat};
pub use replay::replay;
pub use run::{SimError, run};
pub use script::{Script, ScriptError, Tokens};
pub use session_store::{SessionError, SessionRecord, SessionStore};
