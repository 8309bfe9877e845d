//! Folding a run of progress events into session attempts: the attempts
//! the run touches are made when new, locked and read in one statement,
//! folded in order by [`AttemptFacts`], written back in one statement, and
//! the sessions they were and are in recomputed in one more.

use super::attempt_progress::AttemptFacts;
use crate::progress::{Progress, UsageSums};
use crate::runner_models::store;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use stratavore_store::StoreError;
use uuid::Uuid;

type Key = (Uuid, i32);

/// Fold `run` into the attempts it is about and their sessions.
pub(crate) async fn fold_progress(
    conn: &mut PgConnection,
    run: &[Progress],
) -> Result<(), StoreError> {
    // Each attempt with the time of its first event (a new row starts
    // there), in key order, so two folds lock rows in the same order.
    let mut first: BTreeMap<Key, DateTime<Utc>> = BTreeMap::new();
    for p in run {
        first.entry((p.runner_id(), p.attempt())).or_insert(p.time);
    }
    sqlx::query(
        "INSERT INTO session_attempts (runner_id, attempt, last_active_at)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[])
         ON CONFLICT (runner_id, attempt) DO NOTHING",
    )
    .bind(first.keys().map(|k| k.0).collect::<Vec<_>>())
    .bind(first.keys().map(|k| k.1).collect::<Vec<_>>())
    .bind(first.values().copied().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(store("recording session attempts"))?;
    let mut facts = read_locked(conn, first.keys()).await?;
    for p in run {
        if let Some((_, after)) = facts.get_mut(&(p.runner_id(), p.attempt())) {
            after.apply(p);
        }
    }
    let changed: Vec<(&Key, &AttemptFacts, &AttemptFacts)> = facts
        .iter()
        .filter(|(_, (before, after))| before != after)
        .map(|(key, (before, after))| (key, before, after))
        .collect();
    let rows: Vec<(&Key, &AttemptFacts)> = changed.iter().map(|(k, _, a)| (*k, *a)).collect();
    write(conn, &rows).await?;
    // The sessions the changed attempts are in, and those they left.
    let sessions: BTreeSet<&str> = changed
        .iter()
        .flat_map(|(_, before, after)| [before.session_id(), after.session_id()])
        .flatten()
        .collect();
    let sessions: Vec<&str> = sessions.into_iter().collect();
    super::refresh::refresh_sessions(conn, &sessions).await
}

/// The attempts' facts, locked, each twice: as they were and to fold into.
async fn read_locked(
    conn: &mut PgConnection,
    keys: impl Iterator<Item = &Key> + Clone,
) -> Result<BTreeMap<Key, (AttemptFacts, AttemptFacts)>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.runner_id, a.attempt, a.offered_session, a.agent_session, a.last_active_at,
                a.turns, a.messages, a.last_text_role, a.last_text_full, a.input_tokens,
                a.output_tokens, a.cache_creation_tokens, a.cache_read_tokens, a.cost_usd,
                a.result_text
         FROM session_attempts a
         JOIN unnest($1::uuid[], $2::int[]) AS k(runner_id, attempt) USING (runner_id, attempt)
         ORDER BY a.runner_id, a.attempt FOR UPDATE OF a",
    )
    .bind(keys.clone().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.map(|k| k.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await
    .map_err(store("reading session attempts"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let facts = AttemptFacts {
                offered_session: r.get(2),
                agent_session: r.get(3),
                last_active_at: r.get(4),
                turns: r.get(5),
                messages: r.get(6),
                last_text_role: r.get(7),
                last_text_full: r.get(8),
                usage: UsageSums::from_row(r, 9),
                result_text: r.get(14),
            };
            ((r.get(0), r.get(1)), (facts.clone(), facts))
        })
        .collect())
}

/// Write the changed attempts' facts back.
async fn write(
    conn: &mut PgConnection,
    changed: &[(&Key, &AttemptFacts)],
) -> Result<(), StoreError> {
    if changed.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&AttemptFacts) -> i64| changed.iter().map(|(_, a)| f(a)).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE session_attempts a SET agent_session = f.agent_session,
             last_active_at = f.last_active_at, turns = f.turns, messages = f.messages,
             last_text_role = f.last_text_role, last_text_full = f.last_text_full,
             input_tokens = f.input_tokens, output_tokens = f.output_tokens,
             cache_creation_tokens = f.cache_creation_tokens,
             cache_read_tokens = f.cache_read_tokens, cost_usd = f.cost_usd,
             result_text = f.result_text
         FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::int[],
                     $7::text[], $8::bool[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::bigint[], $13::float8[], $14::text[])
              AS f(runner_id, attempt, agent_session, last_active_at, turns, messages,
                   last_text_role, last_text_full, input_tokens, output_tokens,
                   cache_creation_tokens, cache_read_tokens, cost_usd, result_text)
         WHERE a.runner_id = f.runner_id AND a.attempt = f.attempt",
    )
    .bind(changed.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
    .bind(changed.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.agent_session.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.last_active_at)
            .collect::<Vec<_>>(),
    )
    .bind(changed.iter().map(|(_, a)| a.turns).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, a)| a.messages).collect::<Vec<_>>())
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.last_text_role.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.last_text_full)
            .collect::<Vec<_>>(),
    )
    .bind(column(|a| a.usage.input_tokens))
    .bind(column(|a| a.usage.output_tokens))
    .bind(column(|a| a.usage.cache_creation_tokens))
    .bind(column(|a| a.usage.cache_read_tokens))
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.usage.cost_usd)
            .collect::<Vec<_>>(),
    )
    .bind(
        changed
            .iter()
            .map(|(_, a)| a.result_text.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map_err(store("writing session attempts"))?;
    Ok(())
}
