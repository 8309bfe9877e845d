//! Folding a run of progress events into the runners' rows: the rows the
//! run touches are locked and read in one statement, folded in order by
//! [`Totals`], and written back in one statement.

use super::store;
use super::totals::Totals;
use crate::progress::{Progress, UsageSums};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use stratavore_store::StoreError;
use uuid::Uuid;

/// Fold `run` into the rows of the runners it is about (a runner with no
/// row yet changes nothing, as its approval carries no usage).
pub(crate) async fn fold_progress(
    conn: &mut PgConnection,
    run: &[Progress],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = run
        .iter()
        .map(Progress::runner_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Locked in id order, so two folds over the same runners cannot
    // deadlock.
    let rows = sqlx::query(
        "SELECT runner_id, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
                cost_usd, updated_at, stalled_at, stalled_idle_ms, stalled_attempt
         FROM runners WHERE runner_id = ANY($1) ORDER BY runner_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(store("reading runners' totals"))?;
    let mut totals: BTreeMap<Uuid, (Totals, Totals)> = rows
        .iter()
        .map(|r| {
            let t = Totals {
                usage: UsageSums::from_row(r, 1),
                updated_at: r.get(6),
                stalled_at: r.get(7),
                stalled_idle_ms: r.get(8),
                stalled_attempt: r.get(9),
            };
            (r.get(0), (t.clone(), t))
        })
        .collect();
    for progress in run {
        if let Some((_, after)) = totals.get_mut(&progress.runner_id()) {
            after.apply(progress);
        }
    }
    let changed: Vec<(Uuid, Totals)> = totals
        .into_iter()
        .filter(|(_, (before, after))| before != after)
        .map(|(id, (_, after))| (id, after))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE runners r SET input_tokens = t.input_tokens, output_tokens = t.output_tokens,
             cache_creation_tokens = t.cache_creation_tokens, cache_read_tokens = t.cache_read_tokens,
             cost_usd = t.cost_usd, updated_at = t.updated_at, stalled_at = t.stalled_at,
             stalled_idle_ms = t.stalled_idle_ms, stalled_attempt = t.stalled_attempt
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::float8[], $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::int[])
              AS t(runner_id, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
                   cost_usd, updated_at, stalled_at, stalled_idle_ms, stalled_attempt)
         WHERE r.runner_id = t.runner_id",
    )
    .bind(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.usage.input_tokens).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.usage.output_tokens).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.usage.cache_creation_tokens).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.usage.cache_read_tokens).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.usage.cost_usd).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.updated_at).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.stalled_at).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.stalled_idle_ms).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, t)| t.stalled_attempt).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(store("writing runners' totals"))?;
    Ok(())
}
