//! The orchestrator's metric names, and the gauges refreshed from its
//! projections (runners and nodes by state).

use crate::domain::nodes::NodeState;
use std::time::Duration;
use stratavore_runtime::Shutdown;

/// Runners by state (a gauge, refreshed from the `runners` projection).
pub const RUNNERS: &str = "stratavore_runners";
/// Restarts scheduled, by project and profile.
pub const RESTARTS_TOTAL: &str = "stratavore_runner_restarts_total";
/// Attempts lost with their node and offered again, by project and profile.
pub const RELAUNCHES_TOTAL: &str = "stratavore_runner_relaunches_total";
/// Claims answered `revoke` (a stale, duplicate or cancelled claim).
pub const OFFERS_REVOKED_TOTAL: &str = "stratavore_offers_revoked_total";
/// Seconds from an attempt's offer to the decision to start it (a
/// histogram).
pub const PLACEMENT_SECONDS: &str = "stratavore_placement_seconds";
/// Tokens used, by project, profile and kind (input, output, cache_creation, cache_read).
pub const TOKENS_TOTAL: &str = "stratavore_tokens_total";
/// Cost in millionths of a USD (counters are integers), by project and
/// profile.
pub const COST_MICRO_USD_TOTAL: &str = "stratavore_cost_micro_usd_total";
/// Launches decided, by outcome (approved, or the rejection reason).
pub const LAUNCHES_TOTAL: &str = "stratavore_launches_total";
/// Nodes by state (`up`, `draining`, `lost`; a gauge from the `nodes`
/// projection).
pub const NODES: &str = "stratavore_nodes";
/// Seconds since this replica last received a node's heartbeat, by node.
pub const NODE_HEARTBEAT_AGE_SECONDS: &str = "stratavore_node_heartbeat_age_seconds";
/// Node incarnations this replica declared lost (a loss another replica
/// recorded first is not counted here).
pub const NODE_LOSSES_TOTAL: &str = "stratavore_node_losses_total";

/// Count a turn's tokens and cost for dashboards, by the runner's project
/// and profile.
pub fn usage(project: &str, profile: &str, u: &stratavore_events::process::UsageReported) {
    let labels = [
        ("project", project.to_owned()),
        ("profile", profile.to_owned()),
    ];
    for (kind, n) in [
        ("input", u.input_tokens),
        ("output", u.output_tokens),
        ("cache_creation", u.cache_creation_input_tokens),
        ("cache_read", u.cache_read_input_tokens),
    ] {
        let mut with_kind = labels.to_vec();
        with_kind.push(("kind", kind.to_owned()));
        metrics::counter!(TOKENS_TOTAL, &with_kind).increment(n);
    }
    metrics::counter!(COST_MICRO_USD_TOTAL, &labels).increment((u.cost_usd * 1e6).round() as u64);
}

/// The states the gauge always reports (0 when none is in it), so a
/// dashboard's series do not vanish.
const STATES: &[&str] = stratavore_events::runner::RUNNER_STATES;

/// Refresh the runners-by-state and nodes-by-state gauges every `interval`
/// until shutdown.
pub async fn state_gauges(pool: sqlx::PgPool, interval: Duration, shutdown: Shutdown) {
    loop {
        let counts: Result<Vec<(String, i64)>, _> =
            sqlx::query_as("SELECT state, count(*) FROM runners GROUP BY state")
                .fetch_all(&pool)
                .await;
        match counts {
            Ok(counts) => set_by_state(RUNNERS, STATES.iter().copied(), &counts),
            Err(e) => tracing::debug!(error = %e, "cannot count runners"),
        }
        let nodes = match pool.acquire().await {
            Ok(mut conn) => crate::node_store::count_by_state(&mut conn)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match nodes {
            Ok(counts) => set_by_state(NODES, NodeState::ALL.iter().map(|s| s.as_str()), &counts),
            Err(e) => tracing::debug!(error = %e, "cannot count nodes"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn set_by_state<'a>(
    gauge: &'static str,
    states: impl Iterator<Item = &'a str>,
    counts: &[(String, i64)],
) {
    for state in states {
        let n = counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(gauge, "state" => state.to_owned()).set(n as f64);
    }
}

/// Budget alerts raised, by kind (`threshold_reached`, `exceeded`).
pub const BUDGET_EVENTS_TOTAL: &str = "stratavore_budget_events_total";
/// The share of each budget's limit its scope spent in the current period
/// (1 = at the limit), by budget id and kind (`tokens`, `usd`; a kind the
/// budget has no limit for is not reported).
pub const BUDGET_USAGE_RATIO: &str = "stratavore_budget_usage_ratio";

/// Refresh the budget usage gauges every `interval` until shutdown, each
/// budget in its current period by `clock` (the orchestrator's, so a test
/// that moves time sees the gauges roll over with the periods).
pub async fn budget_gauges(
    pool: sqlx::PgPool,
    clock: std::sync::Arc<dyn stratavore_runtime::Clock>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut reported = std::collections::HashSet::new();
    loop {
        match budget_ratios(&pool, clock.now()).await {
            Ok(ratios) => {
                let now: std::collections::HashSet<(String, &'static str)> = ratios
                    .iter()
                    .map(|(id, kind, _)| (id.clone(), *kind))
                    .collect();
                // A deleted budget's series goes away rather than freeze.
                for (id, kind) in reported.difference(&now) {
                    metrics::gauge!(BUDGET_USAGE_RATIO, "budget" => id.clone(), "kind" => *kind)
                        .set(0.0);
                }
                for (id, kind, ratio) in ratios {
                    metrics::gauge!(BUDGET_USAGE_RATIO, "budget" => id, "kind" => kind).set(ratio);
                }
                reported = now;
            }
            Err(e) => tracing::debug!(error = %e, "cannot measure budgets"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// (budget id, kind, ratio) of every live budget with a limit of that kind.
async fn budget_ratios(
    pool: &sqlx::PgPool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, &'static str, f64)>, stratavore_store::StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(stratavore_store::StoreError::new("measuring budgets"))?;
    let mut out = Vec::new();
    for stored in crate::budget_store::live_budgets(&mut conn).await? {
        let b = &stored.definition;
        let period = stratavore_budgets::period_in_zone(b.period, &b.time_zone, now);
        let spent = crate::budget_store::spent(&mut conn, b, period.start, period.end, &[]).await?;
        let id = b.budget_id.to_string();
        if let Some(limit) = b.limit_tokens {
            out.push((
                id.clone(),
                "tokens",
                spent.tokens as f64 / limit.max(1) as f64,
            ));
        }
        if let Some(limit) = b.limit_usd.filter(|l| *l > 0.0) {
            out.push((id, "usd", spent.usd / limit));
        }
    }
    Ok(out)
}
