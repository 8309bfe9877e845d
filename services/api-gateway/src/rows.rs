//! Rows of a read model moved whole between a table and the structs its
//! pure folds change, as JSON: read with `to_jsonb`, written back with
//! `jsonb_populate_recordset` in one statement for any number of rows. A
//! struct's fields are named as its table's columns.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use stratavore_store::StoreError;

/// The first column of each row, a `to_jsonb` of a table's row, as `R`.
pub(crate) fn decode<R: DeserializeOwned>(
    rows: &[PgRow],
    context: &'static str,
) -> Result<Vec<R>, StoreError> {
    use sqlx::Row;
    rows.iter()
        .map(|r| {
            r.try_get::<Json<R>, _>(0)
                .map(|Json(row)| row)
                .map_err(StoreError::new(context))
        })
        .collect()
}

/// Insert `rows` into `table`, or replace the rows with the same `key`:
/// `columns` (the key's among them) are written, the table's others keep
/// their values (or defaults). `rows` should be in key order, so two
/// writers lock shared rows in the same order.
pub(crate) async fn upsert<R: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    columns: &[&str],
    key: &[&str],
    rows: &[R],
    context: &'static str,
) -> Result<(), StoreError> {
    let one = Upsert::of(table, columns, key, rows, context)?;
    upsert_all(conn, one.into_iter().collect(), context).await
}

/// One table's part of [`upsert_all`]: its rows, already JSON.
#[derive(Debug)]
pub(crate) struct Upsert<'a> {
    table: &'a str,
    columns: &'a [&'a str],
    key: &'a [&'a str],
    rows: Box<RawValue>,
}

impl<'a> Upsert<'a> {
    /// The upsert of `rows` into `table` (as [`upsert`] describes), or
    /// none when there are no rows.
    pub(crate) fn of<R: Serialize>(
        table: &'a str,
        columns: &'a [&'a str],
        key: &'a [&'a str],
        rows: &[R],
        context: &'static str,
    ) -> Result<Option<Self>, StoreError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let rows = serde_json::value::to_raw_value(rows).map_err(|e| StoreError {
            context,
            source: sqlx::Error::Encode(Box::new(e)),
        })?;
        Ok(Some(Self {
            table,
            columns,
            key,
            rows,
        }))
    }

    /// The statement, its rows read from parameter `$param`.
    fn sql(&self, param: usize) -> String {
        let list = self.columns.join(", ");
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.key.contains(c))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "INSERT INTO {table} ({list})
             SELECT {list} FROM jsonb_populate_recordset(NULL::{table}, ${param})
             ON CONFLICT ({key}) DO UPDATE SET {set}",
            table = self.table,
            key = self.key.join(", "),
            set = set.join(", "),
        )
    }
}

/// Run several upserts (of different tables) in one statement, each but
/// the last as a data-modifying `WITH` part: one round trip for all of a
/// fold's writes. They see the same snapshot and not each other's rows,
/// which is why no two may write one table.
pub(crate) async fn upsert_all(
    conn: &mut PgConnection,
    upserts: Vec<Upsert<'_>>,
    context: &'static str,
) -> Result<(), StoreError> {
    let Some((last, first)) = upserts.split_last() else {
        return Ok(());
    };
    debug_assert!(
        upserts
            .iter()
            .enumerate()
            .all(|(i, u)| upserts[..i].iter().all(|v| v.table != u.table)),
        "one statement cannot upsert one table twice"
    );
    let parts: Vec<String> = first
        .iter()
        .enumerate()
        .map(|(i, u)| format!("w{i} AS ({})", u.sql(i + 1)))
        .collect();
    let mut sql = if parts.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", parts.join(", "))
    };
    sql.push_str(&last.sql(upserts.len()));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for u in &upserts {
        query = query.bind(Json(&*u.rows));
    }
    query
        .execute(conn)
        .await
        .map_err(StoreError::new(context))?;
    Ok(())
}

/// The rows a batch is about, by key, each as it was read (`None`: it had
/// none) and as the batch's pure fold leaves it; what changed is written
/// back.
#[derive(Debug)]
pub(crate) struct Touched<K, R> {
    rows: std::collections::BTreeMap<K, (Option<R>, Option<R>)>,
}

impl<K, R> Touched<K, R>
where
    K: Ord + for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    K: sqlx::postgres::PgHasArrayType + Send + Sync,
    R: Clone + PartialEq + DeserializeOwned + Serialize,
{
    /// Lock and read the rows of `table` whose column `key` is one of
    /// `keys`, in key order (so two folds over the same rows cannot
    /// deadlock).
    pub(crate) async fn lock(
        conn: &mut PgConnection,
        table: &str,
        key: &str,
        keys: Vec<K>,
        key_of: impl Fn(&R) -> K,
        context: &'static str,
    ) -> Result<Self, StoreError> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb(t) FROM {table} t WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE"
        )))
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::new(context))?;
        Ok(Self::new(keys, decode(&found, context)?, key_of))
    }

    /// Write the rows the fold made or changed back to `table` (an
    /// [`upsert`] of `columns` by `key`).
    pub(crate) async fn write(
        self,
        conn: &mut PgConnection,
        table: &str,
        columns: &[&str],
        key: &str,
        context: &'static str,
    ) -> Result<(), StoreError> {
        upsert(conn, table, columns, &[key], &self.changed(), context).await
    }
}

impl<K: Ord, R: Clone + PartialEq> Touched<K, R> {
    /// `keys`, with the rows of them that were `found` (keyed by `key_of`).
    pub(crate) fn new(
        keys: impl IntoIterator<Item = K>,
        found: Vec<R>,
        key_of: impl Fn(&R) -> K,
    ) -> Self {
        let mut rows: std::collections::BTreeMap<K, (Option<R>, Option<R>)> =
            keys.into_iter().map(|k| (k, (None, None))).collect();
        for row in found {
            rows.insert(key_of(&row), (Some(row.clone()), Some(row)));
        }
        Self { rows }
    }

    /// The row of `key` to fold into, when `key` is one of the batch's.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut Option<R>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.rows.get_mut(key).map(|(_, after)| after)
    }

    /// The rows the fold made or changed, in key order.
    pub(crate) fn changed(self) -> Vec<R> {
        self.rows
            .into_values()
            .filter(|(before, after)| before != after)
            .filter_map(|(_, after)| after)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rows_made_or_changed_are_written_in_key_order() {
        let found = vec![(2, "b"), (1, "a"), (3, "c")];
        let mut touched = Touched::new([1, 2, 3, 4], found, |r| r.0);
        assert!(touched.get_mut(&9).is_none(), "not one of the batch's");
        *touched.get_mut(&3).unwrap() = Some((3, "C"));
        *touched.get_mut(&4).unwrap() = Some((4, "d"));
        *touched.get_mut(&1).unwrap() = Some((1, "a"));
        assert_eq!(touched.changed(), vec![(3, "C"), (4, "d")]);
    }
}
