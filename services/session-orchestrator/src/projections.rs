//! The orchestrator's read tables, folded from its own log: `projects`
//! (the state its decisions read); the runner tables are folded in
//! `runner_store`, `session_usage` (from received usage reports) in
//! `session_usage`, `nodes` and `node_losses` in `node_store`, and the
//! budget tables in `budget_store`.

use crate::domain::projects::Project;
use sqlx::{PgConnection, Row};
use stratavore_events::Envelope;
use stratavore_events::Message;
use stratavore_events::project::ProjectEvent;
use stratavore_store::StoreError;

/// Tables a rebuild empties and refills.
pub const TABLES: &[&str] = &[
    "projects",
    "runners",
    "runner_timers",
    "sessions",
    "session_usage",
    "nodes",
    "node_losses",
    "budgets",
    "budget_alerts",
    "budget_spend",
];

/// Fold one of the orchestrator's own log rows.
pub async fn project_own(conn: &mut PgConnection, entry: &Envelope) -> Result<(), StoreError> {
    // Rows of other types (rejections' streams, dead-letter decisions)
    // change no table here.
    let Ok(event) = ProjectEvent::from_data(&entry.type_name, entry.data.clone()) else {
        return Ok(());
    };
    let version = i64::try_from(entry.sequence).unwrap_or(i64::MAX);
    let query = match &event {
        ProjectEvent::Created(e) => sqlx::query(
            "INSERT INTO projects (name, path, description, tags, archived, version, max_concurrent_runners)
             VALUES ($1, $2, $3, $4, false, $5, $6)",
        )
        .bind(&e.name)
        .bind(&e.path)
        .bind(&e.description)
        .bind(&e.tags)
        .bind(version)
        .bind(i32::try_from(e.max_concurrent_runners).unwrap_or(i32::MAX)),
        ProjectEvent::Updated(e) => sqlx::query(
            "UPDATE projects SET description = $2, tags = $3, version = $4, max_concurrent_runners = $5
             WHERE name = $1",
        )
        .bind(&e.name)
        .bind(&e.description)
        .bind(&e.tags)
        .bind(version)
        .bind(i32::try_from(e.max_concurrent_runners).unwrap_or(i32::MAX)),
        ProjectEvent::Archived(e) => {
            sqlx::query("UPDATE projects SET archived = true, version = $2 WHERE name = $1")
                .bind(&e.name)
                .bind(version)
        }
        ProjectEvent::Unarchived(e) => {
            sqlx::query("UPDATE projects SET archived = false, version = $2 WHERE name = $1")
                .bind(&e.name)
                .bind(version)
        }
        // An admission only moves the project's stream on: it is the
        // token two racing launches contend for.
        ProjectEvent::RunnerAdmitted(e) => sqlx::query("UPDATE projects SET version = $2 WHERE name = $1")
            .bind(&e.name)
            .bind(version),
        ProjectEvent::Rejected(_) => return Ok(()),
    };
    query
        .execute(conn)
        .await
        .map_err(StoreError::new("projecting a project event"))?;
    Ok(())
}

/// A project's state and its stream's version, if it exists.
pub async fn load_project(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<(Project, u64)>, StoreError> {
    let row = sqlx::query(
        "SELECT name, path, description, tags, archived, version, max_concurrent_runners
         FROM projects WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("loading a project"))?;
    Ok(row.map(|r| {
        (
            Project {
                name: r.get(0),
                path: r.get(1),
                description: r.get(2),
                tags: r.get(3),
                archived: r.get(4),
                max_concurrent_runners: u32::try_from(r.get::<i32, _>(6)).unwrap_or(0),
            },
            u64::try_from(r.get::<i64, _>(5)).unwrap_or(0),
        )
    }))
}
