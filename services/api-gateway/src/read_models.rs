//! The gateway's read models: folded from received events (projects and
//! command outcomes) and from its own log (the commands it accepted and
//! their idempotency keys). Every fold is an upsert, so it gives the same
//! rows whichever of the two histories a rebuild replays first.

use crate::agent_events::AgentEvent;
use crate::project_models::ProjectFact;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use stratavore_events::Envelope;
use stratavore_events::Message;
use stratavore_events::process::NodeCommand;
use stratavore_events::project::ProjectCommand;
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
    project_own_batch(conn, &[entry]).await
}

/// Whether an own log row is a client's command (the gateway's log holds
/// nothing else today; anything else changes nothing).
fn is_client_command(entry: &Envelope) -> bool {
    // Parsed (a copy of the payload) only as the family its type is of.
    fn parses<M: Message>(entry: &Envelope) -> bool {
        M::has_type(&entry.type_name) && M::from_data(&entry.type_name, entry.data.clone()).is_ok()
    }
    parses::<ProjectCommand>(entry)
        || parses::<RunnerCommand>(entry)
        || parses::<NodeCommand>(entry)
        || parses::<stratavore_events::budget::BudgetCommand>(entry)
}

/// Fold the gateway's own log rows, in their order: each accepted command
/// becomes (or completes) its row, pending until its outcome, and its
/// idempotency key is recorded; one statement per table.
pub async fn project_own_batch(
    conn: &mut PgConnection,
    entries: &[&Envelope],
) -> Result<(), StoreError> {
    let commands: Vec<&Envelope> = entries
        .iter()
        .copied()
        .filter(|e| is_client_command(e))
        .collect();
    if commands.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO commands (command_id, type, subject, status, accepted_at)
         SELECT id, type, subject, 'pending', at
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
              AS c(id, type, subject, at)
         ON CONFLICT (command_id) DO UPDATE
         SET type = excluded.type, subject = excluded.subject, accepted_at = excluded.accepted_at",
    )
    .bind(commands.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(
        commands
            .iter()
            .map(|e| e.type_name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        commands
            .iter()
            .map(|e| e.subject.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(commands.iter().map(|e| e.time).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(store("recording accepted commands"))?;
    let keyed: Vec<(&str, Uuid, String)> = commands
        .iter()
        .filter_map(|e| {
            let key = e.idempotency_key.as_deref()?;
            Some((key, e.id, request_hash(&e.type_name, &e.data)))
        })
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (key, command_id, request_hash)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])",
    )
    .bind(keyed.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keyed.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keyed.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(store("recording idempotency keys"))?;
    Ok(())
}

/// A command's outcome, its fields named as the columns of `commands`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Outcome {
    command_id: Uuid,
    /// `succeeded` or `rejected`.
    status: &'static str,
    reason: Option<String>,
    field: Option<String>,
    message: Option<String>,
    resource: Option<String>,
    decided_at: chrono::DateTime<chrono::Utc>,
}

impl Outcome {
    /// The outcome of `command_id` an event at `at` says: a rejection
    /// (its reason, field and sentence) or a success, with where the
    /// resource it made or changed is.
    pub(crate) fn new(
        command_id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
        rejection: Option<(&str, Option<&str>, &str)>,
        resource: Option<String>,
    ) -> Self {
        let (status, reason, field, message) = match rejection {
            Some((reason, field, message)) => ("rejected", Some(reason), field, Some(message)),
            None => ("succeeded", None, None, None),
        };
        Self {
            command_id,
            status,
            reason: reason.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.map(str::to_owned),
            resource,
            decided_at: at,
        }
    }
}

/// Record commands' outcomes, in their order (an upsert: either side may
/// come first during a rebuild).
pub(crate) async fn record_outcomes(
    conn: &mut PgConnection,
    outcomes: Vec<Outcome>,
) -> Result<(), StoreError> {
    let rows = outcome_rows(outcomes);
    let upsert = outcomes_upsert(&rows)?;
    crate::rows::upsert_all(conn, upsert.into_iter().collect(), OUTCOME_CONTEXT).await
}

const OUTCOME_CONTEXT: &str = "recording a command outcome";

/// The outcomes to write: the last word on a command wins; one row each,
/// in key order.
pub(crate) fn outcome_rows(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    let rows: std::collections::BTreeMap<Uuid, Outcome> =
        outcomes.into_iter().map(|o| (o.command_id, o)).collect();
    rows.into_values().collect()
}

/// The upsert of `rows` (see [`outcome_rows`]) into `commands`, to run
/// alone or with a fold's other writes.
pub(crate) fn outcomes_upsert(
    rows: &[Outcome],
) -> Result<Option<crate::rows::Upsert<'static>>, StoreError> {
    crate::rows::Upsert::of(
        "commands",
        &[
            "command_id",
            "status",
            "reason",
            "field",
            "message",
            "resource",
            "decided_at",
        ],
        &["command_id"],
        rows,
        OUTCOME_CONTEXT,
    )
}

/// Record a command's outcome.
pub(crate) async fn command_outcome(
    conn: &mut PgConnection,
    command_id: Uuid,
    event: &Envelope,
    rejection: Option<(&str, Option<&str>, &str)>,
    resource: Option<String>,
) -> Result<(), StoreError> {
    let outcome = Outcome::new(command_id, event.time, rejection, resource);
    record_outcomes(conn, vec![outcome]).await
}

/// Record the outcomes of runner commands that a batch of runner events
/// decided.
pub(crate) async fn fold_runner_outcomes(
    conn: &mut PgConnection,
    events: &[AgentEvent],
) -> Result<(), StoreError> {
    let outcomes = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Runner(s) => Some(s),
            _ => None,
        })
        .filter_map(|s| match &s.event {
            RunnerEvent::LaunchApproved(a) => Some(Outcome::new(
                a.command_id,
                s.time,
                None,
                project_resource_of_runner(a.runner_id),
            )),
            RunnerEvent::LaunchRejected(r) => Some(Outcome::new(
                r.command_id,
                s.time,
                Some((r.reason.as_str(), r.field.as_deref(), r.message.as_str())),
                None,
            )),
            RunnerEvent::ControlDecided(c) => {
                let rejection = c
                    .refused
                    .as_deref()
                    .map(|reason| (reason, None, c.message.as_str()));
                let resource = rejection
                    .is_none()
                    .then(|| project_resource_of_runner(c.runner_id))
                    .flatten();
                Some(Outcome::new(c.command_id, s.time, rejection, resource))
            }
            _ => None,
        })
        .collect();
    record_outcomes(conn, outcomes).await
}

/// Where a runner is.
pub(crate) fn project_resource_of_runner(id: Uuid) -> Option<String> {
    Some(format!("/api/v1/runners/{id}"))
}

/// Where a project is.
pub(crate) fn project_resource(name: &str) -> Option<String> {
    Some(format!("/api/v1/projects/{name}"))
}

/// Fold one received message (a batch of one: [`project_received_batch`]).
pub async fn project_received(
    conn: &mut PgConnection,
    message: &Envelope,
) -> Result<(), StoreError> {
    project_received_batch(conn, std::slice::from_ref(message)).await
}

/// Fold a received budget or node event. Types the gateway has no read
/// model for yet change nothing.
async fn project_other(conn: &mut PgConnection, message: &Envelope) -> Result<(), StoreError> {
    if !crate::budget_models::project_received(conn, message).await? {
        crate::node_models::project_received(conn, message).await?;
    }
    Ok(())
}

/// Fold applied received messages in their order (see
/// [`stratavore_consumer::Projection::project_received_batch`]). The runner
/// and process events among them are folded together, a model at a time
/// ([`crate::agent_events`]), the project events together
/// ([`crate::project_models`]), and the rest (budget and node events) one
/// at a time, in their order. The three kinds commute: each changes tables
/// the others do not (runners, session attempts and sessions, sessions'
/// texts and spending; projects; budgets, their alerts and nodes), and the
/// commands they record outcomes of are distinct.
pub async fn project_received_batch(
    conn: &mut PgConnection,
    messages: &[Envelope],
) -> Result<(), StoreError> {
    let mut agents = Vec::new();
    let mut projects = Vec::new();
    let mut others = Vec::new();
    for message in messages {
        if let Some(event) = AgentEvent::of(message) {
            agents.push(event);
        } else if let Some(fact) = ProjectFact::of(message) {
            projects.push(fact);
        } else {
            others.push(message);
        }
    }
    crate::agent_events::fold(conn, &agents).await?;
    crate::project_models::fold(conn, &projects).await?;
    for message in others {
        project_other(conn, message).await?;
    }
    Ok(())
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
