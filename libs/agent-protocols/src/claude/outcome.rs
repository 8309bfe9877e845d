//! What an error result means: a limit to wait out, or a failure.

use crate::Outcome;
use crate::limits::{LIMIT_STATUS, error_outcome};

/// The value of an assistant line's `error` field that marks a limit.
const ASSISTANT_LIMIT_ERROR: &str = "rate_limit";

/// What the end of a run means, from the parts of the output that tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultSignals<'a> {
    /// The result's `is_error`: it alone decides success or failure.
    pub is_error: bool,
    /// The result text (or its `errors`, joined).
    pub text: Option<&'a str>,
    /// The result's `subtype`, for a reason when there is no text.
    pub subtype: Option<&'a str>,
    /// The result's `api_error_status`.
    pub api_error_status: Option<u64>,
    /// The `error` field of the last assistant line that had one.
    pub assistant_error: Option<&'a str>,
}

/// Classifies the end of a run.
#[must_use]
pub fn classify(signals: ResultSignals<'_>) -> Outcome {
    if !signals.is_error {
        return Outcome::Succeeded;
    }
    let message = signals
        .text
        .filter(|t| !t.trim().is_empty())
        .or(signals.subtype)
        .unwrap_or("the agent reported an error without a message");
    // The text's own wording is checked by `error_outcome`.
    let limited = signals.api_error_status == Some(LIMIT_STATUS)
        || signals.assistant_error == Some(ASSISTANT_LIMIT_ERROR);
    error_outcome(message, limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_with_text(text: &str) -> Outcome {
        classify(ResultSignals {
            is_error: true,
            text: Some(text),
            ..ResultSignals::default()
        })
    }

    #[test]
    fn a_limit_in_the_result_text_waits_with_its_reset_time() {
        assert_eq!(
            error_with_text("Claude AI usage limit reached|1760000000"),
            Outcome::RateLimited {
                resets_at: Some(1_760_000_000),
                message: "Claude AI usage limit reached|1760000000".into()
            }
        );
    }

    #[test]
    fn other_error_text_is_a_failure_with_the_agents_words() {
        assert_eq!(
            error_with_text("Not logged in · Please run /login"),
            Outcome::Failed {
                reason: "Not logged in · Please run /login".into()
            }
        );
    }

    #[test]
    fn is_error_false_succeeds_whatever_the_text_says() {
        let outcome = classify(ResultSignals {
            is_error: false,
            text: Some("usage limit reached"),
            subtype: Some("error_during_execution"),
            ..ResultSignals::default()
        });
        assert_eq!(outcome, Outcome::Succeeded);
    }

    #[test]
    fn a_429_status_or_an_assistant_rate_limit_error_is_a_limit_whatever_the_text() {
        let by_status = classify(ResultSignals {
            is_error: true,
            text: Some("API Error"),
            api_error_status: Some(429),
            ..ResultSignals::default()
        });
        let by_assistant = classify(ResultSignals {
            is_error: true,
            text: Some("Something went wrong"),
            assistant_error: Some("rate_limit"),
            ..ResultSignals::default()
        });
        for outcome in [by_status, by_assistant] {
            assert!(matches!(
                outcome,
                Outcome::RateLimited {
                    resets_at: None,
                    ..
                }
            ));
        }
    }

    #[test]
    fn an_error_without_text_gives_its_subtype_as_reason() {
        let outcome = classify(ResultSignals {
            is_error: true,
            subtype: Some("error_max_turns"),
            ..ResultSignals::default()
        });
        assert_eq!(
            outcome,
            Outcome::Failed {
                reason: "error_max_turns".into()
            }
        );
    }
}
