//! Budgets, decided: a client's create, update or delete against the
//! budget as it stands; which alerts a period's spending raises and
//! whether the runners in scope are stopped; and whether a launch must be
//! refused because a budget in its scope is exhausted. Pure: the shell
//! looks up the budget, the spending and the clock, and passes them in.

use chrono::{DateTime, Utc};
use stratavore_budgets::{AlertKind, Limits, Period, Spend, alerts_due, describe};
use stratavore_events::budget::{
    BudgetAction, BudgetAlert, BudgetChanged, BudgetCommand, BudgetDefinition, BudgetDeleted,
    BudgetEvent, BudgetRejected,
};
use uuid::Uuid;

/// What the shell looked up for a budget command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandFacts<'a> {
    /// The budget the command names, with whether it was deleted (a
    /// deleted budget keeps its id, so the id is never reused).
    pub existing: Option<(&'a BudgetDefinition, bool)>,
    /// With a create: whether the project, profile or runner the scope
    /// names exists (true for `global`).
    pub target_exists: bool,
    /// The orchestrator's `budgets.time_zone`, recorded in a new budget.
    pub time_zone: &'a str,
}

/// The budget a command names.
pub fn budget_of(cmd: &BudgetCommand) -> Uuid {
    match cmd {
        BudgetCommand::Create(c) => c.budget_id,
        BudgetCommand::Update(u) => u.budget_id,
        BudgetCommand::Delete(d) => d.budget_id,
    }
}

/// Decide a client's budget command: the change, or a rejection naming
/// why (and the field at fault, when one is).
pub fn decide_command(
    cmd: &BudgetCommand,
    command_id: Uuid,
    facts: &CommandFacts<'_>,
) -> BudgetEvent {
    let budget_id = budget_of(cmd);
    let reject = |reason: &str, field: Option<&str>, message: String| {
        BudgetEvent::Rejected(BudgetRejected {
            command_id,
            budget_id,
            reason: reason.to_owned(),
            field: field.map(str::to_owned),
            message,
        })
    };
    let live = facts
        .existing
        .filter(|(_, deleted)| !deleted)
        .map(|(b, _)| b);
    match cmd {
        BudgetCommand::Create(c) => {
            if facts.existing.is_some() {
                return reject(
                    "budget_exists",
                    Some("budget_id"),
                    format!("budget {budget_id} exists already"),
                );
            }
            let checked =
                stratavore_budgets::check_target(c.scope, c.target.as_deref()).and_then(|()| {
                    stratavore_budgets::check_limits(c.limit_tokens, c.limit_usd, c.warn_percent)
                });
            if let Err(bad) = checked {
                return reject("invalid", Some(bad.field), bad.message);
            }
            if !facts.target_exists {
                return reject(
                    "unknown_target",
                    Some("target"),
                    format!(
                        "no {} named {}",
                        c.scope.as_str(),
                        c.target.as_deref().unwrap_or_default()
                    ),
                );
            }
            BudgetEvent::Created(BudgetChanged {
                command_id,
                budget: BudgetDefinition {
                    budget_id,
                    scope: c.scope,
                    target: c.target.clone(),
                    period: c.period,
                    time_zone: facts.time_zone.to_owned(),
                    limit_tokens: c.limit_tokens,
                    limit_usd: c.limit_usd,
                    warn_percent: c.warn_percent,
                    action: c.action,
                },
            })
        }
        BudgetCommand::Update(u) => {
            let Some(current) = live else {
                return reject("not_found", None, format!("no budget {budget_id}"));
            };
            let mut next = current.clone();
            if let Some(tokens) = u.limit_tokens {
                next.limit_tokens = tokens;
            }
            if let Some(usd) = u.limit_usd {
                next.limit_usd = usd;
            }
            next.warn_percent = u.warn_percent.unwrap_or(next.warn_percent);
            next.action = u.action.unwrap_or(next.action);
            if let Err(bad) = stratavore_budgets::check_limits(
                next.limit_tokens,
                next.limit_usd,
                next.warn_percent,
            ) {
                return reject("invalid", Some(bad.field), bad.message);
            }
            BudgetEvent::Updated(BudgetChanged {
                command_id,
                budget: next,
            })
        }
        BudgetCommand::Delete(_) => match live {
            Some(_) => BudgetEvent::Deleted(BudgetDeleted {
                command_id,
                budget_id,
            }),
            None => reject("not_found", None, format!("no budget {budget_id}")),
        },
    }
}

/// The terminal answer to a budget command an operator skipped, so the
/// command still has an outcome.
pub fn skipped(budget_id: Uuid, command_id: Uuid) -> BudgetEvent {
    BudgetEvent::Rejected(BudgetRejected {
        command_id,
        budget_id,
        reason: "skipped_by_operator".to_owned(),
        field: None,
        message: "an operator skipped this command after it failed".to_owned(),
    })
}

/// A budget's spending in one period, as the shell summed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// The budget.
    pub budget: BudgetDefinition,
    /// The period.
    pub period: Period,
    /// What its scope spent in the period.
    pub spent: Spend,
}

/// What a budget's standing leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Alerts to raise, in order.
    pub alerts: Vec<AlertKind>,
    /// Whether the runners in scope are to be stopped: the limit was just
    /// reached, the budget says `stop`, and the period is the current one
    /// (spending that arrives late for a past period alerts, but a new
    /// period has its own allowance, so it stops nothing).
    pub stop_runners: bool,
}

/// Evaluate a standing, given the alerts already raised in its period and
/// the orchestrator's time.
pub fn evaluate(standing: &Standing, fired: &[AlertKind], now: DateTime<Utc>) -> Evaluation {
    let b = &standing.budget;
    let alerts = alerts_due(Limits::of(b), b.warn_percent, standing.spent, fired);
    let stop_runners = alerts.contains(&AlertKind::Exceeded)
        && b.action == BudgetAction::Stop
        && standing.period.contains(now);
    Evaluation {
        alerts,
        stop_runners,
    }
}

/// The event an alert is recorded as.
pub fn alert_event(
    kind: AlertKind,
    standing: &Standing,
    stopped_runners: Vec<Uuid>,
) -> BudgetEvent {
    let alert = BudgetAlert {
        budget_id: standing.budget.budget_id,
        period_start: standing.period.start,
        period_end: standing.period.end,
        used_tokens: standing.spent.tokens,
        used_usd: standing.spent.usd,
        limit_tokens: standing.budget.limit_tokens,
        limit_usd: standing.budget.limit_usd,
        stopped_runners,
    };
    match kind {
        AlertKind::Threshold => BudgetEvent::ThresholdReached(alert),
        AlertKind::Exceeded => BudgetEvent::Exceeded(alert),
    }
}

/// The first exhausted budget among a launch's budgets in scope (each
/// standing for the current period): the launch is refused while one is.
/// The action does not matter here: `warn` spares running runners, but no
/// budget lets new ones start once it is spent (DESIGN.md section 4).
pub fn exhausted(standings: &[Standing]) -> Option<&Standing> {
    standings
        .iter()
        .find(|s| Limits::of(&s.budget).exhausted(s.spent))
}

/// Why a launch is refused, naming the budget and when its period ends.
pub fn refusal_message(s: &Standing) -> String {
    let b = &s.budget;
    let mut used = Vec::new();
    if let Some(l) = b.limit_tokens {
        used.push(format!("{} of {l} tokens", s.spent.tokens));
    }
    if let Some(l) = b.limit_usd {
        used.push(format!("{:.4} of {l} USD", s.spent.usd));
    }
    format!(
        "budget {} ({}) is exhausted until {} ({} used); raise its limit or wait for the next period",
        b.budget_id,
        describe(b.period, b),
        s.period
            .end
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        used.join(", ")
    )
}

#[cfg(test)]
mod tests;
