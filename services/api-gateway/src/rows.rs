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
