//! Budgets' tables: `budgets` and `budget_alerts` folded from the
//! orchestrator's own budget events, `budget_spend` from the usage the
//! nodes report; and the reads the budget decisions make (a budget, the
//! budgets whose scope holds a runner or a launch, a period's spend, the
//! runners in scope).

use crate::domain::spending_runs::covers;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use stratavore_budgets::{AlertKind, Spend, spend_of_reconciliation, spend_of_usage};
use stratavore_events::budget::{
    BudgetAction, BudgetDefinition, BudgetEvent, BudgetPeriod, BudgetScope,
};
use stratavore_events::process::ProcessEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

/// The stream of a budget's definition and alerts.
pub fn budget_stream(budget_id: Uuid) -> String {
    format!("budget-{budget_id}")
}

/// A budget as decisions read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBudget {
    /// Its definition.
    pub definition: BudgetDefinition,
    /// Its stream's version.
    pub version: u64,
    /// Deleted budgets keep their row, so their id (and stream) is never
    /// reused.
    pub deleted: bool,
}

fn db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Fold one of the orchestrator's own log rows, if it is a budget event.
pub async fn project_budget_event(
    conn: &mut PgConnection,
    entry: &Envelope,
) -> Result<(), StoreError> {
    let Ok(event) = BudgetEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return Ok(());
    };
    let version = db(entry.sequence);
    let (query, context) = match &event {
        BudgetEvent::Created(e) | BudgetEvent::Updated(e) => {
            let b = &e.budget;
            let q = sqlx::query(
                "INSERT INTO budgets (budget_id, scope, target, period, time_zone, limit_tokens,
                                      limit_usd, warn_percent, action, version, deleted)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)
                 ON CONFLICT (budget_id) DO UPDATE SET scope = excluded.scope,
                     target = excluded.target, period = excluded.period,
                     time_zone = excluded.time_zone, limit_tokens = excluded.limit_tokens,
                     limit_usd = excluded.limit_usd, warn_percent = excluded.warn_percent,
                     action = excluded.action, version = excluded.version",
            )
            .bind(b.budget_id)
            .bind(b.scope.as_str())
            .bind(&b.target)
            .bind(b.period.as_str())
            .bind(&b.time_zone)
            .bind(b.limit_tokens.map(db))
            .bind(b.limit_usd)
            .bind(i16::from(b.warn_percent))
            .bind(b.action.as_str())
            .bind(version);
            (q, "projecting a budget's definition")
        }
        BudgetEvent::Deleted(e) => (
            sqlx::query("UPDATE budgets SET deleted = true, version = $2 WHERE budget_id = $1")
                .bind(e.budget_id)
                .bind(version),
            "projecting a budget's deletion",
        ),
        BudgetEvent::ThresholdReached(a) | BudgetEvent::Exceeded(a) => {
            let kind = match event {
                BudgetEvent::Exceeded(_) => AlertKind::Exceeded,
                _ => AlertKind::Threshold,
            };
            sqlx::query("UPDATE budgets SET version = $2 WHERE budget_id = $1")
                .bind(a.budget_id)
                .bind(version)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::new("moving a budget's version"))?;
            (
                sqlx::query(
                    "INSERT INTO budget_alerts (budget_id, period_start, kind) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(a.budget_id)
                .bind(a.period_start)
                .bind(kind.as_str()),
                "recording a budget alert",
            )
        }
        // Rejections have streams of their own and change no budget.
        BudgetEvent::Rejected(_) => return Ok(()),
    };
    query
        .execute(conn)
        .await
        .map_err(StoreError::new(context))?;
    Ok(())
}

/// What a process event adds to spending, and for which runner.
pub fn spend_of_event(event: &ProcessEvent) -> Option<(Uuid, Spend)> {
    match event {
        ProcessEvent::UsageReported(u) => Some((u.runner_id, spend_of_usage(u))),
        ProcessEvent::CostReconciled(c) => Some((c.runner_id, spend_of_reconciliation(c))),
        _ => None,
    }
}

/// One message's spending, as `budget_spend` records it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendRow {
    /// The message that reported it (each counts once).
    pub message_id: Uuid,
    /// The runner it was spent by.
    pub runner_id: Uuid,
    /// The message's own time.
    pub time: DateTime<Utc>,
    /// What it adds.
    pub spend: Spend,
}

/// Record spending (once per message id) in one statement.
pub async fn record_spending(conn: &mut PgConnection, rows: &[SpendRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO budget_spend (message_id, runner_id, time, tokens, cost_usd)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bigint[], $5::float8[])
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.message_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.runner_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| db(r.spend.tokens)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.spend.usd).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(StoreError::new("recording spending"))?;
    Ok(())
}

const BUDGET_COLUMNS: &str = "budget_id, scope, target, period, time_zone, limit_tokens, \
     limit_usd, warn_percent, action, version, deleted";

fn scope_of(s: &str) -> BudgetScope {
    match s {
        "project" => BudgetScope::Project,
        "profile" => BudgetScope::Profile,
        "runner" => BudgetScope::Runner,
        _ => BudgetScope::Global,
    }
}

fn period_of(s: &str) -> BudgetPeriod {
    match s {
        "hourly" => BudgetPeriod::Hourly,
        "weekly" => BudgetPeriod::Weekly,
        "monthly" => BudgetPeriod::Monthly,
        _ => BudgetPeriod::Daily,
    }
}

fn budget_row(r: &sqlx::postgres::PgRow) -> StoredBudget {
    StoredBudget {
        definition: BudgetDefinition {
            budget_id: r.get(0),
            scope: scope_of(r.get(1)),
            target: r.get(2),
            period: period_of(r.get(3)),
            time_zone: r.get(4),
            limit_tokens: r
                .get::<Option<i64>, _>(5)
                .map(|n| u64::try_from(n).unwrap_or(0)),
            limit_usd: r.get(6),
            warn_percent: u8::try_from(r.get::<i16, _>(7)).unwrap_or(100),
            action: if r.get::<&str, _>(8) == "stop" {
                BudgetAction::Stop
            } else {
                BudgetAction::Warn
            },
        },
        version: u64::try_from(r.get::<i64, _>(9)).unwrap_or(0),
        deleted: r.get(10),
    }
}

/// One budget, deleted or not.
pub async fn load_budget(
    conn: &mut PgConnection,
    budget_id: Uuid,
) -> Result<Option<StoredBudget>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE budget_id = $1"
    )))
    .bind(budget_id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("loading a budget"))?;
    Ok(row.as_ref().map(budget_row))
}

/// The live budgets whose scope holds a runner of `project` and `profile`
/// (and, when given, the runner itself), in id order.
pub async fn budgets_in_scope(
    conn: &mut PgConnection,
    project: &str,
    profile: &str,
    runner: Option<Uuid>,
) -> Result<Vec<StoredBudget>, StoreError> {
    let mut budgets = live_budgets(conn).await?;
    budgets.retain(|b| covers(&b.definition, project, profile, runner));
    Ok(budgets)
}

/// Every live budget, for the usage gauges.
pub async fn live_budgets(conn: &mut PgConnection) -> Result<Vec<StoredBudget>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE NOT deleted ORDER BY budget_id"
    )))
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("listing budgets"))?;
    Ok(rows.iter().map(budget_row).collect())
}

/// The scope's filter on `runners` (aliased `r`), with the scope's name
/// and target as the parameters `scope` and `target`.
fn in_scope(scope: &str, target: &str) -> String {
    format!(
        "({scope} = 'global'
         OR ({scope} = 'project' AND r.project = {target})
         OR ({scope} = 'profile' AND r.profile = {target})
         OR ({scope} = 'runner' AND r.runner_id::text = {target}))"
    )
}

/// What the budget's scope spent in `[start, end)`, leaving out the
/// messages `except` (those being decided on, which the caller adds
/// itself).
pub async fn spent(
    conn: &mut PgConnection,
    budget: &BudgetDefinition,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    except: &[Uuid],
) -> Result<Spend, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(s.tokens), 0)::bigint, coalesce(sum(s.cost_usd), 0)::float8
         FROM budget_spend s LEFT JOIN runners r ON r.runner_id = s.runner_id
         WHERE s.time >= $1 AND s.time < $2 AND {}
           AND s.message_id <> ALL($5)",
        in_scope("$3", "$4")
    )))
    .bind(start)
    .bind(end)
    .bind(budget.scope.as_str())
    .bind(budget.target.clone().unwrap_or_default())
    .bind(except)
    .fetch_one(conn)
    .await
    .map_err(StoreError::new("summing a budget's spending"))?;
    Ok(Spend {
        tokens: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
        usd: row.get(1),
    })
}

/// The alerts a budget raised in the period starting at `period_start`.
pub async fn alerts_fired(
    conn: &mut PgConnection,
    budget_id: Uuid,
    period_start: DateTime<Utc>,
) -> Result<Vec<AlertKind>, StoreError> {
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM budget_alerts WHERE budget_id = $1 AND period_start = $2",
    )
    .bind(budget_id)
    .bind(period_start)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("reading a budget's alerts"))?;
    Ok(kinds.iter().filter_map(|k| AlertKind::parse(k)).collect())
}

/// The runners in the budget's scope that have not ended, in id order.
pub async fn active_runners_in_scope(
    conn: &mut PgConnection,
    budget: &BudgetDefinition,
) -> Result<Vec<Uuid>, StoreError> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT r.runner_id FROM runners r
         WHERE r.state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled')
           AND {}
         ORDER BY r.runner_id",
        in_scope("$1", "$2")
    )))
    .bind(budget.scope.as_str())
    .bind(budget.target.clone().unwrap_or_default())
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("finding the runners in a budget's scope"))
}
