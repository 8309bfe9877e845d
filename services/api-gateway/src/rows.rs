//! Rows of a read model moved whole between a table and the structs its
//! pure folds change, as JSON: read with `to_jsonb`, written back with
//! `jsonb_populate_recordset` in one statement for any number of rows. A
//! struct's fields are named as its table's columns.

use serde::Serialize;
use serde::de::DeserializeOwned;
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
    if rows.is_empty() {
        return Ok(());
    }
    let list = columns.join(", ");
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({list})
         SELECT {list} FROM jsonb_populate_recordset(NULL::{table}, $1)
         ON CONFLICT ({key}) DO UPDATE SET {set}",
        key = key.join(", "),
        set = set.join(", "),
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Json(rows))
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
