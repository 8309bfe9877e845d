//! Tokens each agent session has used so far (`session_usage`), folded from
//! the nodes' `process.usage_reported`. An attempt that resumes a session is
//! offered these totals as its baseline: an agent that reports usage as a
//! running total of its session (Codex) then counts from them, not from zero.
//!
//! The table is fed by received messages only, so the inbox makes each
//! report count once, and a rebuild replays the applied ones in order.

use sqlx::{PgConnection, Row};
use stratavore_events::process::{ProcessEvent, TokenTotals};
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn total(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Fold a received message: a usage report adds to its session's totals.
/// Reports that name no session (written before they did) add nothing.
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<(), StoreError> {
    let Ok(ProcessEvent::UsageReported(u)) =
        ProcessEvent::from_data(&message.type_name, message.data.clone())
    else {
        return Ok(());
    };
    if u.session_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO session_usage (session_id, input_tokens, output_tokens,
             cache_creation_input_tokens, cache_read_input_tokens)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (session_id) DO UPDATE SET
             input_tokens = session_usage.input_tokens + excluded.input_tokens,
             output_tokens = session_usage.output_tokens + excluded.output_tokens,
             cache_creation_input_tokens =
                 session_usage.cache_creation_input_tokens + excluded.cache_creation_input_tokens,
             cache_read_input_tokens =
                 session_usage.cache_read_input_tokens + excluded.cache_read_input_tokens",
    )
    .bind(&u.session_id)
    .bind(count(u.input_tokens))
    .bind(count(u.output_tokens))
    .bind(count(u.cache_creation_input_tokens))
    .bind(count(u.cache_read_input_tokens))
    .execute(conn)
    .await
    .map_err(StoreError::new("adding to a session's usage"))?;
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
