//! Budgets: spending limits over calendar periods. Clients ask through
//! commands; the session-orchestrator is the one writer of a budget's
//! stream (`budget-<id>`): its definition, and the alerts it raised.

use crate::message_macro::message_family;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a budget counts: everything, or the runners of one project, one
/// profile or one runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Every runner.
    Global,
    /// The runners of the project named by `target`.
    Project,
    /// The runners of the agent profile named by `target`.
    Profile,
    /// The one runner whose id is `target`.
    Runner,
}

impl BudgetScope {
    /// The name the API and the tables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Project => "project",
            Self::Profile => "profile",
            Self::Runner => "runner",
        }
    }
}

/// The calendar period a budget's usage is counted over, in the budget's
/// time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From the start of each hour.
    Hourly,
    /// From each midnight.
    Daily,
    /// From each Monday's midnight.
    Weekly,
    /// From midnight on the first of each month.
    Monthly,
}

impl BudgetPeriod {
    /// The name the API and the tables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
}

/// What happens once a budget is exhausted, besides refusing launches in
/// its scope (which always happens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Only the alerts: runners in scope run on.
    Warn,
    /// The runners in scope are stopped gracefully, their sessions left
    /// resumable.
    Stop,
}

impl BudgetAction {
    /// The name the API and the tables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Stop => "stop",
        }
    }
}

/// Create a budget (the gateway sends it; the orchestrator decides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudget {
    /// The budget's id, assigned by the gateway.
    pub budget_id: Uuid,
    /// What it counts.
    pub scope: BudgetScope,
    /// The project name, profile name or runner id the scope names; none
    /// for `global`.
    #[serde(default)]
    pub target: Option<String>,
    /// The period usage is counted over.
    pub period: BudgetPeriod,
    /// Tokens (input, output and cache, all counted) allowed per period.
    #[serde(default)]
    pub limit_tokens: Option<u64>,
    /// USD allowed per period.
    #[serde(default)]
    pub limit_usd: Option<f64>,
    /// The share of a limit, in percent, at which the warning fires.
    pub warn_percent: u8,
    /// What an exhausted budget does to the runners in scope.
    pub action: BudgetAction,
}

/// Change a budget's limits, warning threshold or action. Scope and period
/// are what the budget is: they do not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudget {
    /// The budget.
    pub budget_id: Uuid,
    /// New token limit: absent leaves it, null removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<u64>")]
    pub limit_tokens: Option<Option<u64>>,
    /// New USD limit: absent leaves it, null removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<f64>")]
    pub limit_usd: Option<Option<f64>>,
    /// New warning threshold in percent; absent leaves it.
    #[serde(default)]
    pub warn_percent: Option<u8>,
    /// New action; absent leaves it.
    #[serde(default)]
    pub action: Option<BudgetAction>,
}

/// Delete a budget: the payload names only the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRef {
    /// The budget.
    pub budget_id: Uuid,
}

/// `Option<Option<T>>` that tells an absent field (outer None, with
/// `serde(default)`) from an explicit null (`Some(None)`): a PATCH uses
/// null to remove a limit.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

message_family! {
    /// Commands about budgets, handled by the session-orchestrator.
    pub enum BudgetCommand: Command {
        /// Create a budget.
        Create(CreateBudget) => "io.stratavore.command.budget.create.v1", "session-orchestrator.budget.create";
        /// Change a budget.
        Update(UpdateBudget) => "io.stratavore.command.budget.update.v1", "session-orchestrator.budget.update";
        /// Delete a budget.
        Delete(BudgetRef) => "io.stratavore.command.budget.delete.v1", "session-orchestrator.budget.delete";
    }
}

/// A budget as it stands after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetDefinition {
    /// The budget.
    pub budget_id: Uuid,
    /// What it counts.
    pub scope: BudgetScope,
    /// The project, profile or runner the scope names.
    pub target: Option<String>,
    /// The period usage is counted over.
    pub period: BudgetPeriod,
    /// The IANA time zone its periods are reckoned in: the orchestrator's
    /// `budgets.time_zone` when it was created, kept so that its periods
    /// (and a rebuild's totals) never move under it.
    pub time_zone: String,
    /// Tokens allowed per period.
    pub limit_tokens: Option<u64>,
    /// USD allowed per period.
    pub limit_usd: Option<f64>,
    /// Warning threshold, percent of a limit.
    pub warn_percent: u8,
    /// What an exhausted budget does to the runners in scope.
    pub action: BudgetAction,
}

/// A budget was created or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetChanged {
    /// The command this answers.
    pub command_id: Uuid,
    /// The budget after the change.
    pub budget: BudgetDefinition,
}

/// A budget was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetDeleted {
    /// The command this answers.
    pub command_id: Uuid,
    /// The budget.
    pub budget_id: Uuid,
}

/// A budget command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRejected {
    /// The command this answers.
    pub command_id: Uuid,
    /// The budget named by the command.
    pub budget_id: Uuid,
    /// A stable reason (`not_found`, `unknown_target`, `invalid`, `budget_exists`).
    pub reason: String,
    /// The input field at fault, when one is.
    pub field: Option<String>,
    /// A sentence for people.
    pub message: String,
}

/// A budget's usage in one period reached its warning threshold or its
/// limit. Each fires at most once per budget and period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetAlert {
    /// The budget.
    pub budget_id: Uuid,
    /// The period's first instant.
    pub period_start: DateTime<Utc>,
    /// The instant the next period starts.
    pub period_end: DateTime<Utc>,
    /// Tokens used in the period when it fired.
    pub used_tokens: u64,
    /// USD used in the period when it fired.
    pub used_usd: f64,
    /// The token limit then.
    pub limit_tokens: Option<u64>,
    /// The USD limit then.
    pub limit_usd: Option<f64>,
    /// The runners a `stop` budget stopped (empty for warnings, `warn`
    /// budgets and past periods).
    #[serde(default)]
    pub stopped_runners: Vec<Uuid>,
}

message_family! {
    /// What happened to budgets, recorded by the session-orchestrator.
    pub enum BudgetEvent: Event {
        /// A budget was created.
        Created(BudgetChanged) => "io.stratavore.budget.created.v1", "budget.created";
        /// A budget's limits, threshold or action changed.
        Updated(BudgetChanged) => "io.stratavore.budget.updated.v1", "budget.updated";
        /// A budget was deleted.
        Deleted(BudgetDeleted) => "io.stratavore.budget.deleted.v1", "budget.deleted";
        /// A budget command was refused.
        Rejected(BudgetRejected) => "io.stratavore.budget.rejected.v1", "budget.rejected";
        /// Usage in a period reached the warning threshold.
        ThresholdReached(BudgetAlert) => "io.stratavore.budget.threshold_reached.v1", "budget.threshold_reached";
        /// Usage in a period reached the limit.
        Exceeded(BudgetAlert) => "io.stratavore.budget.exceeded.v1", "budget.exceeded";
    }
}

impl BudgetEvent {
    /// The command this event answers, for the events that answer one.
    pub fn command_id(&self) -> Option<Uuid> {
        match self {
            Self::Created(e) | Self::Updated(e) => Some(e.command_id),
            Self::Deleted(e) => Some(e.command_id),
            Self::Rejected(e) => Some(e.command_id),
            Self::ThresholdReached(_) | Self::Exceeded(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn an_update_tells_an_absent_limit_from_a_removed_one() {
        let id = Uuid::nil();
        let data = serde_json::json!({"budget_id": id, "limit_usd": null, "warn_percent": 50});
        let cmd = BudgetCommand::from_data("io.stratavore.command.budget.update.v1", data).unwrap();
        let BudgetCommand::Update(u) = &cmd else {
            panic!("an update");
        };
        assert_eq!(u.limit_usd, Some(None));
        assert_eq!(u.limit_tokens, None);
        let back = BudgetCommand::from_data(cmd.type_name(), cmd.to_data()).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn a_create_round_trips_and_routes_to_the_orchestrator() {
        let cmd = BudgetCommand::Create(CreateBudget {
            budget_id: Uuid::nil(),
            scope: BudgetScope::Project,
            target: Some("web".into()),
            period: BudgetPeriod::Daily,
            limit_tokens: Some(1000),
            limit_usd: None,
            warn_percent: 80,
            action: BudgetAction::Stop,
        });
        let back = BudgetCommand::from_data(cmd.type_name(), cmd.to_data()).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(cmd.routing_key(), "session-orchestrator.budget.create");
    }
}
