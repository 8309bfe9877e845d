//! What an error result means: a limit to wait out, or a failure.

use crate::Outcome;

/// One way an agent says it hit a rate or usage limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPattern {
    /// A phrase anywhere in the text, ignoring ASCII case.
    Phrase(&'static str),
    /// An HTTP status standing alone in the text (not part of a longer
    /// number, so "4290 files" is no rate limit).
    Status(&'static str),
}

/// Every text that marks a rate or usage limit, in one place so that a new
/// wording of the CLI is one line here (and one test).
pub const LIMIT_PATTERNS: &[LimitPattern] = &[
    // "Claude AI usage limit reached|1760000000", "Claude usage limit reached."
    LimitPattern::Phrase("usage limit"),
    // "API Error: Rate limit reached", "rate_limit_error" in an API error body
    LimitPattern::Phrase("rate limit"),
    LimitPattern::Phrase("rate_limit"),
    // "5-hour limit reached ∙ resets 3pm", "Weekly limit reached"
    LimitPattern::Phrase("limit reached"),
    // "You've hit your limit · resets 3pm"
    LimitPattern::Phrase("hit your limit"),
    LimitPattern::Phrase("too many requests"),
    LimitPattern::Status("429"),
];

/// The value of an assistant line's `error` field that marks a limit.
const ASSISTANT_LIMIT_ERROR: &str = "rate_limit";

/// The HTTP status of a limit, as the result's `api_error_status` gives it.
const LIMIT_STATUS: u64 = 429;

/// Whether `text` matches one of [`LIMIT_PATTERNS`].
#[must_use]
pub fn mentions_limit(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    LIMIT_PATTERNS.iter().any(|pattern| match pattern {
        LimitPattern::Phrase(phrase) => lower.contains(phrase),
        LimitPattern::Status(status) => contains_standalone_number(&lower, status),
    })
}

fn contains_standalone_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The reset time in `text`: the CLI writes a usage limit as
/// `Claude AI usage limit reached|<unix seconds>`.
#[must_use]
pub fn resets_at(text: &str) -> Option<i64> {
    let (_, after) = text.split_once('|')?;
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

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
        .unwrap_or("the agent reported an error without a message")
        .to_owned();
    let limited = signals.api_error_status == Some(LIMIT_STATUS)
        || signals.assistant_error == Some(ASSISTANT_LIMIT_ERROR)
        || signals.text.is_some_and(mentions_limit);
    if limited {
        Outcome::RateLimited {
            resets_at: signals.text.and_then(resets_at),
            message,
        }
    } else {
        Outcome::Failed { reason: message }
    }
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
    fn every_limit_wording_is_recognised() {
        for text in [
            "Claude AI usage limit reached|1760000000",
            "Claude usage limit reached. Your limit will reset at 3pm (Europe/Paris).",
            "API Error: Rate limit reached",
            r#"API Error: 429 {"type":"error","error":{"type":"rate_limit_error"}}"#,
            "5-hour limit reached ∙ resets 3pm",
            "Weekly limit reached ∙ resets Mon 9am",
            "You've hit your limit · resets 3pm",
            "Too Many Requests",
            "HTTP 429",
        ] {
            assert!(mentions_limit(text), "{text}");
            assert!(
                matches!(error_with_text(text), Outcome::RateLimited { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn other_errors_are_failures_with_the_agents_words() {
        for text in [
            "Not logged in · Please run /login",
            "Invalid API key · Please run /login",
            "processed 4290 files then failed",
            "API Error: 529 Overloaded",
        ] {
            assert!(!mentions_limit(text), "{text}");
            assert_eq!(
                error_with_text(text),
                Outcome::Failed {
                    reason: text.to_owned()
                }
            );
        }
    }

    #[test]
    fn the_reset_time_is_read_after_the_bar() {
        assert_eq!(
            resets_at("Claude AI usage limit reached|1760000000"),
            Some(1_760_000_000)
        );
        assert_eq!(resets_at("Claude usage limit reached."), None);
        assert_eq!(resets_at("a|b"), None);
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
