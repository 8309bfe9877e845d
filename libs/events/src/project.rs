//! Projects: the commands a client sends about them and the events the
//! session-orchestrator records in answer.

use crate::message_macro::message_family;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest project name: it must fit a DNS label, since names end up in
/// host names and Kubernetes labels.
pub const MAX_PROJECT_NAME: usize = 63;

/// Check a project name: 1-63 characters of `[a-z0-9-]`. The gateway checks
/// it to answer at once; the orchestrator checks it again as the authority.
pub fn validate_project_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_PROJECT_NAME {
        return Err("must be 1 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only a-z, 0-9 and '-'");
    }
    Ok(())
}

/// Create a project (the gateway sends it; the orchestrator decides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Unique name, 1-63 characters of `[a-z0-9-]`.
    pub name: String,
    /// Absolute path of the project's working tree on the nodes.
    pub path: String,
    /// Free text shown in listings.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Runners the project may have at once; absent: the configured default.
    #[serde(default)]
    pub max_concurrent_runners: Option<u32>,
}

/// The quota of a project created before quotas were recorded per project.
pub const DEFAULT_MAX_CONCURRENT_RUNNERS: u32 = 5;

fn default_max_concurrent_runners() -> u32 {
    DEFAULT_MAX_CONCURRENT_RUNNERS
}

/// Change a project's description, tags or runner quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// The project.
    pub name: String,
    /// New description; absent leaves it unchanged.
    #[serde(default)]
    pub description: Option<String>,
    /// New tags; absent leaves them unchanged.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New runner quota; absent leaves it unchanged.
    #[serde(default)]
    pub max_concurrent_runners: Option<u32>,
}

/// Archive or unarchive a project: the payload names only the project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectRef {
    /// The project.
    pub name: String,
}

message_family! {
    /// Commands about projects, handled by the session-orchestrator.
    pub enum ProjectCommand: Command {
        /// Create a project.
        Create(CreateProject) => "io.stratavore.command.project.create.v1", "session-orchestrator.project.create";
        /// Change a project's description or tags.
        Update(UpdateProject) => "io.stratavore.command.project.update.v1", "session-orchestrator.project.update";
        /// Archive a project: no new launches.
        Archive(ProjectRef) => "io.stratavore.command.project.archive.v1", "session-orchestrator.project.archive";
        /// Bring an archived project back.
        Unarchive(ProjectRef) => "io.stratavore.command.project.unarchive.v1", "session-orchestrator.project.unarchive";
    }
}

/// A project was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreated {
    /// The command this answers.
    pub command_id: Uuid,
    /// Unique name.
    pub name: String,
    /// Normalised absolute path.
    pub path: String,
    /// Free text.
    pub description: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Runners the project may have at once (older events lack it: the
    /// default applies).
    #[serde(default = "default_max_concurrent_runners")]
    pub max_concurrent_runners: u32,
}

/// A project command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCommandRejected {
    /// The command this answers.
    pub command_id: Uuid,
    /// The project named by the command.
    pub name: String,
    /// A stable machine-readable reason (`name_taken`, `path_outside_roots`, …).
    pub reason: String,
    /// The input field at fault, when one is.
    pub field: Option<String>,
    /// A sentence for people.
    pub message: String,
}

/// A project's description or tags changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdated {
    /// The command this answers.
    pub command_id: Uuid,
    /// The project.
    pub name: String,
    /// The description after the change.
    pub description: Option<String>,
    /// The tags after the change.
    pub tags: Vec<String>,
    /// The runner quota after the change.
    #[serde(default = "default_max_concurrent_runners")]
    pub max_concurrent_runners: u32,
}

/// A launch took one of the project's runner slots. Recorded on the
/// project's stream, so two launches deciding at once on the same version
/// cannot both take the last slot: the second append conflicts and decides
/// again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerAdmitted {
    /// The launch command.
    pub command_id: Uuid,
    /// The project.
    pub name: String,
    /// The runner admitted.
    pub runner_id: Uuid,
}

/// A project was archived or unarchived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectArchiveChanged {
    /// The command this answers.
    pub command_id: Uuid,
    /// The project.
    pub name: String,
}

message_family! {
    /// What happened to projects, recorded by the session-orchestrator.
    pub enum ProjectEvent: Event {
        /// A project was created.
        Created(ProjectCreated) => "io.stratavore.project.created.v1", "project.created";
        /// A project command was refused.
        Rejected(ProjectCommandRejected) => "io.stratavore.project.rejected.v1", "project.rejected";
        /// Description or tags changed.
        Updated(ProjectUpdated) => "io.stratavore.project.updated.v1", "project.updated";
        /// The project was archived.
        Archived(ProjectArchiveChanged) => "io.stratavore.project.archived.v1", "project.archived";
        /// The project was unarchived.
        Unarchived(ProjectArchiveChanged) => "io.stratavore.project.unarchived.v1", "project.unarchived";
        /// A launch took one of the project's runner slots.
        RunnerAdmitted(RunnerAdmitted) => "io.stratavore.project.runner_admitted.v1", "project.runner_admitted";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeError, Message};

    #[test]
    fn a_command_round_trips_through_its_type_name_and_data() {
        let cmd = ProjectCommand::Create(CreateProject {
            name: "web".into(),
            path: "/srv/web".into(),
            description: None,
            tags: vec!["a".into()],
            max_concurrent_runners: None,
        });
        let back = ProjectCommand::from_data(cmd.type_name(), cmd.to_data()).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(cmd.routing_key(), "session-orchestrator.project.create");
    }

    #[test]
    fn project_names_are_short_lowercase_dns_labels() {
        for good in ["a", "web-2", &"x".repeat(63)] {
            assert!(validate_project_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "a_b", "a b", "a/b", &"x".repeat(64), "ünï"] {
            assert!(validate_project_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unknown_field_or_type_is_a_decode_error() {
        let data = serde_json::json!({"name": "web", "path": "/x", "bogus": 1});
        assert!(matches!(
            ProjectCommand::from_data("io.stratavore.command.project.create.v1", data.clone()),
            Err(DecodeError::Payload { .. })
        ));
        assert!(matches!(
            ProjectCommand::from_data("io.stratavore.command.project.create.v9", data),
            Err(DecodeError::UnknownType(_))
        ));
    }
}
