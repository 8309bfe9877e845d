//! An agent's progress: its usage reports and the pieces of its text. A
//! running agent reports every turn, so these are most of what the gateway
//! receives, and each feeds four models (the runner's totals, its session
//! attempt, its budget spending, its searchable text). They are folded with
//! the other runner and process events, a batch at a time
//! ([`crate::agent_events`]); this is what the models' pure folds read of
//! them.

use chrono::{DateTime, Utc};
use stratavore_events::Envelope;
use stratavore_events::process::{ProcessEvent, TextChunked, UsageReported};
use uuid::Uuid;

/// What an agent did: a turn's usage, or a piece of its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A turn, with its tokens and priced cost.
    Usage(UsageReported),
    /// A piece of a message or of the final result.
    Text(TextChunked),
}

/// A process event sorted: progress, or another kind.
#[derive(Debug)]
pub(crate) enum Sorted {
    /// A usage report or a text piece.
    Progress(Progress),
    /// Any other process event.
    Other(ProcessEvent),
}

/// A progress event, with the message that carried it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    /// The message's id (a spending's and a text's key).
    pub id: Uuid,
    /// The message's own time.
    pub time: DateTime<Utc>,
    /// What happened.
    pub step: Step,
}

impl Progress {
    /// The progress a process event is (taken, not copied: a text piece
    /// may be 8 KiB), or the event back when it is not progress.
    pub(crate) fn of(message: &Envelope, event: ProcessEvent) -> Sorted {
        let step = match event {
            ProcessEvent::UsageReported(u) => Step::Usage(u),
            ProcessEvent::TextChunked(t) => Step::Text(t),
            other => return Sorted::Other(other),
        };
        Sorted::Progress(Self {
            id: message.id,
            time: message.time,
            step,
        })
    }

    /// The runner it is about.
    pub(crate) fn runner_id(&self) -> Uuid {
        match &self.step {
            Step::Usage(u) => u.runner_id,
            Step::Text(t) => t.runner_id,
        }
    }

    /// Its attempt, as the read models store attempts.
    pub(crate) fn attempt(&self) -> i32 {
        let attempt = match &self.step {
            Step::Usage(u) => u.attempt,
            Step::Text(t) => t.attempt,
        };
        i32::try_from(attempt).unwrap_or(i32::MAX)
    }

    /// The session the node named with it ('' when none).
    pub(crate) fn session_id(&self) -> &str {
        match &self.step {
            Step::Usage(u) => &u.session_id,
            Step::Text(t) => &t.session_id,
        }
    }
}

/// A token count as the read models store it.
pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Tokens and cost summed over usage reports: a runner's, an attempt's.
/// Its fields are named as the tables' columns.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UsageSums {
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Tokens written to the prompt cache.
    pub cache_creation_tokens: i64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: i64,
    /// Cost in USD.
    pub cost_usd: f64,
}

impl UsageSums {
    /// Add a turn. Counts saturate rather than wrap (a node reporting
    /// absurd figures must not stop the fold); the cost is added in event
    /// order, so a sum is the same bits however the events were batched.
    pub(crate) fn add(&mut self, u: &UsageReported) {
        self.input_tokens = self.input_tokens.saturating_add(count(u.input_tokens));
        self.output_tokens = self.output_tokens.saturating_add(count(u.output_tokens));
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(count(u.cache_creation_input_tokens));
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(count(u.cache_read_input_tokens));
        self.cost_usd += u.cost_usd;
    }
}
