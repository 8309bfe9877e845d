//! Codex's `exec --json` output (`codex exec --json --skip-git-repo-check
//! PROMPT`, resumed with `codex exec --json ... resume THREAD PROMPT`), one
//! JSON object per line: `thread.started`, `turn.started`, `item.started` /
//! `item.updated` / `item.completed` (agent messages, reasoning, commands,
//! file changes, tool calls, to-do lists, non-fatal `error` items),
//! `turn.completed` with the thread's running usage, `turn.failed`, and
//! `error` (retries and fatal errors alike). One `codex exec` runs one turn
//! and prints no final report: the end of the output is the end of the run.

mod usage;

use serde_json::{Map, Value};

use crate::limits::error_outcome;
use crate::text::{str_field, text_chunks};
use crate::{AgentFact, AgentParser, LineStats, Outcome, ParserStart, TextRole, TokenUsage};
use usage::{ThreadTotal, usage_of};

/// The reason given for a `turn.failed` line without a message: Codex's own
/// fallback wording for a turn that failed with no error.
const TURN_FAILED_WITHOUT_MESSAGE: &str = "turn failed";

/// How the last turn of the output ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TurnEnd {
    Completed,
    Failed { message: String },
}

/// A deterministic fold of Codex `exec --json` lines into facts.
///
/// Feed it every line of stdout in order, then call [`AgentParser::finish`]
/// at the end of the output; the same lines, from the same
/// [`ParserStart`], always give the same facts.
#[derive(Debug, Default)]
pub struct CodexJsonParser {
    stats: LineStats,
    thread_id: Option<String>,
    bound: bool,
    /// The thread's running total, from the launch's baseline on.
    thread_total: ThreadTotal,
    /// What the turns of this output spent.
    counted: TokenUsage,
    /// Turns begun in this output, which numbers them.
    turns: u32,
    turn_open: bool,
    last_end: Option<TurnEnd>,
    /// The last agent message of the latest turn: the run's result text.
    last_message: Option<String>,
    finished: bool,
}

impl CodexJsonParser {
    /// A parser starting from `start`: a resumed thread's usage counts from
    /// `start.usage_baseline`, the thread's last known total.
    #[must_use]
    pub fn new(start: ParserStart) -> Self {
        Self {
            thread_total: ThreadTotal::from_baseline(start.usage_baseline),
            ..Self::default()
        }
    }

    /// The thread id, once `thread.started` told it.
    #[must_use]
    pub fn thread_id(&self) -> Option<&str> {
        self.thread_id.as_deref()
    }

    /// Whether a turn completed: the first one binds the session. (Codex
    /// saves the thread's rollout at once, so even an unbound thread can be
    /// resumed; binding says it holds a finished turn.)
    #[must_use]
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// What the turns of this output spent, the baseline excluded.
    #[must_use]
    pub fn counted_usage(&self) -> TokenUsage {
        self.counted
    }

    /// The thread's running total as Codex last reported it (the launch's
    /// baseline before any report): what the thread's next resume must
    /// carry as its baseline. It is the baseline plus every usage reported
    /// unless Codex restarted its total meanwhile (see `ThreadTotal`).
    #[must_use]
    pub fn thread_usage_total(&self) -> TokenUsage {
        self.thread_total.total()
    }

    fn on_thread_started(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(thread_id) = str_field(object, "thread_id") else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        self.thread_id = Some(thread_id.to_owned());
        vec![AgentFact::SessionStarted {
            session_id: thread_id.to_owned(),
            model: None,
            cwd: None,
        }]
    }

    fn begin_turn(&mut self) {
        // A turn begun while another was open leaves that one unreported:
        // Codex gives no partial usage, and the next running total still
        // covers whatever it spent.
        self.turns = self.turns.saturating_add(1);
        self.turn_open = true;
        self.last_message = None;
    }

    /// Ends the open turn, or a turn whose start was not seen.
    fn end_turn(&mut self, end: TurnEnd) {
        if !self.turn_open {
            self.begin_turn();
        }
        self.turn_open = false;
        self.last_end = Some(end);
        self.stats.last_progress_line = self.stats.lines_seen;
    }

    fn on_turn_completed(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        self.end_turn(TurnEnd::Completed);
        let mut facts = Vec::new();
        match object.get("usage").and_then(Value::as_object) {
            Some(reported) => {
                let spent = self.thread_total.advance(usage_of(reported));
                self.counted = self.counted.saturating_add(spent);
                facts.push(AgentFact::UsageReported {
                    turn: self.turns,
                    message_ids: vec![format!("turn-{}", self.turns)],
                    usage: spent,
                    model: None,
                });
            }
            // The turn still ended, and binds; its usage shows in the next
            // running total.
            None => self.stats.malformed_lines += 1,
        }
        if !self.bound
            && let Some(thread_id) = &self.thread_id
        {
            self.bound = true;
            facts.push(AgentFact::SessionBound {
                session_id: thread_id.clone(),
            });
        }
        facts
    }

    fn on_turn_failed(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        let message = object
            .get("error")
            .and_then(Value::as_object)
            .and_then(|error| str_field(error, "message"))
            .filter(|message| !message.trim().is_empty());
        if message.is_none() {
            self.stats.malformed_lines += 1;
        }
        let message = message.unwrap_or(TURN_FAILED_WITHOUT_MESSAGE).to_owned();
        self.end_turn(TurnEnd::Failed { message });
        Vec::new()
    }

    fn on_item(&mut self, event: &str, object: &Map<String, Value>) -> Vec<AgentFact> {
        let Some(item) = object.get("item").and_then(Value::as_object) else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        match str_field(item, "type") {
            // A warning surfaced as an item (a transport fallback, a config
            // warning, a model reroute): an error to show, not progress,
            // since offline Codex prints one among its endless retries.
            Some("error") => match str_field(item, "message") {
                Some(message) => vec![AgentFact::ErrorReported {
                    message: message.to_owned(),
                }],
                None => {
                    self.stats.malformed_lines += 1;
                    Vec::new()
                }
            },
            Some("agent_message") => {
                self.stats.last_progress_line = self.stats.lines_seen;
                // The message is whole only once completed.
                if event != "item.completed" {
                    return Vec::new();
                }
                let Some(text) = str_field(item, "text") else {
                    self.stats.malformed_lines += 1;
                    return Vec::new();
                };
                self.last_message = Some(text.to_owned());
                text_chunks(TextRole::Assistant, text)
            }
            Some(_) => {
                self.stats.last_progress_line = self.stats.lines_seen;
                Vec::new()
            }
            None => {
                self.stats.malformed_lines += 1;
                Vec::new()
            }
        }
    }

    fn on_error(&mut self, object: &Map<String, Value>) -> Vec<AgentFact> {
        match str_field(object, "message") {
            Some(message) => vec![AgentFact::ErrorReported {
                message: message.to_owned(),
            }],
            None => {
                self.stats.malformed_lines += 1;
                Vec::new()
            }
        }
    }
}

impl AgentParser for CodexJsonParser {
    fn feed(&mut self, line: &str) -> Vec<AgentFact> {
        self.stats.lines_seen = self.stats.lines_seen.saturating_add(1);
        if line.trim().is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            self.stats.malformed_lines += 1;
            return Vec::new();
        };
        match str_field(&object, "type") {
            Some("thread.started") => self.on_thread_started(&object),
            // Not progress: a turn that starts and then only retries is
            // stalled.
            Some("turn.started") => {
                self.begin_turn();
                Vec::new()
            }
            Some("turn.completed") => self.on_turn_completed(&object),
            Some("turn.failed") => self.on_turn_failed(&object),
            Some(event @ ("item.started" | "item.updated" | "item.completed")) => {
                self.on_item(event, &object)
            }
            // A plan streaming in is the model at work.
            Some("item.plan.delta") => {
                self.stats.last_progress_line = self.stats.lines_seen;
                Vec::new()
            }
            // Headless exec answers these itself; nothing for the runner.
            Some("request_user_input") => Vec::new(),
            // Not progress: offline Codex prints a retry error every minute,
            // forever.
            Some("error") => self.on_error(&object),
            _ => {
                self.stats.unknown_lines += 1;
                Vec::new()
            }
        }
    }

    /// Ends the output. Codex prints no final report, so the run's end is
    /// reported here, when its last turn ended: completed (success) or
    /// failed (a failure, or a limit to wait out). When no turn ended, or
    /// the last one was cut short, nothing is reported and the exit status
    /// decides; a turn cut short reports no usage either, since Codex gives
    /// none until a turn completes. Calling it again gives nothing.
    fn finish(&mut self) -> Vec<AgentFact> {
        if self.finished || self.turn_open {
            return Vec::new();
        }
        let Some(end) = self.last_end.clone() else {
            return Vec::new();
        };
        self.finished = true;
        let (is_error, result_text, outcome) = match end {
            TurnEnd::Completed => (false, self.last_message.clone(), Outcome::Succeeded),
            TurnEnd::Failed { message } => {
                let outcome = error_outcome(&message, false);
                (true, Some(message), outcome)
            }
        };
        vec![AgentFact::Finished {
            is_error,
            subtype: None,
            result_text,
            // Codex reports no cost: the supervisor prices the turns.
            total_cost_usd: None,
            num_turns: None,
            duration_ms: None,
            // Codex reports only the thread's running total, never the
            // run's own; `counted_usage` is what this run spent.
            reported_usage: None,
            counted_usage: self.counted,
            outcome,
        }]
    }

    fn stats(&self) -> LineStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
