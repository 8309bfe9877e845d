//! What an agent's progress does to its runner's row, as a pure fold: its
//! tokens and cost add up, a usage report marks the row changed, and
//! progress by the attempt found stalled ends the stall.

use crate::progress::{Progress, Step, UsageSums};
use chrono::{DateTime, Utc};

/// The columns of a runner's row that progress changes (named as they).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Totals {
    /// Tokens and cost.
    #[serde(flatten)]
    pub usage: UsageSums,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// When the stalled attempt was found stalled.
    pub stalled_at: Option<DateTime<Utc>>,
    /// How long it had gone without progress then.
    pub stalled_idle_ms: Option<i64>,
    /// The attempt found stalled.
    pub stalled_attempt: Option<i32>,
}

impl Totals {
    /// Fold one progress event.
    pub(crate) fn apply(&mut self, progress: &Progress) {
        let ends_stall = self.stalled_attempt == Some(progress.attempt());
        if ends_stall {
            self.stalled_at = None;
            self.stalled_idle_ms = None;
            self.stalled_attempt = None;
        }
        match &progress.step {
            Step::Usage(u) => {
                self.usage.add(u);
                self.updated_at = progress.time;
            }
            // Text changes the row only when it ends a stall.
            Step::Text(_) if ends_stall => self.updated_at = progress.time,
            Step::Text(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_events::process::{TextChunked, UsageReported};
    use uuid::Uuid;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn usage(attempt: u32, s: i64, tokens: u64, cost: f64) -> Progress {
        Progress {
            id: Uuid::now_v7(),
            time: at(s),
            step: Step::Usage(UsageReported {
                runner_id: Uuid::nil(),
                attempt,
                turn: 1,
                input_tokens: tokens,
                output_tokens: tokens.saturating_mul(2),
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 4,
                cost_usd: cost,
                model: None,
                session_id: String::new(),
            }),
        }
    }

    fn text(attempt: u32, s: i64) -> Progress {
        Progress {
            id: Uuid::now_v7(),
            time: at(s),
            step: Step::Text(TextChunked {
                runner_id: Uuid::nil(),
                attempt,
                session_id: String::new(),
                role: "assistant".into(),
                text: "hi".into(),
            }),
        }
    }

    fn stalled(attempt: i32) -> Totals {
        Totals {
            usage: UsageSums {
                input_tokens: 10,
                output_tokens: 20,
                cache_creation_tokens: 0,
                cache_read_tokens: 0,
                cost_usd: 0.5,
            },
            updated_at: at(0),
            stalled_at: Some(at(0)),
            stalled_idle_ms: Some(60_000),
            stalled_attempt: Some(attempt),
        }
    }

    #[test]
    fn usage_adds_up_and_marks_the_row_changed() {
        let mut t = stalled(9);
        t.apply(&usage(1, 5, 100, 0.25));
        t.apply(&usage(1, 7, 1, 0.125));
        assert_eq!(
            (
                t.usage.input_tokens,
                t.usage.output_tokens,
                t.usage.cache_creation_tokens,
                t.usage.cache_read_tokens
            ),
            (111, 222, 6, 8)
        );
        assert!((t.usage.cost_usd - 0.875).abs() < 1e-12);
        assert_eq!(t.updated_at, at(7));
        assert_eq!(t.stalled_attempt, Some(9), "another attempt's stall stays");
    }

    #[test]
    fn text_of_the_stalled_attempt_ends_the_stall_and_other_text_changes_nothing() {
        let mut t = stalled(2);
        t.apply(&text(1, 3));
        assert_eq!(t, stalled(2));
        t.apply(&text(2, 4));
        assert_eq!(
            (t.stalled_at, t.stalled_idle_ms, t.stalled_attempt),
            (None, None, None)
        );
        assert_eq!(t.updated_at, at(4));
        t.apply(&text(2, 6));
        assert_eq!(t.updated_at, at(4), "no stall left to end");
    }

    #[test]
    fn usage_ends_its_attempts_stall_and_counts_saturate() {
        let mut t = stalled(1);
        t.usage.input_tokens = i64::MAX - 1;
        t.apply(&usage(1, 2, u64::MAX, 0.0));
        assert_eq!(t.usage.input_tokens, i64::MAX);
        assert_eq!(t.stalled_attempt, None);
    }
}
