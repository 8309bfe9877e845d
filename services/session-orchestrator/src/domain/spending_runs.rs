//! A run of spending decided at once: of consecutive received messages,
//! how many leading ones raise no budget alert (and so append nothing),
//! given each budget's standing before the run. The run's own spending is
//! added here, message by message in order, as folding each before the
//! next decision would add it; the shell sums the table once per budget
//! and period instead of once per message. Pure.

use super::budgets::{Standing, evaluate};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use stratavore_budgets::{AlertKind, Period, Spend, period_in_zone};
use stratavore_events::budget::{BudgetDefinition, BudgetScope};
use uuid::Uuid;

/// Whether a budget's scope holds a runner launched for `project` with
/// `profile` (and, when given, the runner itself).
pub fn covers(
    budget: &BudgetDefinition,
    project: &str,
    profile: &str,
    runner: Option<Uuid>,
) -> bool {
    let target = budget.target.as_deref();
    match budget.scope {
        BudgetScope::Global => true,
        BudgetScope::Project => target == Some(project),
        BudgetScope::Profile => target == Some(profile),
        BudgetScope::Runner => runner.is_some_and(|r| target == Some(r.to_string().as_str())),
    }
}

/// One message of a run: what it spends, when, and the budgets whose scope
/// holds its runner. A message that spends nothing (a text piece, a
/// spawn) has no budgets and is always quiet.
#[derive(Debug, Clone, PartialEq)]
pub struct Spending<'a> {
    /// The live budgets in scope.
    pub budgets: Vec<&'a BudgetDefinition>,
    /// What it adds.
    pub spend: Spend,
    /// The message's own time, which picks the period it counts in.
    pub at: DateTime<Utc>,
}

/// A budget's period as it stood before the run: what its scope had spent
/// (the run's messages left out) and the alerts it had raised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Before {
    /// Spent in the period.
    pub spent: Spend,
    /// Alerts raised in the period.
    pub fired: Vec<AlertKind>,
}

/// The key of a budget's period.
pub type PeriodKey = (Uuid, DateTime<Utc>);

fn period_of(budget: &BudgetDefinition, at: DateTime<Utc>) -> Period {
    period_in_zone(budget.period, &budget.time_zone, at)
}

/// Each budget and period the run's spending falls in, once: what the
/// shell looks up before the run.
pub fn periods_touched<'a>(run: &[Spending<'a>]) -> Vec<(&'a BudgetDefinition, Period)> {
    let mut touched: Vec<(&'a BudgetDefinition, Period)> = Vec::new();
    for spending in run {
        for &budget in &spending.budgets {
            let period = period_of(budget, spending.at);
            if !touched
                .iter()
                .any(|(b, p)| b.budget_id == budget.budget_id && p.start == period.start)
            {
                touched.push((budget, period));
            }
        }
    }
    touched
}

/// How many leading messages of the run raise no alert, each judged with
/// the spending of the messages before it in the run added to `before`,
/// as `evaluate` judges one message (at the orchestrator's time `now`). A
/// period missing from `before` ends the quiet part there.
pub fn quiet_prefix(
    run: &[Spending<'_>],
    before: &HashMap<PeriodKey, Before>,
    now: DateTime<Utc>,
) -> usize {
    let mut added: HashMap<PeriodKey, Spend> = HashMap::new();
    for (i, spending) in run.iter().enumerate() {
        for &budget in &spending.budgets {
            let period = period_of(budget, spending.at);
            let key = (budget.budget_id, period.start);
            let Some(base) = before.get(&key) else {
                return i;
            };
            let in_run = added.entry(key).or_default();
            *in_run = in_run.plus(spending.spend);
            let standing = Standing {
                budget: budget.clone(),
                period,
                spent: base.spent.plus(*in_run),
            };
            if !evaluate(&standing, &base.fired, now).alerts.is_empty() {
                return i;
            }
        }
    }
    run.len()
}

#[cfg(test)]
mod tests;
