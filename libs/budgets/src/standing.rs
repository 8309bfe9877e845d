//! What a budget's usage means: how much of it is spent, whether it is
//! exhausted, which alerts are due. Pure arithmetic over what the shell
//! summed, shared by the orchestrator (which decides) and the gateway
//! (which shows).

use stratavore_events::budget::{BudgetDefinition, BudgetPeriod};
use stratavore_events::process::{ProcessCostReconciled, UsageReported};

/// Tokens and USD spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Tokens (input, output, cache creation and cache reads).
    pub tokens: u64,
    /// USD: the priced figure until the agent's own replaces it.
    pub usd: f64,
}

impl Spend {
    /// The two added up (a negative USD delta of a reconciliation lowers it).
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_add(other.tokens),
            usd: self.usd + other.usd,
        }
    }
}

/// What one agent turn adds: every token the model handled (cache reads
/// included: they are tokens the provider counts and bills) and its
/// priced cost.
pub fn spend_of_usage(u: &UsageReported) -> Spend {
    Spend {
        tokens: u
            .input_tokens
            .saturating_add(u.output_tokens)
            .saturating_add(u.cache_creation_input_tokens)
            .saturating_add(u.cache_read_input_tokens),
        usd: finite(u.cost_usd),
    }
}

/// What a reconciliation adds: the agent's own figure replaces the priced
/// sum of the attempt, so the difference is added (no tokens).
pub fn spend_of_reconciliation(c: &ProcessCostReconciled) -> Spend {
    Spend {
        tokens: 0,
        usd: finite(c.reported_cost_usd) - finite(c.priced_cost_usd),
    }
}

/// A NaN or infinite figure from a node counts as nothing rather than
/// poisoning every sum it joins.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// A budget's limits; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Tokens per period.
    pub tokens: Option<u64>,
    /// USD per period.
    pub usd: Option<f64>,
}

impl Limits {
    /// The limits of a definition.
    pub fn of(budget: &BudgetDefinition) -> Limits {
        Limits {
            tokens: budget.limit_tokens,
            usd: budget.limit_usd,
        }
    }

    /// The largest share of a limit spent (1.0 = at the limit); 0 with no
    /// limit.
    pub fn ratio(&self, spent: Spend) -> f64 {
        let tokens = self
            .tokens
            .map(|l| spent.tokens as f64 / (l.max(1) as f64))
            .unwrap_or(0.0);
        let usd = self
            .usd
            .filter(|l| *l > 0.0)
            .map(|l| spent.usd / l)
            .unwrap_or(0.0);
        tokens.max(usd).max(0.0)
    }

    /// Whether a limit is reached: nothing remains, so launches in scope
    /// are refused.
    pub fn exhausted(&self, spent: Spend) -> bool {
        self.tokens.is_some_and(|l| spent.tokens >= l) || self.usd.is_some_and(|l| spent.usd >= l)
    }

    /// What remains of each limit (never below zero).
    pub fn remaining(&self, spent: Spend) -> (Option<u64>, Option<f64>) {
        (
            self.tokens.map(|l| l.saturating_sub(spent.tokens)),
            self.usd.map(|l| (l - spent.usd).max(0.0)),
        )
    }
}

/// An alert a budget raises at most once per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// The warning threshold was reached.
    Threshold,
    /// A limit was reached.
    Exceeded,
}

impl AlertKind {
    /// The name the tables and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold_reached",
            Self::Exceeded => "exceeded",
        }
    }

    /// Parse [`AlertKind::as_str`].
    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "threshold_reached" => Some(Self::Threshold),
            "exceeded" => Some(Self::Exceeded),
            _ => None,
        }
    }
}

/// The alerts now due for a period in which `spent` is used and `fired`
/// have fired already: each condition that holds and has not fired, the
/// threshold before the limit (a jump past both raises both). Deciding on
/// the standing rather than on a crossing makes a lowered limit or
/// threshold fire too, and a repeated evaluation fire nothing new.
pub fn alerts_due(
    limits: Limits,
    warn_percent: u8,
    spent: Spend,
    fired: &[AlertKind],
) -> Vec<AlertKind> {
    let mut due = Vec::new();
    let threshold = limits.ratio(spent) * 100.0 >= f64::from(warn_percent);
    if (threshold || limits.exhausted(spent)) && !fired.contains(&AlertKind::Threshold) {
        due.push(AlertKind::Threshold);
    }
    if limits.exhausted(spent) && !fired.contains(&AlertKind::Exceeded) {
        due.push(AlertKind::Exceeded);
    }
    due
}

/// How the API words a budget's standing.
pub fn state_name(limits: Limits, warn_percent: u8, spent: Spend) -> &'static str {
    if limits.exhausted(spent) {
        "exceeded"
    } else if limits.ratio(spent) * 100.0 >= f64::from(warn_percent) {
        "warning"
    } else {
        "ok"
    }
}

/// A short description of a budget for messages: `daily project web`.
pub fn describe(period: BudgetPeriod, budget: &BudgetDefinition) -> String {
    match &budget.target {
        Some(target) => format!("{} {} {target}", period.as_str(), budget.scope.as_str()),
        None => format!("{} {}", period.as_str(), budget.scope.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u64) -> Spend {
        Spend {
            tokens: n,
            usd: 0.0,
        }
    }

    const THOUSAND: Limits = Limits {
        tokens: Some(1000),
        usd: None,
    };

    #[test]
    fn the_threshold_fires_at_its_percent_and_the_limit_at_the_limit() {
        assert!(alerts_due(THOUSAND, 80, tokens(799), &[]).is_empty());
        assert_eq!(
            alerts_due(THOUSAND, 80, tokens(800), &[]),
            [AlertKind::Threshold]
        );
        assert_eq!(
            alerts_due(THOUSAND, 80, tokens(1000), &[AlertKind::Threshold]),
            [AlertKind::Exceeded]
        );
    }

    #[test]
    fn a_jump_past_both_raises_the_warning_then_the_limit() {
        assert_eq!(
            alerts_due(THOUSAND, 80, tokens(5000), &[]),
            [AlertKind::Threshold, AlertKind::Exceeded]
        );
    }

    #[test]
    fn an_alert_that_fired_in_the_period_does_not_fire_again() {
        let fired = [AlertKind::Threshold, AlertKind::Exceeded];
        assert!(alerts_due(THOUSAND, 80, tokens(9000), &fired).is_empty());
    }

    #[test]
    fn either_limit_exhausts_a_budget_with_both() {
        let both = Limits {
            tokens: Some(1000),
            usd: Some(2.0),
        };
        let cheap_but_many = tokens(1000);
        let few_but_dear = Spend {
            tokens: 10,
            usd: 2.5,
        };
        assert!(both.exhausted(cheap_but_many));
        assert!(both.exhausted(few_but_dear));
        assert!(!both.exhausted(Spend {
            tokens: 999,
            usd: 1.99
        }));
        assert_eq!(both.remaining(few_but_dear), (Some(990), Some(0.0)));
    }

    #[test]
    fn a_reconciliation_adds_the_difference_from_the_priced_figure() {
        let c = ProcessCostReconciled {
            runner_id: uuid::Uuid::nil(),
            attempt: 1,
            priced_cost_usd: 1.5,
            reported_cost_usd: 1.2,
        };
        let s = spend_of_reconciliation(&c);
        assert_eq!(s.tokens, 0);
        assert!((s.usd + 0.3).abs() < 1e-9);
    }

    #[test]
    fn a_usage_report_counts_every_kind_of_token() {
        let u = UsageReported {
            runner_id: uuid::Uuid::nil(),
            attempt: 1,
            turn: 1,
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
            cost_usd: f64::NAN,
            model: None,
            session_id: String::new(),
        };
        assert_eq!(
            spend_of_usage(&u),
            Spend {
                tokens: 10,
                usd: 0.0
            }
        );
    }

    #[test]
    fn the_state_names_the_worst_of_the_two() {
        assert_eq!(state_name(THOUSAND, 80, tokens(10)), "ok");
        assert_eq!(state_name(THOUSAND, 80, tokens(850)), "warning");
        assert_eq!(state_name(THOUSAND, 80, tokens(1000)), "exceeded");
    }
}
