//! The orchestrator's metric names, and the gauge of runners by state.

use std::time::Duration;
use stratavore_runtime::Shutdown;

/// Runners by state (a gauge, refreshed from the `runners` projection).
pub const RUNNERS: &str = "stratavore_runners";
/// Restarts scheduled, by project and profile.
pub const RESTARTS_TOTAL: &str = "stratavore_runner_restarts_total";
/// Claims answered `revoke` (a stale, duplicate or cancelled claim).
pub const OFFERS_REVOKED_TOTAL: &str = "stratavore_offers_revoked_total";
/// Tokens used, by project, profile and kind (input, output, cache_creation, cache_read).
pub const TOKENS_TOTAL: &str = "stratavore_tokens_total";
/// Cost in millionths of a USD (counters are integers), by project and
/// profile.
pub const COST_MICRO_USD_TOTAL: &str = "stratavore_cost_micro_usd_total";
/// Launches decided, by outcome (approved, or the rejection reason).
pub const LAUNCHES_TOTAL: &str = "stratavore_launches_total";

/// The states the gauge always reports (0 when none is in it), so a
/// dashboard's series do not vanish.
const STATES: &[&str] = stratavore_events::runner::RUNNER_STATES;

/// Refresh the runners-by-state gauge every `interval` until shutdown.
pub async fn runners_by_state(pool: sqlx::PgPool, interval: Duration, shutdown: Shutdown) {
    loop {
        let counts: Result<Vec<(String, i64)>, _> =
            sqlx::query_as("SELECT state, count(*) FROM runners GROUP BY state")
                .fetch_all(&pool)
                .await;
        match counts {
            Ok(counts) => {
                for state in STATES {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!(RUNNERS, "state" => *state).set(n as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot count runners"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
