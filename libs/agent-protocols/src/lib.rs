//! Parsers of agent CLI output: they turn the lines an agent prints into
//! [`AgentFact`]s, with no I/O of their own.
//!
//! Every parser is a deterministic fold over the lines it is fed: the
//! supervisor re-reads a transcript after a restart and must derive exactly
//! the facts (and so the events) it derived the first time.
#![deny(missing_docs)]

pub mod claude;
pub mod codex;
mod fact;
pub mod limits;
pub mod opencode;
mod parser;
mod text;

pub use claude::ClaudeStreamParser;
pub use codex::CodexJsonParser;
pub use fact::{AgentFact, Outcome, TextRole, TokenUsage};
pub use opencode::OpencodeJsonParser;
pub use parser::{AgentParser, LineCounter, LineStats, ParserKind, ParserStart, parser_for};
pub use text::{TEXT_CHUNK_MAX_BYTES, split_text};
