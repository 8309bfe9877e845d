//! A session's row, recomputed from the facts of its attempts (a session
//! none of whose attempts is left, the launch id an agent replaced with its
//! own, has no row). Attempts are ordered by runner id (UUIDv7: launch
//! order) and attempt number, never by when their events arrived, so the
//! row is the same whichever order the facts came in.

use crate::runner_models::store;
use sqlx::PgConnection;
use stratavore_store::StoreError;

/// Recompute the row of `session_id` from its attempts.
pub(super) async fn refresh_session(
    conn: &mut PgConnection,
    session_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut *conn)
        .await
        .map_err(store("clearing a session"))?;
    // first(x) / last(x): of the attempts that have an x, the earliest or
    // latest one's.
    sqlx::query(
        "INSERT INTO sessions (session_id, project, path, profile, node, bound, resumed_from,
             first_prompt, final_result, started_at, last_active_at, ended_at, message_count,
             turn_count, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
             cost_usd, transcript_path, transcript_bytes, transcript_sha256)
         SELECT $1,
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
         FROM session_attempts a LEFT JOIN session_runners r USING (runner_id)
         WHERE a.session_id = $1
         HAVING count(*) > 0",
    )
    .bind(session_id)
    .execute(conn)
    .await
    .map_err(store("recomputing a session"))?;
    Ok(())
}
