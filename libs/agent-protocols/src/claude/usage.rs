//! Turn accounting: the largest usage seen per message, summed per turn,
//! each message counted once.

use std::collections::{HashMap, HashSet};

use crate::TokenUsage;

/// The totals of one turn, ready to be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnTotals {
    pub(crate) turn: u32,
    pub(crate) message_ids: Vec<String>,
    pub(crate) usage: TokenUsage,
    pub(crate) model: Option<String>,
}

/// Folds message usage into turns.
///
/// Claude Code prints one line per content block of a message, each with a
/// copy of the message's usage, and the early copies can be partial; so a
/// message's usage is only final once its turn is over, and it is the
/// largest value of each counter seen, not the sum of the copies.
#[derive(Debug, Default)]
pub(crate) struct TurnLedger {
    /// Messages of the open turn, in first-seen order (facts must not
    /// depend on hash order).
    open_ids: Vec<String>,
    open_usage: HashMap<String, TokenUsage>,
    open_model: Option<String>,
    /// Messages of turns already reported: a late copy must not bill again.
    reported: HashSet<String>,
    turns: u32,
    reported_total: TokenUsage,
}

impl TurnLedger {
    /// Records one copy of a message's usage. Returns false, and changes
    /// nothing, when the message belongs to a turn already reported.
    pub(crate) fn record(&mut self, id: &str, usage: TokenUsage, model: Option<&str>) -> bool {
        if self.reported.contains(id) {
            return false;
        }
        match self.open_usage.get_mut(id) {
            Some(seen) => *seen = seen.max_each(usage),
            None => {
                self.open_ids.push(id.to_owned());
                self.open_usage.insert(id.to_owned(), usage);
            }
        }
        if let Some(model) = model {
            self.open_model = Some(model.to_owned());
        }
        true
    }

    /// Closes the open turn and returns its totals; `None` when no message
    /// arrived since the last turn ended.
    pub(crate) fn end_turn(&mut self) -> Option<TurnTotals> {
        if self.open_ids.is_empty() {
            return None;
        }
        let message_ids = std::mem::take(&mut self.open_ids);
        let usage = message_ids
            .iter()
            .filter_map(|id| self.open_usage.get(id))
            .fold(TokenUsage::default(), |sum, u| sum.saturating_add(*u));
        self.open_usage.clear();
        self.reported.extend(message_ids.iter().cloned());
        self.turns = self.turns.saturating_add(1);
        self.reported_total = self.reported_total.saturating_add(usage);
        Some(TurnTotals {
            turn: self.turns,
            message_ids,
            usage,
            model: self.open_model.take(),
        })
    }

    /// Usage of every message seen so far, reported or still open.
    pub(crate) fn counted_total(&self) -> TokenUsage {
        self.open_usage
            .values()
            .fold(self.reported_total, |sum, u| sum.saturating_add(*u))
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

    #[test]
    fn repeated_copies_count_the_largest_value_of_each_counter_once() {
        let mut ledger = TurnLedger::default();
        ledger.record("m1", usage(10, 1, 0, 500), Some("a"));
        ledger.record("m1", usage(10, 40, 200, 0), Some("a"));
        ledger.record("m1", usage(3, 7, 0, 0), Some("a"));
        let turn = ledger.end_turn();
        assert_eq!(
            turn,
            Some(TurnTotals {
                turn: 1,
                message_ids: vec!["m1".into()],
                usage: usage(10, 40, 200, 500),
                model: Some("a".into()),
            })
        );
    }

    #[test]
    fn a_turn_sums_its_messages() {
        let mut ledger = TurnLedger::default();
        ledger.record("m1", usage(1, 2, 3, 4), None);
        ledger.record("m2", usage(10, 20, 30, 40), None);
        let turn = ledger.end_turn().map(|t| (t.message_ids, t.usage));
        assert_eq!(
            turn,
            Some((vec!["m1".into(), "m2".into()], usage(11, 22, 33, 44)))
        );
    }

    #[test]
    fn a_message_seen_again_after_its_turn_is_not_counted_again() {
        let mut ledger = TurnLedger::default();
        ledger.record("m1", usage(1, 1, 1, 1), None);
        assert!(ledger.end_turn().is_some());
        assert!(!ledger.record("m1", usage(9, 9, 9, 9), None));
        assert_eq!(ledger.end_turn(), None);
        assert_eq!(ledger.counted_total(), usage(1, 1, 1, 1));
    }

    #[test]
    fn ending_a_turn_with_no_messages_reports_nothing() {
        let mut ledger = TurnLedger::default();
        assert_eq!(ledger.end_turn(), None);
        ledger.record("m1", TokenUsage::default(), None);
        assert_eq!(ledger.end_turn().map(|t| t.turn), Some(1));
    }

    #[test]
    fn the_counted_total_includes_the_open_turn() {
        let mut ledger = TurnLedger::default();
        ledger.record("m1", usage(1, 0, 0, 0), None);
        ledger.end_turn();
        ledger.record("m2", usage(2, 0, 0, 0), None);
        assert_eq!(ledger.counted_total(), usage(3, 0, 0, 0));
    }
}
