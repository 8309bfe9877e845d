//! The projects read model, folded from the orchestrator's project events a
//! batch at a time: the projects a batch names are locked and read with
//! one statement, folded in order by [`ProjectRow::fold`] (pure), and the
//! changed ones written back, with the outcomes of the commands the events
//! decided, in one more.

use crate::read_models::{Outcome, outcome_rows, outcomes_upsert, project_resource};
use crate::rows;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::collections::BTreeSet;
use stratavore_events::project::ProjectEvent;
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;

/// A project event with its message's time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProjectFact {
    /// The message's own time.
    pub time: DateTime<Utc>,
    /// What it says.
    pub event: ProjectEvent,
}

impl ProjectFact {
    /// The project event `message` carries, when it is one that parses.
    pub(crate) fn of(message: &Envelope) -> Option<Self> {
        let type_name = message.type_name.as_str();
        if !ProjectEvent::has_type(type_name) {
            return None;
        }
        Some(Self {
            time: message.time,
            event: ProjectEvent::from_data(type_name, message.data.clone()).ok()?,
        })
    }

    /// The project it changes, if it changes one.
    fn project(&self) -> Option<&str> {
        match &self.event {
            ProjectEvent::Created(e) => Some(&e.name),
            ProjectEvent::Updated(e) => Some(&e.name),
            ProjectEvent::Archived(e) | ProjectEvent::Unarchived(e) => Some(&e.name),
            ProjectEvent::Rejected(_) | ProjectEvent::RunnerAdmitted(_) => None,
        }
    }

    /// The outcome of the command it decided, if it decided one.
    fn outcome(&self) -> Option<Outcome> {
        let (command_id, name) = match &self.event {
            ProjectEvent::Created(e) => (e.command_id, &e.name),
            ProjectEvent::Updated(e) => (e.command_id, &e.name),
            ProjectEvent::Archived(e) | ProjectEvent::Unarchived(e) => (e.command_id, &e.name),
            ProjectEvent::Rejected(e) => {
                let rejection = (e.reason.as_str(), e.field.as_deref(), e.message.as_str());
                return Some(Outcome::new(e.command_id, self.time, Some(rejection), None));
            }
            // A launch's admission changes nothing the API shows.
            ProjectEvent::RunnerAdmitted(_) => return None,
        };
        Some(Outcome::new(
            command_id,
            self.time,
            None,
            project_resource(name),
        ))
    }
}

/// A row of `projects`, its fields named as the columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProjectRow {
    pub name: String,
    pub path: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub max_concurrent_runners: i32,
}

/// The columns of `projects`, as [`ProjectRow`] names them.
const COLUMNS: &[&str] = &[
    "name",
    "path",
    "description",
    "tags",
    "archived",
    "created_at",
    "updated_at",
    "max_concurrent_runners",
];

fn quota(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl ProjectRow {
    /// Fold a fact about this project into its row (`None`: it has none):
    /// a creation makes (or remakes) it; other changes need the row.
    pub(crate) fn fold(row: &mut Option<Self>, fact: &ProjectFact) {
        match (&fact.event, row.as_mut()) {
            (ProjectEvent::Created(e), _) => {
                *row = Some(Self {
                    name: e.name.clone(),
                    path: e.path.clone(),
                    description: e.description.clone(),
                    tags: e.tags.clone(),
                    archived: false,
                    created_at: fact.time,
                    updated_at: fact.time,
                    max_concurrent_runners: quota(e.max_concurrent_runners),
                });
            }
            (ProjectEvent::Updated(e), Some(r)) => {
                r.description.clone_from(&e.description);
                r.tags.clone_from(&e.tags);
                r.updated_at = fact.time;
                r.max_concurrent_runners = quota(e.max_concurrent_runners);
            }
            (ProjectEvent::Archived(_), Some(r)) => {
                r.archived = true;
                r.updated_at = fact.time;
            }
            (ProjectEvent::Unarchived(_), Some(r)) => {
                r.archived = false;
                r.updated_at = fact.time;
            }
            _ => {}
        }
    }
}

/// Fold `facts`, in their order, into the projects and the commands'
/// outcomes.
pub(crate) async fn fold(conn: &mut PgConnection, facts: &[ProjectFact]) -> Result<(), StoreError> {
    if facts.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = facts
        .iter()
        .filter_map(ProjectFact::project)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut changed = Vec::new();
    if !names.is_empty() {
        let mut projects = rows::Touched::lock(
            conn,
            "projects",
            "name",
            names.iter().map(|n| (*n).to_owned()).collect(),
            |r: &ProjectRow| r.name.clone(),
            "reading projects",
        )
        .await?;
        for fact in facts {
            if let Some(row) = fact.project().and_then(|n| projects.get_mut(n)) {
                ProjectRow::fold(row, fact);
            }
        }
        changed = projects.changed();
    }
    // The projects and the outcomes in one statement: one round trip.
    let outcomes = outcome_rows(facts.iter().filter_map(ProjectFact::outcome).collect());
    let writes = [
        rows::Upsert::of("projects", COLUMNS, &["name"], &changed, WRITING)?,
        outcomes_upsert(&outcomes)?,
    ];
    rows::upsert_all(conn, writes.into_iter().flatten().collect(), WRITING).await
}

const WRITING: &str = "writing projects and their commands' outcomes";

#[cfg(test)]
mod tests;
