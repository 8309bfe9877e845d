//! Deciding project commands: the project's current state and the command
//! in, exactly one event out (the change, or a rejection saying why).

use super::paths::{PathRejection, inside_allowed_roots};
use std::path::PathBuf;
use stratavore_events::project::{
    CreateProject, ProjectArchiveChanged, ProjectCommand, ProjectCommandRejected, ProjectCreated,
    ProjectEvent, ProjectUpdated, UpdateProject, validate_project_name,
};
use uuid::Uuid;

/// Maximum length of a description, so one project cannot bloat every read
/// model.
pub const MAX_DESCRIPTION: usize = 4096;
/// Maximum number of tags.
pub const MAX_TAGS: usize = 32;
/// Maximum length of a tag.
pub const MAX_TAG: usize = 64;

/// A project as its stream has made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
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
    pub max_concurrent_runners: u32,
}

/// The largest runner quota a project may ask for.
pub const MAX_RUNNER_QUOTA: u32 = 1000;

/// Fold one event into the state.
pub fn apply(state: Option<Project>, event: &ProjectEvent) -> Option<Project> {
    match event {
        ProjectEvent::Created(e) => Some(Project {
            name: e.name.clone(),
            path: e.path.clone(),
            description: e.description.clone(),
            tags: e.tags.clone(),
            archived: false,
            max_concurrent_runners: e.max_concurrent_runners,
        }),
        ProjectEvent::Updated(e) => state.map(|p| Project {
            description: e.description.clone(),
            tags: e.tags.clone(),
            max_concurrent_runners: e.max_concurrent_runners,
            ..p
        }),
        ProjectEvent::Archived(_) => state.map(|p| Project {
            archived: true,
            ..p
        }),
        ProjectEvent::Unarchived(_) => state.map(|p| Project {
            archived: false,
            ..p
        }),
        ProjectEvent::Rejected(_) | ProjectEvent::RunnerAdmitted(_) => state,
    }
}

/// The project a command is about.
pub fn target(command: &ProjectCommand) -> &str {
    match command {
        ProjectCommand::Create(c) => &c.name,
        ProjectCommand::Update(c) => &c.name,
        ProjectCommand::Archive(c) | ProjectCommand::Unarchive(c) => &c.name,
    }
}

fn reject(
    command_id: Uuid,
    name: &str,
    reason: &str,
    field: Option<&str>,
    message: String,
) -> ProjectEvent {
    ProjectEvent::Rejected(ProjectCommandRejected {
        command_id,
        name: name.to_owned(),
        reason: reason.to_owned(),
        field: field.map(str::to_owned),
        message,
    })
}

fn check_details(
    command_id: Uuid,
    name: &str,
    description: Option<&String>,
    tags: Option<&Vec<String>>,
) -> Option<ProjectEvent> {
    if description.is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Some(reject(
            command_id,
            name,
            "invalid_description",
            Some("description"),
            format!("the description is longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Some(reject(
                command_id,
                name,
                "invalid_tags",
                Some("tags"),
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        if let Some((i, _)) = tags
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_empty() || t.len() > MAX_TAG)
        {
            return Some(reject(
                command_id,
                name,
                "invalid_tags",
                Some(&format!("tags[{i}]")),
                format!("a tag must be 1 to {MAX_TAG} bytes long"),
            ));
        }
    }
    None
}

fn check_quota(command_id: Uuid, name: &str, quota: Option<u32>) -> Option<ProjectEvent> {
    quota.filter(|q| *q == 0 || *q > MAX_RUNNER_QUOTA).map(|_| {
        reject(
            command_id,
            name,
            "invalid_quota",
            Some("max_concurrent_runners"),
            format!("a project runs 1 to {MAX_RUNNER_QUOTA} runners at once"),
        )
    })
}

/// Decide a command against the current state of its project.
pub fn decide(
    state: Option<&Project>,
    command: &ProjectCommand,
    command_id: Uuid,
    roots: &[PathBuf],
    default_max_concurrent: u32,
) -> ProjectEvent {
    let name = target(command);
    if let Err(why) = validate_project_name(name) {
        return reject(
            command_id,
            name,
            "invalid_name",
            Some("name"),
            format!("the project name {why}"),
        );
    }
    match (command, state) {
        (
            ProjectCommand::Create(CreateProject {
                path,
                description,
                tags,
                max_concurrent_runners,
                ..
            }),
            None,
        ) => {
            if let Some(rejection) =
                check_details(command_id, name, description.as_ref(), Some(tags))
            {
                return rejection;
            }
            if let Some(rejection) = check_quota(command_id, name, *max_concurrent_runners) {
                return rejection;
            }
            match inside_allowed_roots(path, roots) {
                Ok(normalised) => ProjectEvent::Created(ProjectCreated {
                    command_id,
                    name: name.to_owned(),
                    path: normalised.display().to_string(),
                    description: description.clone(),
                    tags: tags.clone(),
                    max_concurrent_runners: max_concurrent_runners
                        .unwrap_or(default_max_concurrent),
                }),
                Err(e) => {
                    let reason = match e {
                        PathRejection::NotAbsolute => "path_not_absolute",
                        PathRejection::Malformed => "invalid_path",
                        PathRejection::OutsideRoots { .. } => "path_outside_roots",
                    };
                    reject(command_id, name, reason, Some("path"), e.to_string())
                }
            }
        }
        (ProjectCommand::Create(_), Some(_)) => reject(
            command_id,
            name,
            "name_taken",
            Some("name"),
            format!("a project named {name} exists already"),
        ),
        (_, None) => reject(
            command_id,
            name,
            "not_found",
            None,
            format!("no project named {name}"),
        ),
        (
            ProjectCommand::Update(UpdateProject {
                description,
                tags,
                max_concurrent_runners,
                ..
            }),
            Some(p),
        ) => {
            if let Some(rejection) =
                check_details(command_id, name, description.as_ref(), tags.as_ref())
            {
                return rejection;
            }
            if let Some(rejection) = check_quota(command_id, name, *max_concurrent_runners) {
                return rejection;
            }
            ProjectEvent::Updated(ProjectUpdated {
                command_id,
                name: name.to_owned(),
                description: description.clone().or_else(|| p.description.clone()),
                tags: tags.clone().unwrap_or_else(|| p.tags.clone()),
                max_concurrent_runners: max_concurrent_runners.unwrap_or(p.max_concurrent_runners),
            })
        }
        (ProjectCommand::Archive(_), Some(p)) if p.archived => reject(
            command_id,
            name,
            "already_archived",
            None,
            format!("{name} is archived already"),
        ),
        (ProjectCommand::Archive(_), Some(_)) => ProjectEvent::Archived(ProjectArchiveChanged {
            command_id,
            name: name.to_owned(),
        }),
        (ProjectCommand::Unarchive(_), Some(p)) if !p.archived => reject(
            command_id,
            name,
            "not_archived",
            None,
            format!("{name} is not archived"),
        ),
        (ProjectCommand::Unarchive(_), Some(_)) => {
            ProjectEvent::Unarchived(ProjectArchiveChanged {
                command_id,
                name: name.to_owned(),
            })
        }
    }
}

/// The answer to a project command an operator skipped.
pub fn skipped(name: &str, command_id: Uuid) -> ProjectEvent {
    reject(
        command_id,
        name,
        "skipped_by_operator",
        None,
        "an operator skipped this command after it failed".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratavore_events::project::ProjectRef;

    fn roots() -> Vec<PathBuf> {
        vec![PathBuf::from("/srv/projects")]
    }

    fn create(name: &str, path: &str) -> ProjectCommand {
        ProjectCommand::Create(CreateProject {
            name: name.into(),
            path: path.into(),
            description: None,
            tags: vec!["a".into()],
            max_concurrent_runners: None,
        })
    }

    fn reason(e: &ProjectEvent) -> Option<(&str, Option<&str>)> {
        match e {
            ProjectEvent::Rejected(r) => Some((r.reason.as_str(), r.field.as_deref())),
            _ => None,
        }
    }

    fn given(events: &[ProjectEvent]) -> Option<Project> {
        events.iter().fold(None, apply)
    }

    #[test]
    fn a_new_name_inside_a_root_creates_the_project_with_its_path_normalised() {
        let e = decide(
            None,
            &create("web", "/srv/projects/./web/"),
            Uuid::nil(),
            &roots(),
            5,
        );
        match e {
            ProjectEvent::Created(c) => assert_eq!(c.path, "/srv/projects/web"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_taken_name_a_bad_name_a_relative_path_and_an_escape_are_rejected_naming_the_field() {
        let existing = given(&[decide(
            None,
            &create("web", "/srv/projects/web"),
            Uuid::nil(),
            &roots(),
            5,
        )]);
        let cases = [
            (
                existing.as_ref(),
                create("web", "/srv/projects/web2"),
                ("name_taken", Some("name")),
            ),
            (
                None,
                create("Web", "/srv/projects/w"),
                ("invalid_name", Some("name")),
            ),
            (
                None,
                create("w", "srv/projects/w"),
                ("path_not_absolute", Some("path")),
            ),
            (
                None,
                create("w", "/srv/projects/../../etc"),
                ("path_outside_roots", Some("path")),
            ),
        ];
        for (state, cmd, expected) in cases {
            assert_eq!(
                reason(&decide(state, &cmd, Uuid::nil(), &roots(), 5)),
                Some(expected),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn archive_then_unarchive_and_refuse_doing_either_twice() {
        let r = |n: &str| ProjectRef { name: n.into() };
        let mut events = vec![decide(
            None,
            &create("web", "/srv/projects/web"),
            Uuid::nil(),
            &roots(),
            5,
        )];
        let archive = ProjectCommand::Archive(r("web"));
        events.push(decide(
            given(&events).as_ref(),
            &archive,
            Uuid::nil(),
            &roots(),
            5,
        ));
        assert!(given(&events).unwrap().archived);
        let again = decide(given(&events).as_ref(), &archive, Uuid::nil(), &roots(), 5);
        assert_eq!(reason(&again), Some(("already_archived", None)));
        events.push(decide(
            given(&events).as_ref(),
            &ProjectCommand::Unarchive(r("web")),
            Uuid::nil(),
            &roots(),
            5,
        ));
        assert!(!given(&events).unwrap().archived);
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name_and_an_unknown_project_is_not_found() {
        let state = given(&[decide(
            None,
            &create("web", "/srv/projects/web"),
            Uuid::nil(),
            &roots(),
            5,
        )]);
        let update = ProjectCommand::Update(UpdateProject {
            name: "web".into(),
            description: Some("d".into()),
            tags: None,
            max_concurrent_runners: None,
        });
        match decide(state.as_ref(), &update, Uuid::nil(), &roots(), 5) {
            ProjectEvent::Updated(u) => {
                assert_eq!(u.description.as_deref(), Some("d"));
                assert_eq!(u.tags, vec!["a".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reason(&decide(None, &update, Uuid::nil(), &roots(), 5)),
            Some(("not_found", None))
        );
    }

    #[test]
    fn oversized_details_are_rejected_naming_the_field() {
        let cmd = ProjectCommand::Create(CreateProject {
            name: "web".into(),
            path: "/srv/projects/web".into(),
            description: None,
            tags: vec!["ok".into(), String::new()],
            max_concurrent_runners: None,
        });
        assert_eq!(
            reason(&decide(None, &cmd, Uuid::nil(), &roots(), 5)),
            Some(("invalid_tags", Some("tags[1]")))
        );
    }

    #[test]
    fn a_projects_runner_quota_defaults_is_bounded_and_can_be_changed() {
        let created = decide(
            None,
            &create("web", "/srv/projects/web"),
            Uuid::nil(),
            &roots(),
            7,
        );
        let state = given(std::slice::from_ref(&created));
        assert_eq!(
            state.as_ref().map(|p| p.max_concurrent_runners),
            Some(7),
            "the default applies"
        );
        let zero = ProjectCommand::Create(CreateProject {
            name: "z".into(),
            path: "/srv/projects/z".into(),
            description: None,
            tags: vec![],
            max_concurrent_runners: Some(0),
        });
        assert_eq!(
            reason(&decide(None, &zero, Uuid::nil(), &roots(), 5)),
            Some(("invalid_quota", Some("max_concurrent_runners")))
        );
        let raise = ProjectCommand::Update(UpdateProject {
            name: "web".into(),
            description: None,
            tags: None,
            max_concurrent_runners: Some(12),
        });
        let updated = decide(state.as_ref(), &raise, Uuid::nil(), &roots(), 5);
        let after = given(&[created, updated]);
        assert_eq!(after.map(|p| p.max_concurrent_runners), Some(12));
    }
}
