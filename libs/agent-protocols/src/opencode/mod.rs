//! OpenCode's `run --format json` output (`opencode run --format json
//! PROMPT`), one JSON object per line, each `{type, timestamp, sessionID,
//! ...}`: `step_start`, `text`, `reasoning` (with `--thinking`), `tool_use`
//! and `step_finish` carry a message `part`; `error` carries the session's
//! `error` (`{name, data: {message, statusCode?, ...}}`). A model step ends
//! with `step_finish`, which has the step's tokens and cost. OpenCode prints
//! no final report: the end of the output is the end of the run.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::limits::{LIMIT_STATUS, error_outcome, mentions_limit};
use crate::text::{str_field, text_chunks};
use crate::{AgentFact, AgentParser, LineStats, Outcome, TextRole, TokenUsage};

/// The reason given for an `error` line that names nothing.
const ERROR_WITHOUT_MESSAGE: &str = "the agent reported an error without a message";

/// The error that ends the run.
#[derive(Debug, Clone)]
struct RunError {
    name: Option<String>,
    message: String,
    limited: bool,
}

/// A deterministic fold of OpenCode `run --format json` lines into facts.
///
/// Feed it every line of stdout in order, then call [`AgentParser::finish`]
/// at the end of the output; the same lines always give the same facts.
#[derive(Debug, Default)]
pub struct OpencodeJsonParser {
    stats: LineStats,
    session_id: Option<String>,
    bound: bool,
    /// Steps finished in this output, which numbers them.
    steps: u32,
    step_open: bool,
    /// `step_finish` parts already counted: a part printed twice must not
    /// bill twice.
    counted_parts: HashSet<String>,
    counted: TokenUsage,
    /// The sum of the steps' costs, once one reported a cost.
    cost_usd: Option<f64>,
    /// The last assistant text: the run's result text.
    last_text: Option<String>,
    error: Option<RunError>,
    finished: bool,
}

impl OpencodeJsonParser {
    /// A parser that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The session id, once a line told it.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether a step finished, so the session holds a saved turn.
    #[must_use]
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// Usage over every step seen so far, each counted once.
    #[must_use]
    pub fn counted_usage(&self) -> TokenUsage {
        self.counted
    }

    /// The sum of the steps' costs, when they reported one.
    #[must_use]
    pub fn counted_cost_usd(&self) -> Option<f64> {
        self.cost_usd
    }

    fn mark_progress(&mut self) {
        self.stats.last_progress_line = self.stats.lines_seen;
    }

    fn on_step_finish(&mut self, part: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(tokens) = part.get("tokens").and_then(Value::as_object) else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        self.step_open = false;
        self.mark_progress();
        let part_id = str_field(part, "id")
            .map_or_else(|| format!("line:{}", self.stats.lines_seen), str::to_owned);
        if !self.counted_parts.insert(part_id.clone()) {
            return Vec::new();
        }
        let usage = usage_of(tokens);
        self.counted = self.counted.saturating_add(usage);
        if let Some(cost) = part
            .get("cost")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0)
        {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + cost);
        }
        self.steps = self.steps.saturating_add(1);
        let message_id = str_field(part, "messageID").map_or(part_id, str::to_owned);
        let mut facts = vec![AgentFact::UsageReported {
            turn: self.steps,
            message_ids: vec![message_id],
            usage,
            // Steps do not name their model; OpenCode prices them itself.
            model: None,
        }];
        if !self.bound
            && let Some(session_id) = &self.session_id
        {
            self.bound = true;
            facts.push(AgentFact::SessionBound {
                session_id: session_id.clone(),
            });
        }
        facts
    }

    fn on_text(&mut self, part: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(text) = str_field(part, "text") else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        self.mark_progress();
        self.last_text = Some(text.to_owned());
        text_chunks(TextRole::Assistant, text)
    }

    fn on_error(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(error) = object.get("error").and_then(Value::as_object) else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        let data = error.get("data").and_then(Value::as_object);
        let name = str_field(error, "name");
        let message = data
            .and_then(|d| str_field(d, "message"))
            .filter(|m| !m.trim().is_empty())
            .or(name)
            .unwrap_or(ERROR_WITHOUT_MESSAGE)
            .to_owned();
        let status = data
            .and_then(|d| d.get("statusCode"))
            .and_then(Value::as_u64);
        let body_mentions_limit = data
            .and_then(|d| str_field(d, "responseBody"))
            .is_some_and(mentions_limit);
        let limited =
            status == Some(LIMIT_STATUS) || body_mentions_limit || mentions_limit(&message);
        // A later error replaces an earlier one, except that a limit is
        // never hidden by what followed it: waiting is what the run needs.
        if !self.error.as_ref().is_some_and(|e| e.limited && !limited) {
            self.error = Some(RunError {
                name: name.map(str::to_owned),
                message: message.clone(),
                limited,
            });
        }
        vec![AgentFact::ErrorReported { message }]
    }
}

impl AgentParser for OpencodeJsonParser {
    fn feed(&mut self, line: &str) -> Vec<AgentFact> {
        self.stats.lines_seen = self.stats.lines_seen.saturating_add(1);
        if line.trim().is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        let mut facts = Vec::new();
        // Every line names the session; the first one starts it.
        if self.session_id.is_none()
            && let Some(session_id) = str_field(&object, "sessionID")
        {
            self.session_id = Some(session_id.to_owned());
            facts.push(AgentFact::SessionStarted {
                session_id: session_id.to_owned(),
                model: None,
                cwd: None,
            });
        }
        let part = object.get("part").and_then(Value::as_object);
        match (str_field(&object, "type"), part) {
            // Not progress: a step that starts and then hangs is stalled.
            (Some("step_start"), Some(_)) => self.step_open = true,
            (Some("step_finish"), Some(part)) => facts.extend(self.on_step_finish(part)),
            (Some("text"), Some(part)) => facts.extend(self.on_text(part)),
            (Some("reasoning" | "tool_use"), Some(_)) => self.mark_progress(),
            (Some("step_start" | "step_finish" | "text" | "reasoning" | "tool_use"), None) => {
                self.stats.malformed_lines += 1;
            }
            (Some("error"), _) => facts.extend(self.on_error(&object)),
            // Newer versions end with `done` once the session is idle;
            // the end of the output says as much.
            (Some("done"), _) => {}
            _ => self.stats.unknown_lines += 1,
        }
        facts
    }

    /// Ends the output. OpenCode prints no final report, so the run's end
    /// is reported here: an `error` line fails the run (or waits for quota,
    /// for a limit) whatever came before it; otherwise finished steps with
    /// none left open are a success. When no step finished, or the last one
    /// was cut short, nothing is reported and the exit status decides.
    /// Calling it again gives nothing.
    fn finish(&mut self) -> Vec<AgentFact> {
        if self.finished {
            return Vec::new();
        }
        let (is_error, subtype, result_text, outcome) = match &self.error {
            Some(error) => (
                true,
                error.name.clone(),
                Some(error.message.clone()),
                error_outcome(&error.message, error.limited),
            ),
            None if self.steps > 0 && !self.step_open => {
                (false, None, self.last_text.clone(), Outcome::Succeeded)
            }
            None => return Vec::new(),
        };
        self.finished = true;
        vec![AgentFact::Finished {
            is_error,
            subtype,
            result_text,
            total_cost_usd: self.cost_usd,
            num_turns: None,
            duration_ms: None,
            reported_usage: None,
            counted_usage: self.counted,
            outcome,
        }]
    }

    fn stats(&self) -> LineStats {
        self.stats
    }
}

/// A step's `tokens` in our terms. OpenCode already keeps its counters
/// apart (`packages/opencode/src/session/index.ts`, `getUsage`): `input` is
/// uncached input (the provider's input less cache reads and writes),
/// `output` excludes `reasoning`, which it prices as output on its own. So
/// output is `output + reasoning`. A counter that is absent, negative or not
/// a whole number counts as 0.
fn usage_of(tokens: &Map<String, Value>) -> TokenUsage {
    let counter =
        |map: &Map<String, Value>, key: &str| map.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cache = tokens.get("cache").and_then(Value::as_object);
    let cache_counter = |key: &str| cache.map_or(0, |c| counter(c, key));
    TokenUsage {
        input_tokens: counter(tokens, "input"),
        output_tokens: counter(tokens, "output").saturating_add(counter(tokens, "reasoning")),
        cache_creation_input_tokens: cache_counter("write"),
        cache_read_input_tokens: cache_counter("read"),
    }
}

#[cfg(test)]
mod tests;
