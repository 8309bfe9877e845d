//! The gateway's read models: folded from received events (projects and
//! command outcomes) and from its own log (the commands it accepted and
//! their idempotency keys). Every fold is an upsert, so it gives the same
//! rows whichever of the two histories a rebuild replays first.

use crate::progress::{Progress, Sorted};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use stratavore_events::Envelope;
use stratavore_events::Message;
use stratavore_events::budget::BudgetEvent;
use stratavore_events::process::{NodeCommand, NodeEvent, ProcessEvent};
use stratavore_events::project::{ProjectCommand, ProjectEvent};
use stratavore_events::runner::{RunnerCommand, RunnerEvent};
use stratavore_store::StoreError;
use uuid::Uuid;

/// Tables a rebuild empties and refills.
pub const TABLES: &[&str] = &[
    "projects",
    "commands",
    "idempotency_keys",
    "runners",
    "nodes",
    "session_runners",
    "session_attempts",
    "sessions",
    "session_texts",
    "session_chunks",
    "budgets",
    "budget_alerts",
    "budget_spend",
];

/// A project as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProjectView {
    /// Unique name.
    pub name: String,
    /// Normalised absolute path.
    pub path: String,
    /// Free text.
    pub description: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Archived projects take no new launches.
    pub archived: bool,
    /// Runners it may have at once.
    pub max_concurrent_runners: i32,
    /// When it was created (the event's time).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A command as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandView {
    /// Its id.
    pub id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// What it is about.
    pub subject: Option<String>,
    /// `pending`, `succeeded` or `rejected`.
    pub status: String,
    /// Why it was rejected (stable code).
    pub reason: Option<String>,
    /// The input field at fault.
    pub field: Option<String>,
    /// A sentence for people.
    pub message: Option<String>,
    /// Where the resource it made or changed is.
    pub resource: Option<String>,
    /// When it was accepted.
    pub accepted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When its outcome happened.
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A hash of what a request asked for, to tell a retry (same key, same
/// request) from a key reused for something else. Ids the gateway assigns
/// itself (a launch's `runner_id`, a budget's `budget_id`) are not part of what was asked.
pub fn request_hash(type_name: &str, data: &serde_json::Value) -> String {
    let mut asked = data.clone();
    let launch = stratavore_events::runner::RunnerCommand::types()
        .iter()
        .any(|t| t.type_name == type_name && t.routing_key.ends_with("runner.launch"));
    if let (true, Some(fields)) = (launch, asked.as_object_mut()) {
        fields.remove("runner_id");
    }
    let budget_create = stratavore_events::budget::BudgetCommand::types()
        .iter()
        .any(|t| t.type_name == type_name && t.routing_key.ends_with("budget.create"));
    if let (true, Some(fields)) = (budget_create, asked.as_object_mut()) {
        fields.remove("budget_id");
    }
    // serde_json keeps object keys sorted, so equal values print equally.
    let text = format!("{type_name}\n{asked}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
}

/// Fold one of the gateway's own log rows: an accepted command.
pub async fn project_own(conn: &mut PgConnection, entry: &Envelope) -> Result<(), StoreError> {
    let is_client_command = ProjectCommand::from_data(&entry.type_name, entry.data.clone()).is_ok()
        || RunnerCommand::from_data(&entry.type_name, entry.data.clone()).is_ok()
        || NodeCommand::from_data(&entry.type_name, entry.data.clone()).is_ok()
        || stratavore_events::budget::BudgetCommand::from_data(
            &entry.type_name,
            entry.data.clone(),
        )
        .is_ok();
    if !is_client_command {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO commands (command_id, type, subject, status, accepted_at)
         VALUES ($1, $2, $3, 'pending', $4)
         ON CONFLICT (command_id) DO UPDATE
         SET type = excluded.type, subject = excluded.subject, accepted_at = excluded.accepted_at",
    )
    .bind(entry.id)
    .bind(&entry.type_name)
    .bind(&entry.subject)
    .bind(entry.time)
    .execute(&mut *conn)
    .await
    .map_err(store("recording an accepted command"))?;
    if let Some(key) = &entry.idempotency_key {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, command_id, request_hash) VALUES ($1, $2, $3)",
        )
        .bind(key)
        .bind(entry.id)
        .bind(request_hash(&entry.type_name, &entry.data))
        .execute(&mut *conn)
        .await
        .map_err(store("recording an idempotency key"))?;
    }
    Ok(())
}

/// Record a command's outcome (an upsert: either side may come first
/// during a rebuild).
pub(crate) async fn command_outcome(
    conn: &mut PgConnection,
    command_id: Uuid,
    event: &Envelope,
    rejection: Option<(&str, Option<&str>, &str)>,
    resource: Option<String>,
) -> Result<(), StoreError> {
    let (status, reason, field, message) = match rejection {
        Some((reason, field, message)) => ("rejected", Some(reason), field, Some(message)),
        None => ("succeeded", None, None, None),
    };
    sqlx::query(
        "INSERT INTO commands (command_id, status, reason, field, message, resource, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (command_id) DO UPDATE
         SET status = excluded.status, reason = excluded.reason, field = excluded.field,
             message = excluded.message, resource = excluded.resource, decided_at = excluded.decided_at",
    )
    .bind(command_id)
    .bind(status)
    .bind(reason)
    .bind(field)
    .bind(message)
    .bind(resource)
    .bind(event.time)
    .execute(conn)
    .await
    .map_err(store("recording a command outcome"))?;
    Ok(())
}

/// Where a runner is.
pub(crate) fn project_resource_of_runner(id: Uuid) -> Option<String> {
    Some(format!("/api/v1/runners/{id}"))
}

fn project_resource(name: &str) -> Option<String> {
    Some(format!("/api/v1/projects/{name}"))
}

/// Whether `type_name` is one of `M`'s types.
fn of_family<M: Message>(type_name: &str) -> bool {
    M::types().iter().any(|t| t.type_name == type_name)
}

/// Fold one received message. Types the gateway has no read model for yet
/// change nothing.
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<(), StoreError> {
    // Runner and process events feed several models: each is parsed once
    // here (by its own family only: parsing takes a copy of the payload)
    // and handed to every fold that reads it.
    let type_name = message.type_name.as_str();
    if let Some(Ok(event)) = of_family::<RunnerEvent>(type_name)
        .then(|| RunnerEvent::from_data(type_name, message.data.clone()))
    {
        crate::session_models::project_runner_event(conn, message, &event).await?;
        crate::search::texts::project_runner_event(conn, message, &event).await?;
        return crate::runner_models::project_runner_event(conn, message, &event).await;
    }
    if let Some(event) = process_event(message) {
        return match Progress::of(message, event) {
            Sorted::Progress(progress) => {
                crate::progress::fold_run(conn, std::slice::from_ref(&progress)).await
            }
            Sorted::Other(event) => project_process_event(conn, message, &event).await,
        };
    }
    if crate::budget_models::project_received(conn, message).await?
        || crate::node_models::project_received(conn, message).await?
    {
        return Ok(());
    }
    let Ok(event) = ProjectEvent::from_data(&message.type_name, message.data.clone()) else {
        return Ok(());
    };
    match &event {
        ProjectEvent::Created(e) => {
            sqlx::query(
                "INSERT INTO projects (name, path, description, tags, archived, created_at, updated_at,
                                       max_concurrent_runners)
                 VALUES ($1, $2, $3, $4, false, $5, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET path = excluded.path, description = excluded.description,
                     tags = excluded.tags, archived = false, created_at = excluded.created_at,
                     updated_at = excluded.updated_at, max_concurrent_runners = excluded.max_concurrent_runners",
            )
            .bind(&e.name)
            .bind(&e.path)
            .bind(&e.description)
            .bind(&e.tags)
            .bind(message.time)
            .bind(i32::try_from(e.max_concurrent_runners).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await
            .map_err(store("projecting a created project"))?;
            command_outcome(conn, e.command_id, message, None, project_resource(&e.name)).await
        }
        ProjectEvent::Updated(e) => {
            sqlx::query(
                "UPDATE projects SET description = $2, tags = $3, updated_at = $4, max_concurrent_runners = $5
                 WHERE name = $1",
            )
            .bind(&e.name)
            .bind(&e.description)
            .bind(&e.tags)
            .bind(message.time)
            .bind(i32::try_from(e.max_concurrent_runners).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await
            .map_err(store("projecting an updated project"))?;
            command_outcome(conn, e.command_id, message, None, project_resource(&e.name)).await
        }
        ProjectEvent::Archived(e) | ProjectEvent::Unarchived(e) => {
            let archived = matches!(event, ProjectEvent::Archived(_));
            sqlx::query("UPDATE projects SET archived = $2, updated_at = $3 WHERE name = $1")
                .bind(&e.name)
                .bind(archived)
                .bind(message.time)
                .execute(&mut *conn)
                .await
                .map_err(store("projecting an archive change"))?;
            command_outcome(conn, e.command_id, message, None, project_resource(&e.name)).await
        }
        // A launch's admission changes nothing the API shows of a project.
        ProjectEvent::RunnerAdmitted(_) => Ok(()),
        ProjectEvent::Rejected(e) => {
            let rejection = (e.reason.as_str(), e.field.as_deref(), e.message.as_str());
            command_outcome(conn, e.command_id, message, Some(rejection), None).await
        }
    }
}

/// Fold applied received messages in their order (see
/// [`stratavore_consumer::Projection::project_received_batch`]): agents'
/// progress is gathered into runs folded a run at a time
/// ([`crate::progress`]), the rest is folded one message at a time.
///
/// A run ends at a message it does not commute with. A runner or process
/// event about a runner with no progress in the run commutes with it: it
/// changes only its own runner's rows (runner, attempts, texts), and a
/// session's row is recomputed from its attempts' facts, whatever order
/// they changed in. Project, budget and node events change none of the
/// tables progress feeds (projects, commands, budgets and their alerts,
/// nodes). So they are folded at once and the run goes on, which keeps
/// runs long where many agents' lifecycles interleave (a rebuild's pages,
/// where every launch brings a `project.runner_admitted`). Anything else,
/// or an event about a runner in the run, folds the run first.
pub async fn project_received_batch(
    conn: &mut PgConnection,
    messages: &[Envelope],
) -> Result<(), StoreError> {
    let mut run = Vec::new();
    let mut runners_in_run = std::collections::HashSet::new();
    for message in messages {
        let event = match process_event(message).map(|e| Progress::of(message, e)) {
            Some(Sorted::Progress(progress)) => {
                runners_in_run.insert(progress.runner_id());
                run.push(progress);
                continue;
            }
            Some(Sorted::Other(other)) => Some(other),
            None => None,
        };
        let commutes = match runner_named(message) {
            Some(runner) => !runners_in_run.contains(&runner),
            None => touches_no_progress(&message.type_name),
        };
        if !commutes {
            crate::progress::fold_run(conn, &run).await?;
            run.clear();
            runners_in_run.clear();
        }
        match &event {
            Some(event) => project_process_event(conn, message, event).await?,
            None => project_received(conn, message).await?,
        }
    }
    crate::progress::fold_run(conn, &run).await
}

/// The one runner a runner or process event is about.
fn runner_named(message: &Envelope) -> Option<Uuid> {
    let type_name = message.type_name.as_str();
    if !(of_family::<RunnerEvent>(type_name) || of_family::<ProcessEvent>(type_name)) {
        return None;
    }
    message.data.get("runner_id")?.as_str()?.parse().ok()
}

/// Whether messages of this type change none of the tables agents'
/// progress feeds.
fn touches_no_progress(type_name: &str) -> bool {
    of_family::<ProjectEvent>(type_name)
        || of_family::<BudgetEvent>(type_name)
        || of_family::<NodeEvent>(type_name)
}

/// The process event a message carries, if it is one that parses.
fn process_event(message: &Envelope) -> Option<ProcessEvent> {
    let type_name = message.type_name.as_str();
    of_family::<ProcessEvent>(type_name)
        .then(|| ProcessEvent::from_data(type_name, message.data.clone()).ok())
        .flatten()
}

/// Fold a process event other than progress into every model it feeds.
async fn project_process_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    crate::session_models::project_process_event(conn, message, event).await?;
    crate::search::texts::project_process_event(conn, event).await?;
    crate::budget_models::project_spend(conn, message, event).await?;
    crate::runner_models::project_process_event(conn, message, event).await
}

fn project_view(r: &sqlx::postgres::PgRow) -> ProjectView {
    ProjectView {
        name: r.get(0),
        path: r.get(1),
        description: r.get(2),
        tags: r.get(3),
        archived: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
        max_concurrent_runners: r.get(7),
    }
}

const PROJECT_COLUMNS: &str =
    "name, path, description, tags, archived, created_at, updated_at, max_concurrent_runners";

/// One project.
pub async fn get_project(pool: &PgPool, name: &str) -> Result<Option<ProjectView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a project"))?;
    Ok(row.as_ref().map(project_view))
}

/// Projects in name order after `after`, at most `limit`.
pub async fn list_projects(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ProjectView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing projects"))?;
    Ok(rows.iter().map(project_view).collect())
}

/// One command.
pub async fn get_command(pool: &PgPool, id: Uuid) -> Result<Option<CommandView>, StoreError> {
    let row = sqlx::query(
        "SELECT command_id, type, subject, status, reason, field, message, resource, accepted_at, decided_at
         FROM commands WHERE command_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a command"))?;
    Ok(row.map(|r| CommandView {
        id: r.get(0),
        type_name: r.get(1),
        subject: r.get(2),
        status: r.get(3),
        reason: r.get(4),
        field: r.get(5),
        message: r.get(6),
        resource: r.get(7),
        accepted_at: r.get(8),
        decided_at: r.get(9),
    }))
}

/// The command an idempotency key names, with the hash of its request.
pub async fn command_for_key(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let row = sqlx::query("SELECT command_id, request_hash FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(store("reading an idempotency key"))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
