//! What an agent's progress does to its session attempt's facts, as a pure
//! fold: a usage report is a turn with its tokens and cost; a text piece
//! may begin a message (see `text_pieces`) or carry the final result; both
//! name the session they were in when the agent had not named one yet.

use super::text_pieces::{LastPiece, piece_effect};
use crate::progress::{Progress, Step, UsageSums};
use chrono::{DateTime, Utc};

/// The role of the pieces that carry the agent's final result.
const RESULT_ROLE: &str = "result";

/// The columns of an attempt's row that progress changes, and the offered
/// session its session falls back to (named as the columns).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AttemptFacts {
    /// The session the orchestrator offered the attempt with (unchanged).
    pub offered_session: Option<String>,
    /// The session the agent said it runs.
    pub agent_session: Option<String>,
    /// Its latest activity.
    pub last_active_at: DateTime<Utc>,
    /// Agent turns.
    pub turns: i32,
    /// Text messages begun.
    pub messages: i32,
    /// The role of the last text piece.
    pub last_text_role: Option<String>,
    /// Whether that piece filled the cap.
    pub last_text_full: bool,
    /// Tokens and cost.
    #[serde(flatten)]
    pub usage: UsageSums,
    /// The latest result, whole.
    pub result_text: Option<String>,
}

impl AttemptFacts {
    /// The session the attempt is in (as the table's generated column).
    pub(crate) fn session_id(&self) -> Option<&str> {
        self.agent_session
            .as_deref()
            .or(self.offered_session.as_deref())
    }

    /// Fold one progress event of this attempt.
    pub(crate) fn apply(&mut self, progress: &Progress) {
        self.last_active_at = self.last_active_at.max(progress.time);
        // Progress names the session it was in (the launch's until the
        // agent names its own, which comes first in the stream).
        if self.agent_session.is_none() && !progress.session_id().is_empty() {
            self.agent_session = Some(progress.session_id().to_owned());
        }
        match &progress.step {
            Step::Usage(u) => {
                self.turns = self.turns.saturating_add(1);
                self.usage.add(u);
            }
            Step::Text(t) => {
                let previous = self.last_text_role.as_ref().map(|role| LastPiece {
                    role: role.clone(),
                    full: self.last_text_full,
                });
                let effect = piece_effect(previous.as_ref(), &t.role, &t.text);
                self.messages = self.messages.saturating_add(i32::from(effect.new_message));
                // The latest result is the final one; a piece that
                // continues a result is the rest of it.
                if t.role == RESULT_ROLE {
                    self.result_text = Some(match (effect.continues, self.result_text.take()) {
                        (true, Some(before)) => before + &t.text,
                        _ => t.text.clone(),
                    });
                }
                self.last_text_role = Some(effect.last.role);
                self.last_text_full = effect.last.full;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_agent_protocols::TEXT_CHUNK_MAX_BYTES;
    use stratavore_events::process::{TextChunked, UsageReported};
    use uuid::Uuid;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn fresh(offered: Option<&str>) -> AttemptFacts {
        AttemptFacts {
            offered_session: offered.map(str::to_owned),
            agent_session: None,
            last_active_at: at(0),
            turns: 0,
            messages: 0,
            last_text_role: None,
            last_text_full: false,
            usage: UsageSums::default(),
            result_text: None,
        }
    }

    fn usage(s: i64, session: &str) -> Progress {
        Progress {
            id: Uuid::now_v7(),
            time: at(s),
            step: Step::Usage(UsageReported {
                runner_id: Uuid::nil(),
                attempt: 1,
                turn: 1,
                input_tokens: 10,
                output_tokens: 20,
                cache_creation_input_tokens: 1,
                cache_read_input_tokens: 2,
                cost_usd: 0.25,
                model: None,
                session_id: session.into(),
            }),
        }
    }

    fn text(s: i64, role: &str, body: &str) -> Progress {
        Progress {
            id: Uuid::now_v7(),
            time: at(s),
            step: Step::Text(TextChunked {
                runner_id: Uuid::nil(),
                attempt: 1,
                session_id: String::new(),
                role: role.into(),
                text: body.into(),
            }),
        }
    }

    #[test]
    fn turns_add_up_and_the_first_named_session_sticks() {
        let mut f = fresh(Some("offered"));
        assert_eq!(f.session_id(), Some("offered"));
        f.apply(&usage(5, ""));
        assert_eq!(f.session_id(), Some("offered"), "no name: the offer's");
        f.apply(&usage(9, "agent-1"));
        f.apply(&usage(7, "agent-2"));
        assert_eq!(f.session_id(), Some("agent-1"));
        assert_eq!(
            (f.turns, f.usage.input_tokens, f.usage.output_tokens),
            (3, 30, 60)
        );
        assert_eq!(
            (f.usage.cache_creation_tokens, f.usage.cache_read_tokens),
            (3, 6)
        );
        assert!((f.usage.cost_usd - 0.75).abs() < 1e-12);
        assert_eq!(
            f.last_active_at,
            at(9),
            "the latest time, not the last event's"
        );
    }

    #[test]
    fn a_message_cut_in_pieces_counts_once_and_a_result_counts_none() {
        let full = "x".repeat(TEXT_CHUNK_MAX_BYTES);
        let mut f = fresh(None);
        f.apply(&text(1, "user", "hi"));
        f.apply(&text(2, "assistant", &full));
        f.apply(&text(3, "assistant", "rest"));
        f.apply(&text(4, "assistant", "another"));
        f.apply(&text(5, "result", "done"));
        assert_eq!(f.messages, 3);
        assert_eq!(f.last_text_role.as_deref(), Some("result"));
        assert!(!f.last_text_full);
    }

    #[test]
    fn a_result_is_replaced_by_the_next_and_continued_by_its_rest() {
        let full = "r".repeat(TEXT_CHUNK_MAX_BYTES);
        let mut f = fresh(None);
        f.apply(&text(1, "result", "first"));
        f.apply(&text(2, "result", &full));
        f.apply(&text(3, "result", "tail"));
        assert_eq!(f.result_text, Some(format!("{full}tail")));
        f.apply(&text(4, "assistant", "more"));
        assert_eq!(
            f.result_text,
            Some(format!("{full}tail")),
            "other text keeps it"
        );
        f.apply(&text(5, "result", "second"));
        assert_eq!(f.result_text.as_deref(), Some("second"));
    }

    #[test]
    fn a_continuation_after_a_full_piece_read_from_the_row_appends() {
        // The row says the last piece was a full result (folded earlier,
        // in another batch): the next result piece is its rest.
        let mut f = fresh(None);
        f.last_text_role = Some("result".into());
        f.last_text_full = true;
        f.result_text = Some("head".into());
        f.apply(&text(1, "result", "rest"));
        assert_eq!(f.result_text.as_deref(), Some("headrest"));
        assert_eq!(f.messages, 0);
    }
}
