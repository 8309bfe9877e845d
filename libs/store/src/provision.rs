//! What an admin connection sets up before any service starts: the vector
//! extension, one login role and one schema per service. Idempotent: running
//! it again changes nothing.

use crate::StoreError;
use crate::services::SERVICE_DBS;
use sqlx::{AssertSqlSafe, PgPool};

/// Create the extension, the roles and the schemas (each schema owned by its
/// service's role, so that role, and no other service's, can use it).
pub async fn provision_database(
    admin: &PgPool,
    role_password: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = admin
        .begin()
        .await
        .map_err(StoreError::new("opening the provisioning transaction"))?;
    // Two provisioning runs against one database (tests start many at once)
    // would otherwise race on CREATE EXTENSION and CREATE SCHEMA.
    sqlx::query("SELECT pg_advisory_xact_lock(3, 0)")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::new("taking the provisioning lock"))?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::new("creating the vector extension"))?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing the extension"))?;

    for db in SERVICE_DBS {
        // Roles are cluster-wide: another database's provisioning may create
        // the same role at the same moment, so a duplicate is not an error.
        let create_role = format!(
            "DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
                END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$",
            role = db.role
        );
        sqlx::query(AssertSqlSafe(create_role))
            .execute(admin)
            .await
            .map_err(StoreError::new("creating a service role"))?;
        if let Some(password) = role_password {
            // A password cannot be a bind parameter in ALTER ROLE; quote it
            // as a literal through the server's own quoting function.
            let quoted: String = sqlx::query_scalar("SELECT quote_literal($1)")
                .bind(password)
                .fetch_one(admin)
                .await
                .map_err(StoreError::new("quoting the role password"))?;
            sqlx::query(AssertSqlSafe(format!(
                "ALTER ROLE {} PASSWORD {quoted}",
                db.role
            )))
            .execute(admin)
            .await
            .map_err(StoreError::new("setting a role password"))?;
        }
        let mut tx = admin
            .begin()
            .await
            .map_err(StoreError::new("opening a schema transaction"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(3, 0)")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::new("taking the provisioning lock"))?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            db.schema, db.role
        )))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::new("creating a service schema"))?;
        tx.commit()
            .await
            .map_err(StoreError::new("committing a schema"))?;
    }
    Ok(())
}
