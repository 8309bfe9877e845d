//! Codex usage accounting: `turn.completed` carries the thread's running
//! total, in OpenAI's terms; this turns it into what each turn spent, in
//! ours.

use serde_json::{Map, Value};

use crate::TokenUsage;

/// A `turn.completed` usage in our terms.
///
/// Codex counts like the OpenAI API: `input_tokens` is every input token,
/// the cached ones (`cached_input_tokens`) and, where a provider reports
/// them, the cache writes (`cache_write_input_tokens`) included; and
/// `output_tokens` already holds `reasoning_output_tokens`, which is only
/// its breakdown. So uncached input is what is left of the input once both
/// cache counters are taken out, and reasoning is never added. A counter
/// that is absent, negative or not a whole number counts as 0.
pub(crate) fn usage_of(usage: &Map<String, Value>) -> TokenUsage {
    let counter = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = counter("cached_input_tokens");
    let cache_writes = counter("cache_write_input_tokens");
    TokenUsage {
        input_tokens: counter("input_tokens")
            .saturating_sub(cached)
            .saturating_sub(cache_writes),
        output_tokens: counter("output_tokens"),
        cache_creation_input_tokens: cache_writes,
        cache_read_input_tokens: cached,
    }
}

/// The thread's running total, as far as this output and the launch tell.
///
/// Each report is a running total of the thread (summed over every model
/// request, earlier runs of a resumed thread included), so what a turn
/// spent is what the total grew by since the last known one, the first
/// time since the launch's baseline.
///
/// No counter of a running total shrinks while it keeps adding up, so a
/// report with any counter below the known total is not the same sum
/// continued: Codex restarted it (it does after a context-window overflow,
/// where `TokenUsageInfo::fill_to_context_window` zeroes the counters), or
/// the baseline was not this thread's. Such a report counts whole, as what
/// was spent since the restart, and becomes the known total. So nothing is
/// ever negative or wrapped around, a replay gives the same numbers, and a
/// restart is not mistaken for a turn that spent nothing.
#[derive(Debug, Default)]
pub(crate) struct ThreadTotal {
    known: TokenUsage,
}

impl ThreadTotal {
    /// A thread whose last known total is `baseline` (zero for a new one).
    pub(crate) fn from_baseline(baseline: TokenUsage) -> Self {
        Self { known: baseline }
    }

    /// Takes in a new running total and returns what was spent since the
    /// last one.
    pub(crate) fn advance(&mut self, reported: TokenUsage) -> TokenUsage {
        let known = std::mem::replace(&mut self.known, reported);
        let continues = reported.max_each(known) == reported;
        if !continues {
            return reported;
        }
        // Every counter is at least the known one here.
        let rise = |now: u64, before: u64| now.saturating_sub(before);
        TokenUsage {
            input_tokens: rise(reported.input_tokens, known.input_tokens),
            output_tokens: rise(reported.output_tokens, known.output_tokens),
            cache_creation_input_tokens: rise(
                reported.cache_creation_input_tokens,
                known.cache_creation_input_tokens,
            ),
            cache_read_input_tokens: rise(
                reported.cache_read_input_tokens,
                known.cache_read_input_tokens,
            ),
        }
    }

    /// The last known total: the baseline a later resume starts from.
    pub(crate) fn total(&self) -> TokenUsage {
        self.known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, creation: u64, read: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: creation,
            cache_read_input_tokens: read,
        }
    }

    fn parsed(json: &str) -> TokenUsage {
        let value: Value = serde_json::from_str(json).unwrap();
        usage_of(value.as_object().unwrap())
    }

    #[test]
    fn cached_input_is_taken_out_of_input_never_added() {
        assert_eq!(
            parsed(r#"{"input_tokens":48213,"cached_input_tokens":40960,"output_tokens":1874}"#),
            usage(7253, 1874, 0, 40960)
        );
    }

    #[test]
    fn reasoning_is_already_inside_output() {
        assert_eq!(
            parsed(
                r#"{"input_tokens":10,"cached_input_tokens":0,"output_tokens":900,"reasoning_output_tokens":700}"#
            ),
            usage(10, 900, 0, 0)
        );
    }

    #[test]
    fn cache_writes_are_inside_input_and_counted_as_cache_creation() {
        assert_eq!(
            parsed(
                r#"{"input_tokens":17102,"cached_input_tokens":9984,"cache_write_input_tokens":2000,"output_tokens":5}"#
            ),
            usage(5118, 5, 2000, 9984)
        );
    }

    #[test]
    fn bad_counters_count_as_zero_and_never_underflow() {
        assert_eq!(
            parsed(r#"{"input_tokens":5,"cached_input_tokens":9,"output_tokens":-3}"#),
            usage(0, 0, 0, 9)
        );
        assert_eq!(parsed(r#"{"input_tokens":"many"}"#), TokenUsage::default());
    }

    #[test]
    fn each_turn_spends_what_the_running_total_grew_by() {
        let mut total = ThreadTotal::default();
        assert_eq!(total.advance(usage(100, 10, 0, 50)), usage(100, 10, 0, 50));
        assert_eq!(total.advance(usage(130, 25, 0, 90)), usage(30, 15, 0, 40));
        assert_eq!(total.total(), usage(130, 25, 0, 90));
    }

    #[test]
    fn a_resumed_thread_counts_from_its_baseline() {
        let mut total = ThreadTotal::from_baseline(usage(100, 10, 0, 50));
        assert_eq!(total.advance(usage(130, 25, 0, 90)), usage(30, 15, 0, 40));
    }

    #[test]
    fn a_total_that_goes_down_restarted_and_counts_whole() {
        let mut total = ThreadTotal::from_baseline(usage(100, 10, 0, 50));
        // After a context-window overflow Codex's counters start again
        // from zero: nothing negative, nothing wrapped around.
        assert_eq!(total.advance(usage(40, 12, 0, 20)), usage(40, 12, 0, 20));
        assert_eq!(total.total(), usage(40, 12, 0, 20));
        // And the restarted total is counted on from.
        assert_eq!(total.advance(usage(70, 12, 0, 60)), usage(30, 0, 0, 40));
        assert_eq!(total.total(), usage(70, 12, 0, 60));
    }

    #[test]
    fn one_counter_going_down_is_enough_to_restart() {
        let mut total = ThreadTotal::from_baseline(usage(100, 10, 0, 50));
        assert_eq!(total.advance(usage(500, 9, 0, 400)), usage(500, 9, 0, 400));
    }

    #[test]
    fn the_same_total_again_spent_nothing() {
        let mut total = ThreadTotal::from_baseline(usage(100, 10, 0, 50));
        assert_eq!(total.advance(usage(100, 10, 0, 50)), TokenUsage::default());
    }
}
