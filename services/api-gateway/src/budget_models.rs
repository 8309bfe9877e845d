//! The budgets read model: definitions and alerts folded from the
//! orchestrator's budget events, spending folded from the nodes' usage
//! and reconciliation events (one row per event id, at the event's own
//! time), and a budget's standing in its current period computed on read
//! with the pure rules of `stratavore-budgets` — the same rules and the
//! same events the orchestrator decides with, so the two agree.

use crate::agent_events::AgentEvent;
use crate::progress::Step;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use stratavore_budgets::{
    Limits, OVERSHOOT_NOTE, Spend, period_in_zone, spend_of_reconciliation, spend_of_usage,
    state_name,
};
use stratavore_events::budget::{BudgetEvent, BudgetPeriod};
use stratavore_events::process::ProcessEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;
use uuid::Uuid;

fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
}

fn db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where a budget is.
pub(crate) fn budget_resource(id: Uuid) -> Option<String> {
    Some(format!("/api/v1/budgets/{id}"))
}

/// Fold a received budget event; returns whether it was one.
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<bool, StoreError> {
    let Ok(event) = BudgetEvent::from_data(&message.type_name, message.data.clone()) else {
        return Ok(false);
    };
    project_budget_event(conn, message, &event).await?;
    Ok(true)
}

/// Record what a batch of process events spent: each usage report and
/// each reconciliation of a cost.
pub(crate) async fn fold_spending(
    conn: &mut PgConnection,
    events: &[AgentEvent],
) -> Result<(), StoreError> {
    let spending: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Progress(p) => match &p.step {
                Step::Usage(u) => Some((p.id, u.runner_id, p.time, spend_of_usage(u))),
                Step::Text(_) => None,
            },
            AgentEvent::Process(s) => match &s.event {
                ProcessEvent::CostReconciled(c) => {
                    Some((s.id, c.runner_id, s.time, spend_of_reconciliation(c)))
                }
                _ => None,
            },
            AgentEvent::Runner(_) => None,
        })
        .collect();
    record_spending(conn, &spending).await
}

/// One row per spending event: its id, runner, time and what it spent.
async fn record_spending(
    conn: &mut PgConnection,
    spending: &[(Uuid, Uuid, DateTime<Utc>, Spend)],
) -> Result<(), StoreError> {
    if spending.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO budget_spend (message_id, runner_id, time, tokens, cost_usd)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bigint[], $5::float8[])
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(spending.iter().map(|s| s.0).collect::<Vec<_>>())
    .bind(spending.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind(spending.iter().map(|s| s.2).collect::<Vec<_>>())
    .bind(spending.iter().map(|s| db(s.3.tokens)).collect::<Vec<_>>())
    .bind(spending.iter().map(|s| s.3.usd).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(store("recording spending"))?;
    Ok(())
}

async fn project_budget_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &BudgetEvent,
) -> Result<(), StoreError> {
    match event {
        BudgetEvent::Created(e) | BudgetEvent::Updated(e) => {
            let b = &e.budget;
            sqlx::query(
                "INSERT INTO budgets (budget_id, scope, target, period, time_zone, limit_tokens,
                                      limit_usd, warn_percent, action, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
                 ON CONFLICT (budget_id) DO UPDATE SET limit_tokens = excluded.limit_tokens,
                     limit_usd = excluded.limit_usd, warn_percent = excluded.warn_percent,
                     action = excluded.action, updated_at = excluded.updated_at",
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
            .bind(message.time)
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a budget"))?;
            crate::read_models::command_outcome(
                conn,
                e.command_id,
                message,
                None,
                budget_resource(b.budget_id),
            )
            .await
        }
        BudgetEvent::Deleted(e) => {
            for table in ["budget_alerts", "budgets"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE budget_id = $1"
                )))
                .bind(e.budget_id)
                .execute(&mut *conn)
                .await
                .map_err(store("projecting a budget's deletion"))?;
            }
            crate::read_models::command_outcome(conn, e.command_id, message, None, None).await
        }
        BudgetEvent::Rejected(e) => {
            let rejection = (e.reason.as_str(), e.field.as_deref(), e.message.as_str());
            crate::read_models::command_outcome(conn, e.command_id, message, Some(rejection), None)
                .await
        }
        BudgetEvent::ThresholdReached(a) | BudgetEvent::Exceeded(a) => {
            let kind = match event {
                BudgetEvent::Exceeded(_) => "exceeded",
                _ => "threshold_reached",
            };
            sqlx::query(
                "INSERT INTO budget_alerts (budget_id, period_start, kind, raised_at, used_tokens,
                                            used_usd, stopped_runners)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(a.budget_id)
            .bind(a.period_start)
            .bind(kind)
            .bind(message.time)
            .bind(db(a.used_tokens))
            .bind(a.used_usd)
            .bind(&a.stopped_runners)
            .execute(conn)
            .await
            .map_err(store("projecting a budget alert"))?;
            Ok(())
        }
    }
}

/// Tokens and USD, as the API shows an amount.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Amount {
    /// Tokens (absent in a limit or remainder the budget does not set).
    pub tokens: Option<u64>,
    /// USD.
    pub usd: Option<f64>,
}

/// The current period's bounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeriodView {
    /// Its first instant (RFC 3339).
    pub start: DateTime<Utc>,
    /// When the next period starts (RFC 3339).
    pub end: DateTime<Utc>,
}

/// An alert raised in the current period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertView {
    /// `threshold_reached` or `exceeded`.
    pub kind: String,
    /// When (the event's time).
    pub raised_at: DateTime<Utc>,
    /// Tokens used then.
    pub used_tokens: i64,
    /// USD used then.
    pub used_usd: f64,
    /// The runners it stopped.
    pub stopped_runners: Vec<Uuid>,
}

/// How far past its limit a budget may go, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OvershootView {
    /// What the design allows, in words.
    pub note: &'static str,
    /// Runners in scope that have not ended: each may finish its turn.
    pub active_runners: i64,
    /// The largest single turn spent in scope this period: about what one
    /// runner's turn in flight may add.
    pub largest_turn: Amount,
    /// `active_runners` turns of that size: an estimate of the overshoot.
    pub estimate: Amount,
}

/// A budget as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BudgetView {
    /// Its id.
    pub id: Uuid,
    /// `global`, `project`, `profile` or `runner`.
    pub scope: String,
    /// The project, profile or runner the scope names.
    pub target: Option<String>,
    /// `hourly`, `daily`, `weekly` or `monthly`.
    pub period: String,
    /// The IANA time zone its periods are reckoned in.
    pub time_zone: String,
    /// Its limits.
    pub limit: Amount,
    /// Warning threshold, percent of a limit.
    pub warn_percent: i16,
    /// `warn` or `stop`.
    pub action: String,
    /// `ok`, `warning` or `exceeded` in the current period.
    pub state: &'static str,
    /// The current period (by the gateway's clock).
    pub current_period: PeriodView,
    /// What the scope spent in the current period.
    pub used: Amount,
    /// What remains of each limit (never below zero).
    pub remaining: Amount,
    /// The largest share of a limit spent (1 = at the limit).
    pub usage_ratio: f64,
    /// Alerts raised in the current period.
    pub alerts: Vec<AlertView>,
    /// The overshoot the design allows.
    pub overshoot: OvershootView,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its definition last changed.
    pub updated_at: DateTime<Utc>,
}

fn period_of(s: &str) -> BudgetPeriod {
    match s {
        "hourly" => BudgetPeriod::Hourly,
        "weekly" => BudgetPeriod::Weekly,
        "monthly" => BudgetPeriod::Monthly,
        _ => BudgetPeriod::Daily,
    }
}

const COLUMNS: &str = "budget_id, scope, target, period, time_zone, limit_tokens, limit_usd, \
     warn_percent, action, created_at, updated_at";

/// The scope's filter on `runners` (aliased `r`), scope name $1, target $2.
const IN_SCOPE: &str = "($1 = 'global'
     OR ($1 = 'project' AND r.project = $2)
     OR ($1 = 'profile' AND r.profile = $2)
     OR ($1 = 'runner' AND r.runner_id::text = $2))";

async fn view(
    pool: &PgPool,
    r: &sqlx::postgres::PgRow,
    now: DateTime<Utc>,
) -> Result<BudgetView, StoreError> {
    let id: Uuid = r.get(0);
    let scope: String = r.get(1);
    let target: Option<String> = r.get(2);
    let period_name: String = r.get(3);
    let time_zone: String = r.get(4);
    let limits = Limits {
        tokens: r
            .get::<Option<i64>, _>(5)
            .map(|n| u64::try_from(n).unwrap_or(0)),
        usd: r.get(6),
    };
    let warn_percent: i16 = r.get(7);
    let period = period_in_zone(period_of(&period_name), &time_zone, now);
    let target_text = target.clone().unwrap_or_default();
    let sums = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(s.tokens), 0)::bigint, coalesce(sum(s.cost_usd), 0)::float8,
                coalesce(max(s.tokens), 0)::bigint, coalesce(max(s.cost_usd), 0)::float8
         FROM budget_spend s LEFT JOIN runners r ON r.runner_id = s.runner_id
         WHERE s.time >= $3 AND s.time < $4 AND {IN_SCOPE}"
    )))
    .bind(&scope)
    .bind(&target_text)
    .bind(period.start)
    .bind(period.end)
    .fetch_one(pool)
    .await
    .map_err(store("summing a budget's spending"))?;
    let spent = Spend {
        tokens: u64::try_from(sums.get::<i64, _>(0)).unwrap_or(0),
        usd: sums.get(1),
    };
    let largest = (
        u64::try_from(sums.get::<i64, _>(2)).unwrap_or(0),
        sums.get::<f64, _>(3),
    );
    let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM runners r
         WHERE r.state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled') AND {IN_SCOPE}"
    )))
    .bind(&scope)
    .bind(&target_text)
    .fetch_one(pool)
    .await
    .map_err(store("counting a budget's runners"))?;
    let alerts = sqlx::query(
        "SELECT kind, raised_at, used_tokens, used_usd, stopped_runners FROM budget_alerts
         WHERE budget_id = $1 AND period_start = $2 ORDER BY raised_at, kind DESC",
    )
    .bind(id)
    .bind(period.start)
    .fetch_all(pool)
    .await
    .map_err(store("reading a budget's alerts"))?
    .iter()
    .map(|a| AlertView {
        kind: a.get(0),
        raised_at: a.get(1),
        used_tokens: a.get(2),
        used_usd: a.get(3),
        stopped_runners: a.get(4),
    })
    .collect();
    let (remaining_tokens, remaining_usd) = limits.remaining(spent);
    let warn = u8::try_from(warn_percent).unwrap_or(100);
    let runners = u64::try_from(active).unwrap_or(0);
    Ok(BudgetView {
        id,
        scope,
        target,
        period: period_name,
        time_zone,
        limit: Amount {
            tokens: limits.tokens,
            usd: limits.usd,
        },
        warn_percent,
        action: r.get(8),
        state: state_name(limits, warn, spent),
        current_period: PeriodView {
            start: period.start,
            end: period.end,
        },
        used: Amount {
            tokens: Some(spent.tokens),
            usd: Some(spent.usd),
        },
        remaining: Amount {
            tokens: remaining_tokens,
            usd: remaining_usd,
        },
        usage_ratio: limits.ratio(spent),
        alerts,
        overshoot: OvershootView {
            note: OVERSHOOT_NOTE,
            active_runners: active,
            largest_turn: Amount {
                tokens: Some(largest.0),
                usd: Some(largest.1),
            },
            estimate: Amount {
                tokens: Some(largest.0.saturating_mul(runners)),
                usd: Some(largest.1 * runners as f64),
            },
        },
        created_at: r.get(9),
        updated_at: r.get(10),
    })
}

/// One budget, standing at `now`.
pub async fn get_budget(
    pool: &PgPool,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<BudgetView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE budget_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a budget"))?;
    match row {
        Some(r) => Ok(Some(view(pool, &r, now).await?)),
        None => Ok(None),
    }
}

/// Budgets in id (creation) order after `after`, at most `limit`.
pub async fn list_budgets(
    pool: &PgPool,
    after: Option<Uuid>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<BudgetView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE ($1::uuid IS NULL OR budget_id > $1)
         ORDER BY budget_id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing budgets"))?;
    let mut views = Vec::with_capacity(rows.len());
    for r in &rows {
        views.push(view(pool, r, now).await?);
    }
    Ok(views)
}
