//! The facts a parser derives from an agent's output.

use serde::{Deserialize, Serialize};

/// Token counters of one message, one turn or a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache (priced above plain input).
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache (priced below plain input).
    pub cache_read_input_tokens: u64,
}

impl TokenUsage {
    /// Each counter the larger of the two: early copies of a message's
    /// usage can be partial, so the largest value seen is the final one.
    #[must_use]
    pub fn max_each(self, other: Self) -> Self {
        Self {
            input_tokens: self.input_tokens.max(other.input_tokens),
            output_tokens: self.output_tokens.max(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .max(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .max(other.cache_read_input_tokens),
        }
    }

    /// Counter-wise sum; saturates, since a counter near `u64::MAX` can only
    /// come from a corrupt line and must not abort the fold.
    #[must_use]
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(other.cache_read_input_tokens),
        }
    }

    /// Whether every counter is zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Who a piece of text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextRole {
    /// The prompt, echoed back by the agent.
    User,
    /// Text the model wrote.
    Assistant,
    /// The final result text of a run.
    Result,
}

/// How a run ended, as far as its output tells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The agent reported success.
    Succeeded,
    /// The agent reported an error that waiting will not fix.
    Failed {
        /// The agent's own words for it.
        reason: String,
    },
    /// The agent hit a rate or usage limit: the runner waits for quota.
    RateLimited {
        /// When the limit resets (unix seconds), when the agent said.
        resets_at: Option<i64>,
        /// The agent's own words for it.
        message: String,
    },
}

/// One fact derived from an agent's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum AgentFact {
    /// The agent started (or resumed) a session.
    SessionStarted {
        /// The agent's session id.
        session_id: String,
        /// The model the agent said it uses.
        model: Option<String>,
        /// The agent's working directory.
        cwd: Option<String>,
    },
    /// Tokens spent by one agent turn, reported once when the turn ends.
    UsageReported {
        /// 1-based number of the turn within this output.
        turn: u32,
        /// The messages whose usage is summed here, in first-seen order.
        message_ids: Vec<String>,
        /// Sum over the messages of the largest value seen of each counter.
        usage: TokenUsage,
        /// The model of the turn's last message, for pricing.
        model: Option<String>,
    },
    /// The session saved a first turn: from now on it can be resumed.
    SessionBound {
        /// The agent's session id.
        session_id: String,
    },
    /// The agent reported an error it may recover from (a retry, a lost
    /// connection): the runner's latest error while it runs. An error that
    /// ends the run is in [`AgentFact::Finished`] instead.
    ErrorReported {
        /// The agent's own words for it.
        message: String,
    },
    /// A piece of text, at most [`crate::TEXT_CHUNK_MAX_BYTES`] long.
    TextChunk {
        /// Who wrote it.
        role: TextRole,
        /// The text.
        text: String,
    },
    /// The agent's final report of the run.
    Finished {
        /// The agent's error flag; it alone decides failure.
        is_error: bool,
        /// The agent's subtype (`success`, `error_during_execution`, ...).
        subtype: Option<String>,
        /// The result text (or the joined `errors`, when there is no text).
        result_text: Option<String>,
        /// The run's cost as the agent computed it.
        total_cost_usd: Option<f64>,
        /// The agent's count of turns.
        num_turns: Option<u32>,
        /// The run's wall time as the agent measured it.
        duration_ms: Option<u64>,
        /// The usage the agent reported for the run.
        reported_usage: Option<TokenUsage>,
        /// The usage this parser counted over every message it saw.
        counted_usage: TokenUsage,
        /// What the run's end means for the runner.
        outcome: Outcome,
    },
}
