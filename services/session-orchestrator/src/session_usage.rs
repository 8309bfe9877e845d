//! Tokens each agent session has used so far (`session_usage`), folded from
//! the nodes' `process.usage_reported`. An attempt that resumes a session is
//! offered these totals as its baseline: an agent that reports usage as a
//! running total of its session (Codex) then counts from them, not from zero.
//!
//! The table is fed by received messages only, so the inbox makes each
//! report count once, and a rebuild replays the applied ones in order.

use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use stratavore_events::process::{TokenTotals, UsageReported};
use stratavore_store::StoreError;

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn total(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Add usage reports to their sessions' totals, in one statement: the
/// reports of one session are summed first (a row may be changed only once
/// per statement), which gives what adding them one by one gives. Reports
/// that name no session (written before they did) add nothing.
pub async fn add_usage(
    conn: &mut PgConnection,
    reports: &[UsageReported],
) -> Result<(), StoreError> {
    // Sorted by session, so concurrent drains lock rows in one order.
    let mut sums: BTreeMap<&str, TokenTotals> = BTreeMap::new();
    for u in reports.iter().filter(|u| !u.session_id.is_empty()) {
        let sum = sums.entry(u.session_id.as_str()).or_default();
        sum.input_tokens = sum.input_tokens.saturating_add(u.input_tokens);
        sum.output_tokens = sum.output_tokens.saturating_add(u.output_tokens);
        sum.cache_creation_input_tokens = sum
            .cache_creation_input_tokens
            .saturating_add(u.cache_creation_input_tokens);
        sum.cache_read_input_tokens = sum
            .cache_read_input_tokens
            .saturating_add(u.cache_read_input_tokens);
    }
    if sums.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&TokenTotals) -> u64| sums.values().map(|t| count(f(t))).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO session_usage (session_id, input_tokens, output_tokens,
             cache_creation_input_tokens, cache_read_input_tokens)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
         ON CONFLICT (session_id) DO UPDATE SET
             input_tokens = session_usage.input_tokens + excluded.input_tokens,
             output_tokens = session_usage.output_tokens + excluded.output_tokens,
             cache_creation_input_tokens =
                 session_usage.cache_creation_input_tokens + excluded.cache_creation_input_tokens,
             cache_read_input_tokens =
                 session_usage.cache_read_input_tokens + excluded.cache_read_input_tokens",
    )
    .bind(sums.keys().copied().collect::<Vec<_>>())
    .bind(column(|t| t.input_tokens))
    .bind(column(|t| t.output_tokens))
    .bind(column(|t| t.cache_creation_input_tokens))
    .bind(column(|t| t.cache_read_input_tokens))
    .execute(conn)
    .await
    .map_err(StoreError::new("adding to sessions' usage"))?;
    Ok(())
}

/// The session's totals so far (zero for a session that used nothing yet).
pub async fn session_usage(
    conn: &mut PgConnection,
    session_id: &str,
) -> Result<TokenTotals, StoreError> {
    let row = sqlx::query(
        "SELECT input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens
         FROM session_usage WHERE session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("reading a session's usage"))?;
    Ok(row.map_or_else(TokenTotals::default, |r| TokenTotals {
        input_tokens: total(r.get(0)),
        output_tokens: total(r.get(1)),
        cache_creation_input_tokens: total(r.get(2)),
        cache_read_input_tokens: total(r.get(3)),
    }))
}
