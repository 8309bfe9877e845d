//! A session's row, recomputed from the facts of its attempts (a session
//! none of whose attempts is left, the launch id an agent replaced with its
//! own, has no row). Attempts are ordered by runner id (UUIDv7: launch
//! order) and attempt number, never by when their events arrived, so the
//! row is the same whichever order the facts came in.

use crate::runner_models::store;
use sqlx::PgConnection;
use std::sync::LazyLock;
use stratavore_consumer::service::REBUILDING;
use stratavore_store::StoreError;

/// The rows of the sessions whose id matches `which` (an SQL condition on
/// an id, such as `= ANY($1)`), computed from the attempts in `attempts` (a
/// relation with the columns of `session_attempts`); no row for a session with none.
fn computed(which: &str, attempts: &str) -> String {
    // first(x) / last(x): of the attempts that have an x, the earliest or
    // latest one's.
    format!(
        "SELECT a.session_id,
             (array_agg(r.project ORDER BY a.runner_id, a.attempt) FILTER (WHERE r.project IS NOT NULL))[1],
             (array_agg(r.path ORDER BY a.runner_id, a.attempt) FILTER (WHERE r.path IS NOT NULL))[1],
             (array_agg(r.profile ORDER BY a.runner_id DESC, a.attempt DESC)
                 FILTER (WHERE r.profile IS NOT NULL))[1],
             (array_agg(a.node ORDER BY a.runner_id DESC, a.attempt DESC) FILTER (WHERE a.node IS NOT NULL))[1],
             bool_or(a.bound),
             (array_agg(a.offered_session ORDER BY a.runner_id, a.attempt)
                 FILTER (WHERE a.resume AND a.agent_session <> a.offered_session))[1],
             (array_agg(r.prompt ORDER BY a.runner_id, a.attempt) FILTER (WHERE r.prompt IS NOT NULL))[1],
             (array_agg(a.result_text ORDER BY a.runner_id DESC, a.attempt DESC)
                 FILTER (WHERE a.result_text IS NOT NULL))[1],
             min(a.started_at),
             max(a.last_active_at),
             CASE WHEN bool_and(a.ended_at IS NOT NULL) THEN max(a.ended_at) END,
             (count(a.started_at) + sum(a.messages))::integer,
             sum(a.turns)::integer,
             sum(a.input_tokens)::bigint, sum(a.output_tokens)::bigint,
             sum(a.cache_creation_tokens)::bigint, sum(a.cache_read_tokens)::bigint,
             sum(a.cost_usd),
             (array_agg(a.transcript_path ORDER BY a.runner_id DESC, a.attempt DESC)
                 FILTER (WHERE a.transcript_path IS NOT NULL))[1],
             (array_agg(a.transcript_bytes ORDER BY a.runner_id DESC, a.attempt DESC)
                 FILTER (WHERE a.transcript_path IS NOT NULL))[1],
             (array_agg(a.transcript_sha256 ORDER BY a.runner_id DESC, a.attempt DESC)
                 FILTER (WHERE a.transcript_path IS NOT NULL))[1]
         FROM {attempts} a
         -- Each attempt's launch by its key: `OFFSET 0` keeps the planner
         -- from turning this into a hash join over every runner ever
         -- launched, which a generic plan for many sessions chose.
         LEFT JOIN LATERAL (SELECT project, path, profile, prompt FROM session_runners s
                            WHERE s.runner_id = a.runner_id OFFSET 0) r ON true
         WHERE a.session_id {which}
           -- A rebuild computes every session once, at its end.
           AND current_setting('{REBUILDING}', true) IS DISTINCT FROM 'on'
         GROUP BY a.session_id"
    )
}

/// Write the row of CTE `computed` (from [`computed`]) over the session's.
const UPSERT: &str = "INSERT INTO sessions (session_id, project, path, profile, node,
        bound, resumed_from, first_prompt, final_result, started_at, last_active_at, ended_at,
        message_count, turn_count, input_tokens, output_tokens, cache_creation_tokens,
        cache_read_tokens, cost_usd, transcript_path, transcript_bytes, transcript_sha256)
    SELECT * FROM computed
    ON CONFLICT (session_id) DO UPDATE SET project = excluded.project, path = excluded.path,
        profile = excluded.profile, node = excluded.node, bound = excluded.bound,
        resumed_from = excluded.resumed_from, first_prompt = excluded.first_prompt,
        final_result = excluded.final_result, started_at = excluded.started_at,
        last_active_at = excluded.last_active_at, ended_at = excluded.ended_at,
        message_count = excluded.message_count, turn_count = excluded.turn_count,
        input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
        cache_creation_tokens = excluded.cache_creation_tokens,
        cache_read_tokens = excluded.cache_read_tokens, cost_usd = excluded.cost_usd,
        transcript_path = excluded.transcript_path, transcript_bytes = excluded.transcript_bytes,
        transcript_sha256 = excluded.transcript_sha256";

/// The rows of the sessions in `$1` upserted when they have attempts,
/// deleted when they have none (never both, so the two never meet on a
/// row).
static REFRESH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH computed AS ({}),
              gone AS (DELETE FROM sessions s
                       WHERE s.session_id = ANY($1)
                         AND NOT EXISTS (SELECT 1 FROM computed c WHERE c.session_id = s.session_id))
         {UPSERT}",
        computed("= ANY($1)", "session_attempts")
    )
});

/// Compute every session's row, at the end of a rebuild (which skips the
/// recompute after each message: the rows depend only on the attempts,
/// whatever order their facts came in).
pub(crate) async fn refresh_all(conn: &mut PgConnection) -> Result<(), StoreError> {
    let sessions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT session_id FROM session_attempts")
            .fetch_all(&mut *conn)
            .await
            .map_err(store("listing sessions"))?;
    refresh_sessions(
        conn,
        &sessions.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await
}

/// Recompute the rows of `sessions` from their attempts.
pub(super) async fn refresh_sessions(
    conn: &mut PgConnection,
    sessions: &[&str],
) -> Result<(), StoreError> {
    if sessions.is_empty() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(REFRESH.as_str()))
        .bind(sessions)
        .execute(conn)
        .await
        .map_err(store("recomputing sessions"))?;
    Ok(())
}
