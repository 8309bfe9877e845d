//! Claude Code's `stream-json` output (`claude -p PROMPT --output-format
//! stream-json --verbose --session-id ID`), one JSON object per line:
//! `system`/`init`, `assistant` messages (one line per content block, each
//! with a copy of the message's usage), `user` tool results, and a final
//! `result`.

pub mod outcome;
mod usage;

use serde_json::{Map, Value};

use crate::text::{str_field, text_chunks};
use crate::{AgentFact, TextRole, TokenUsage};
use outcome::{ResultSignals, classify};
use usage::{TurnLedger, TurnTotals};

/// A deterministic fold of Claude Code `stream-json` lines into facts.
///
/// Feed it every line of stdout in order, then call [`Self::finish`] at the
/// end of the output; the same lines always give the same facts.
#[derive(Debug, Default)]
pub struct ClaudeStreamParser {
    lines_seen: u64,
    last_progress_line: u64,
    malformed_lines: u64,
    unknown_lines: u64,
    session_id: Option<String>,
    bound: bool,
    ledger: TurnLedger,
    /// The `error` field of the last assistant line that had one
    /// (`authentication_failed`, `rate_limit`, ...): the result line itself
    /// does not always say why it failed.
    last_assistant_error: Option<String>,
    finished: bool,
}

impl ClaudeStreamParser {
    /// A parser that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one line of output (without its newline) and returns the facts
    /// it completes. Blank lines are skipped; malformed and unknown lines are
    /// counted, never fatal.
    pub fn feed(&mut self, line: &str) -> Vec<AgentFact> {
        self.lines_seen = self.lines_seen.saturating_add(1);
        if line.trim().is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            self.malformed_lines += 1;
            return Vec::new();
        };
        if self.session_id.is_none() {
            self.session_id = str_field(&object, "session_id").map(str::to_owned);
        }
        match str_field(&object, "type") {
            Some("system") => self.on_system(&object),
            Some("assistant") => self.on_assistant(&object),
            Some("user") => self.on_user(&object),
            Some("result") => self.on_result(&object),
            // Partial-message deltas (`--include-partial-messages`): the
            // complete message follows as an `assistant` line.
            Some("stream_event") => Vec::new(),
            _ => {
                self.unknown_lines += 1;
                Vec::new()
            }
        }
    }

    /// Ends the output: a turn still open (the agent died mid-turn) is
    /// reported, since its tokens were spent, but does not bind the session,
    /// since it was never completed. Calling it again gives nothing.
    pub fn finish(&mut self) -> Vec<AgentFact> {
        self.ledger.end_turn().map(usage_fact).into_iter().collect()
    }

    /// The 1-based number of the last line that showed progress (a turn, a
    /// tool result or assistant text), 0 before any: a stall timer counts
    /// from it, whatever error or retry lines come meanwhile.
    #[must_use]
    pub fn last_progress_line(&self) -> u64 {
        self.last_progress_line
    }

    /// How many lines were fed, blank ones included.
    #[must_use]
    pub fn lines_seen(&self) -> u64 {
        self.lines_seen
    }

    /// Lines that were not a JSON object, or lacked what their type needs.
    #[must_use]
    pub fn malformed_lines(&self) -> u64 {
        self.malformed_lines
    }

    /// JSON objects of a type this parser does not know.
    #[must_use]
    pub fn unknown_lines(&self) -> u64 {
        self.unknown_lines
    }

    /// The session id, once a line told it.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether the session saved a first turn and so can be resumed.
    #[must_use]
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// Whether a `result` line was seen.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Usage over every message seen so far, each counted once.
    #[must_use]
    pub fn counted_usage(&self) -> TokenUsage {
        self.ledger.counted_total()
    }

    fn on_system(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        // Other subtypes (compaction boundaries, hook output, retries)
        // carry nothing the runner needs.
        if str_field(object, "subtype") != Some("init") {
            return Vec::new();
        }
        let Some(session_id) = str_field(object, "session_id") else {
            self.malformed_lines += 1;
            return Vec::new();
        };
        // init names the session this run really uses (a resume may differ
        // from what an earlier line said).
        self.session_id = Some(session_id.to_owned());
        vec![AgentFact::SessionStarted {
            session_id: session_id.to_owned(),
            model: str_field(object, "model").map(str::to_owned),
            cwd: str_field(object, "cwd").map(str::to_owned),
        }]
    }

    fn on_assistant(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(message) = object.get("message").and_then(Value::as_object) else {
            self.malformed_lines += 1;
            return Vec::new();
        };
        if let Some(error) = str_field(object, "error") {
            self.last_assistant_error = Some(error.to_owned());
        }
        if let Some(usage) = message.get("usage").and_then(Value::as_object) {
            // A message without an id cannot be recognised when repeated;
            // its line number keeps it apart and deterministic.
            let id = str_field(message, "id")
                .map_or_else(|| format!("line:{}", self.lines_seen), str::to_owned);
            self.ledger
                .record(&id, usage_of(usage), str_field(message, "model"));
        }
        let blocks = content_blocks(message);
        if !blocks.is_empty() {
            self.last_progress_line = self.lines_seen;
        }
        blocks
            .iter()
            .filter(|block| str_field(block, "type") == Some("text"))
            .filter_map(|block| str_field(block, "text"))
            .flat_map(|text| text_chunks(TextRole::Assistant, text))
            .collect()
    }

    fn on_user(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let mut facts = self.end_turn(true);
        let Some(message) = object.get("message").and_then(Value::as_object) else {
            self.malformed_lines += 1;
            return facts;
        };
        match message.get("content") {
            Some(Value::String(text)) => facts.extend(text_chunks(TextRole::User, text)),
            Some(Value::Array(_)) => {
                for block in content_blocks(message) {
                    match str_field(block, "type") {
                        Some("text") => {
                            if let Some(text) = str_field(block, "text") {
                                facts.extend(text_chunks(TextRole::User, text));
                            }
                        }
                        Some("tool_result") => self.last_progress_line = self.lines_seen,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        facts
    }

    fn on_result(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let is_error = object
            .get("is_error")
            .and_then(Value::as_bool)
            // Without the flag, fall back on the subtype's own claim.
            .unwrap_or_else(|| str_field(object, "subtype").is_some_and(|s| s != "success"));
        let num_turns = object
            .get("num_turns")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        // A turn ended by an error result is reported (its tokens were
        // spent) but binds nothing: the session may hold no usable turn.
        let mut facts = self.end_turn(!is_error);
        if !is_error && !self.bound && num_turns.unwrap_or(0) >= 1 {
            facts.extend(self.bind());
        }
        let result_text = str_field(object, "result")
            .map(str::to_owned)
            .or_else(|| joined_errors(object));
        if let Some(text) = &result_text {
            facts.extend(text_chunks(TextRole::Result, text));
        }
        let outcome = classify(ResultSignals {
            is_error,
            text: result_text.as_deref(),
            subtype: str_field(object, "subtype"),
            api_error_status: object.get("api_error_status").and_then(Value::as_u64),
            assistant_error: self.last_assistant_error.as_deref(),
        });
        facts.push(AgentFact::Finished {
            is_error,
            subtype: str_field(object, "subtype").map(str::to_owned),
            result_text,
            total_cost_usd: object.get("total_cost_usd").and_then(Value::as_f64),
            num_turns,
            duration_ms: object.get("duration_ms").and_then(Value::as_u64),
            reported_usage: object.get("usage").and_then(Value::as_object).map(usage_of),
            counted_usage: self.ledger.counted_total(),
            outcome,
        });
        self.finished = true;
        self.last_progress_line = self.lines_seen;
        facts
    }

    /// Ends the open turn, if any; `completed` says whether the turn counts
    /// as saved, which binds the session the first time.
    fn end_turn(&mut self, completed: bool) -> Vec<AgentFact> {
        let Some(totals) = self.ledger.end_turn() else {
            return Vec::new();
        };
        self.last_progress_line = self.lines_seen;
        let mut facts = vec![usage_fact(totals)];
        if completed && !self.bound {
            facts.extend(self.bind());
        }
        facts
    }

    fn bind(&mut self) -> Option<AgentFact> {
        // Without a session id there is nothing to resume by; a later turn
        // may still bind once the id is known.
        let session_id = self.session_id.clone()?;
        self.bound = true;
        Some(AgentFact::SessionBound { session_id })
    }
}

impl crate::AgentParser for ClaudeStreamParser {
    fn feed(&mut self, line: &str) -> Vec<AgentFact> {
        ClaudeStreamParser::feed(self, line)
    }

    fn finish(&mut self) -> Vec<AgentFact> {
        ClaudeStreamParser::finish(self)
    }

    fn stats(&self) -> crate::LineStats {
        crate::LineStats {
            lines_seen: self.lines_seen,
            last_progress_line: self.last_progress_line,
            malformed_lines: self.malformed_lines,
            unknown_lines: self.unknown_lines,
        }
    }
}

fn usage_fact(totals: TurnTotals) -> AgentFact {
    AgentFact::UsageReported {
        turn: totals.turn,
        message_ids: totals.message_ids,
        usage: totals.usage,
        model: totals.model,
    }
}

fn content_blocks(message: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    message
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| blocks.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

/// A counter that is absent, negative or not a number counts as 0: the
/// largest-value rule then takes it from another copy of the message.
fn usage_of(usage: &Map<String, Value>) -> TokenUsage {
    let counter = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage {
        input_tokens: counter("input_tokens"),
        output_tokens: counter("output_tokens"),
        cache_creation_input_tokens: counter("cache_creation_input_tokens"),
        cache_read_input_tokens: counter("cache_read_input_tokens"),
    }
}

/// A result can carry its error in `errors` instead of `result` (seen for
/// "No conversation found with session ID").
fn joined_errors(object: &Map<String, Value>) -> Option<String> {
    let errors: Vec<&str> = object
        .get("errors")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

#[cfg(test)]
mod tests;
