//! The wording agents use for a rate or usage limit, shared by every parser
//! so that a limit is recognised the same way whichever CLI hit it.

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
/// wording of a CLI is one line here (and one test).
pub const LIMIT_PATTERNS: &[LimitPattern] = &[
    // Claude: "Claude AI usage limit reached|1760000000", "Claude usage limit
    // reached."; Codex: "You've hit your usage limit. ... try again at 3:28 PM."
    LimitPattern::Phrase("usage limit"),
    // "API Error: Rate limit reached", "rate_limit_error" in an API error body
    LimitPattern::Phrase("rate limit"),
    LimitPattern::Phrase("rate_limit"),
    // "5-hour limit reached ∙ resets 3pm", "Weekly limit reached"
    LimitPattern::Phrase("limit reached"),
    // "You've hit your limit · resets 3pm"
    LimitPattern::Phrase("hit your limit"),
    // Codex: "exceeded retry limit, last status: 429 Too Many Requests"
    LimitPattern::Phrase("too many requests"),
    LimitPattern::Status("429"),
];

/// The HTTP status of a limit, where an agent gives the status as a number.
pub const LIMIT_STATUS: u64 = 429;

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

/// The reset time in `text`, when the agent wrote it as a timestamp: Claude
/// Code writes a usage limit as `Claude AI usage limit reached|<unix
/// seconds>`. Wall-clock wordings ("try again at 3:28 PM") give `None`: they
/// lack the date and zone, and a parser has no clock to complete them.
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

/// What an error that ended a run means: a limit to wait out when
/// `limited` or when `message` words one, a failure otherwise; either way
/// with the agent's own words.
#[must_use]
pub fn error_outcome(message: &str, limited: bool) -> Outcome {
    if limited || mentions_limit(message) {
        Outcome::RateLimited {
            resets_at: resets_at(message),
            message: message.to_owned(),
        }
    } else {
        Outcome::Failed {
            reason: message.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_wording_is_recognised() {
        for text in [
            "Claude AI usage limit reached|1760000000",
            "Claude usage limit reached. Your limit will reset at 3pm (Europe/Paris).",
            "API Error: Rate limit reached",
            r#"API Error: 429 {"type":"error","error":{"type":"rate_limit_error"}}"#,
            "5-hour limit reached ∙ resets 5pm",
            "Weekly limit reached ∙ resets Mon 9am",
            "You've hit your limit · resets 3pm",
            "Too Many Requests",
            "HTTP 429",
            "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), \
             visit https://chatgpt.com/codex/settings/usage to purchase more credits or try \
             again at 3:28 PM.",
            "exceeded retry limit, last status: 429 Too Many Requests",
        ] {
            assert!(mentions_limit(text), "{text}");
            assert!(
                matches!(error_outcome(text, false), Outcome::RateLimited { .. }),
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
            "Codex ran out of room in the model's context window. Start a new thread or \
             clear earlier history before retrying.",
            "exceeded retry limit, last status: 500 Internal Server Error",
        ] {
            assert!(!mentions_limit(text), "{text}");
            assert_eq!(
                error_outcome(text, false),
                Outcome::Failed {
                    reason: text.to_owned()
                }
            );
        }
    }

    #[test]
    fn a_limit_flag_makes_any_message_a_limit() {
        assert_eq!(
            error_outcome("You exceeded your current quota", true),
            Outcome::RateLimited {
                resets_at: None,
                message: "You exceeded your current quota".into()
            }
        );
    }

    #[test]
    fn the_reset_time_is_read_after_the_bar() {
        assert_eq!(
            resets_at("Claude AI usage limit reached|1760000000"),
            Some(1_760_000_000)
        );
        assert_eq!(resets_at("Claude usage limit reached."), None);
        assert_eq!(resets_at("try again at 3:28 PM."), None);
        assert_eq!(resets_at("a|b"), None);
    }
}
