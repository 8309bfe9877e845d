//! One interface over every agent's output format, so the supervisor folds
//! a transcript the same way whichever CLI wrote it.

use serde::{Deserialize, Serialize};

use crate::{AgentFact, TokenUsage};

/// Counts of the lines a parser was fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Lines fed, blank ones included.
    pub lines_seen: u64,
    /// The 1-based number of the last line that showed progress (a turn,
    /// an item, assistant text), 0 before any: a stall timer counts from
    /// it, however many error or retry lines come meanwhile.
    pub last_progress_line: u64,
    /// Lines that were not a JSON object, or lacked what their type needs.
    pub malformed_lines: u64,
    /// JSON objects of a type the parser does not know.
    pub unknown_lines: u64,
}

/// A deterministic fold of one agent's output lines into facts: the same
/// lines, fed from the same [`ParserStart`], always give the same facts.
pub trait AgentParser: Send + std::fmt::Debug {
    /// Folds one line of output (without its newline) and returns the facts
    /// it completes. Malformed and unknown lines are counted, never fatal.
    fn feed(&mut self, line: &str) -> Vec<AgentFact>;

    /// Ends the output (the process is gone): whatever is still open and
    /// was spent (a turn cut short) is reported. Calling it again gives
    /// nothing.
    fn finish(&mut self) -> Vec<AgentFact>;

    /// The line counts so far.
    fn stats(&self) -> LineStats;
}

/// Which parser a profile uses (`parser = "claude-stream-json"` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParserKind {
    /// Claude Code `--output-format stream-json --verbose`.
    ClaudeStreamJson,
    /// Codex `exec --json`.
    CodexJson,
    /// OpenCode `run --format json`.
    OpencodeJson,
    /// No parser (the generic profile): lines are kept, every line counts
    /// as progress, and only the exit code tells how the run ended.
    None,
}

impl ParserKind {
    /// The name config uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ClaudeStreamJson => "claude-stream-json",
            Self::CodexJson => "codex-json",
            Self::OpencodeJson => "opencode-json",
            Self::None => "none",
        }
    }
}

/// What a parser starts from, carried in the launch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParserStart {
    /// The session's last known cumulative usage, for an agent that reports
    /// usage as a running total of the session (Codex): a resumed run counts
    /// from it, not from zero. Zero for a new session.
    pub usage_baseline: TokenUsage,
}

/// A parser of `kind`, starting from `start`.
#[must_use]
pub fn parser_for(kind: ParserKind, start: ParserStart) -> Box<dyn AgentParser> {
    match kind {
        ParserKind::ClaudeStreamJson => Box::new(crate::ClaudeStreamParser::new()),
        ParserKind::CodexJson => Box::new(crate::CodexJsonParser::new(start)),
        ParserKind::OpencodeJson => Box::new(crate::OpencodeJsonParser::new()),
        ParserKind::None => Box::new(crate::LineCounter::default()),
    }
}

/// The generic profile's "parser": it derives no facts, and every line
/// counts as progress, since nothing better tells.
#[derive(Debug, Default)]
pub struct LineCounter {
    stats: LineStats,
}

impl AgentParser for LineCounter {
    fn feed(&mut self, _line: &str) -> Vec<AgentFact> {
        self.stats.lines_seen = self.stats.lines_seen.saturating_add(1);
        self.stats.last_progress_line = self.stats.lines_seen;
        Vec::new()
    }

    fn finish(&mut self) -> Vec<AgentFact> {
        Vec::new()
    }

    fn stats(&self) -> LineStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_kinds_are_named_in_config_as_in_serde() {
        for kind in [
            ParserKind::ClaudeStreamJson,
            ParserKind::CodexJson,
            ParserKind::OpencodeJson,
            ParserKind::None,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }

    #[test]
    fn the_line_counter_derives_nothing_and_counts_every_line_as_progress() {
        let mut parser = parser_for(ParserKind::None, ParserStart::default());
        assert!(parser.feed("hello").is_empty());
        assert!(parser.feed("{\"type\":\"x\"}").is_empty());
        assert!(parser.finish().is_empty());
        assert_eq!(
            parser.stats(),
            LineStats {
                lines_seen: 2,
                last_progress_line: 2,
                malformed_lines: 0,
                unknown_lines: 0,
            }
        );
    }
}
