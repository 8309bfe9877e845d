//! Parser tests against recorded and documented agent CLI output.

mod claude_fixtures;
mod codex_fixtures;
mod opencode_fixtures;

use std::path::PathBuf;

use stratavore_agent_protocols::{AgentFact, AgentParser, Outcome, TokenUsage};

/// The text of `tests/fixtures/<agent>/<name>`.
pub fn fixture(agent: &str, name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(agent)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fact of `text`, line by line, then the end of the output.
pub fn fold(parser: &mut dyn AgentParser, text: &str) -> Vec<AgentFact> {
    let mut facts: Vec<AgentFact> = text.lines().flat_map(|l| parser.feed(l)).collect();
    facts.extend(parser.finish());
    facts
}

pub fn usage(input: u64, output: u64, creation: u64, read: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: creation,
        cache_read_input_tokens: read,
    }
}

/// `(turn, message ids, usage)` of every usage report, in order.
pub fn usage_reports(facts: &[AgentFact]) -> Vec<(u32, Vec<String>, TokenUsage)> {
    facts
        .iter()
        .filter_map(|f| match f {
            AgentFact::UsageReported {
                turn,
                message_ids,
                usage,
                ..
            } => Some((*turn, message_ids.clone(), *usage)),
            _ => None,
        })
        .collect()
}

/// The sum of every usage report.
pub fn reported_total(facts: &[AgentFact]) -> TokenUsage {
    usage_reports(facts)
        .into_iter()
        .fold(TokenUsage::default(), |sum, (_, _, u)| {
            sum.saturating_add(u)
        })
}

pub fn finished(facts: &[AgentFact]) -> Option<&AgentFact> {
    facts
        .iter()
        .find(|f| matches!(f, AgentFact::Finished { .. }))
}

pub fn outcome(facts: &[AgentFact]) -> Option<Outcome> {
    match finished(facts) {
        Some(AgentFact::Finished { outcome, .. }) => Some(outcome.clone()),
        _ => None,
    }
}

/// The kind of each fact, in order: the shape of a run at a glance.
pub fn kinds(facts: &[AgentFact]) -> Vec<&'static str> {
    facts
        .iter()
        .map(|f| match f {
            AgentFact::SessionStarted { .. } => "started",
            AgentFact::UsageReported { .. } => "usage",
            AgentFact::SessionBound { .. } => "bound",
            AgentFact::ErrorReported { .. } => "error",
            AgentFact::TextChunk { .. } => "text",
            AgentFact::Finished { .. } => "finished",
        })
        .collect()
}

/// The messages of every error report, in order.
pub fn errors(facts: &[AgentFact]) -> Vec<&str> {
    facts
        .iter()
        .filter_map(|f| match f {
            AgentFact::ErrorReported { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}
