//! Deciding a launch: the project, its quota, the profile and the session,
//! known in advance and passed in; approval or a rejection naming why.

use super::projects::Project;
use stratavore_events::runner::{LaunchApproved, LaunchMode, LaunchRejected, LaunchRunner};
use uuid::Uuid;

/// What the shell looked up for a launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFacts {
    /// The project, if it exists.
    pub project: Option<Project>,
    /// Runners of the project that have not ended.
    pub active_runners: i64,
    /// Whether the profile is configured.
    pub profile_known: bool,
    /// With `continue`: the project's latest resumable session not in use.
    pub latest_resumable: Option<String>,
    /// With `resume`: the named session (project, bound, in use).
    pub named_session: Option<(String, bool, bool)>,
    /// An id for a new session.
    pub fresh_session_id: String,
    /// Restarts when the launch does not say.
    pub default_max_restarts: u32,
}

fn rejected(
    cmd: &LaunchRunner,
    command_id: Uuid,
    reason: &str,
    field: Option<&str>,
    message: String,
) -> LaunchRejected {
    LaunchRejected {
        command_id,
        runner_id: cmd.runner_id,
        reason: reason.to_owned(),
        field: field.map(str::to_owned),
        message,
    }
}

/// Approve or reject a launch.
pub fn decide_launch(
    cmd: &LaunchRunner,
    command_id: Uuid,
    facts: &LaunchFacts,
) -> Result<LaunchApproved, LaunchRejected> {
    let reject =
        |reason, field, message: String| Err(rejected(cmd, command_id, reason, field, message));
    if !facts.profile_known {
        return reject(
            "unknown_profile",
            Some("profile"),
            format!("no agent profile named {}", cmd.profile),
        );
    }
    let Some(project) = &facts.project else {
        return reject(
            "unknown_project",
            Some("project"),
            format!("no project named {}", cmd.project),
        );
    };
    if project.archived {
        return reject(
            "project_archived",
            Some("project"),
            format!("{} is archived", cmd.project),
        );
    }
    if cmd.prompt.is_empty() {
        return reject("empty_prompt", Some("prompt"), "the prompt is empty".into());
    }
    let quota = i64::from(project.max_concurrent_runners);
    if facts.active_runners >= quota {
        return reject(
            "quota_reached",
            None,
            format!(
                "{} already runs {} of its {quota} runners",
                cmd.project, facts.active_runners
            ),
        );
    }
    let (session_id, resume) = match cmd.mode {
        LaunchMode::New => {
            if cmd.session_id.is_some() {
                return reject(
                    "session_not_allowed",
                    Some("session_id"),
                    "mode new starts a new session".into(),
                );
            }
            (facts.fresh_session_id.clone(), false)
        }
        LaunchMode::Continue => match &facts.latest_resumable {
            Some(id) => (id.clone(), true),
            None => {
                return reject(
                    "no_resumable_session",
                    Some("mode"),
                    format!(
                        "{} has no resumable session that is not in use",
                        cmd.project
                    ),
                );
            }
        },
        LaunchMode::Resume => {
            let Some(id) = &cmd.session_id else {
                return reject(
                    "session_required",
                    Some("session_id"),
                    "mode resume needs a session_id".into(),
                );
            };
            match &facts.named_session {
                None => {
                    return reject(
                        "unknown_session",
                        Some("session_id"),
                        format!("no session {id}"),
                    );
                }
                Some((project, _, _)) if project != &cmd.project => {
                    return reject(
                        "session_of_another_project",
                        Some("session_id"),
                        format!("session {id} belongs to {project}"),
                    );
                }
                Some((_, false, _)) => {
                    return reject(
                        "session_not_resumable",
                        Some("session_id"),
                        format!("session {id} never saved a turn"),
                    );
                }
                Some((_, _, true)) => {
                    return reject(
                        "session_in_use",
                        Some("session_id"),
                        format!("session {id} is in use"),
                    );
                }
                Some(_) => (id.clone(), true),
            }
        }
    };
    Ok(LaunchApproved {
        command_id,
        runner_id: cmd.runner_id,
        project: project.name.clone(),
        path: project.path.clone(),
        profile: cmd.profile.clone(),
        session_id,
        resume,
        model: cmd.model.clone(),
        permission: cmd.permission.clone(),
        max_restarts: cmd.max_restarts.unwrap_or(facts.default_max_restarts),
        prompt: cmd.prompt.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(mode: LaunchMode, session: Option<&str>) -> LaunchRunner {
        LaunchRunner {
            runner_id: Uuid::from_u128(1),
            project: "web".into(),
            profile: "demo".into(),
            prompt: "do it".into(),
            mode,
            session_id: session.map(str::to_owned),
            model: None,
            permission: None,
            max_restarts: None,
        }
    }

    fn facts() -> LaunchFacts {
        LaunchFacts {
            project: Some(Project {
                name: "web".into(),
                path: "/srv/projects/web".into(),
                description: None,
                tags: vec![],
                archived: false,
                max_concurrent_runners: 5,
            }),
            active_runners: 0,
            profile_known: true,
            latest_resumable: None,
            named_session: None,
            fresh_session_id: "fresh".into(),
            default_max_restarts: 3,
        }
    }

    fn reason(r: Result<LaunchApproved, LaunchRejected>) -> String {
        r.err().map(|r| r.reason).unwrap_or_default()
    }

    #[test]
    fn a_new_launch_gets_a_fresh_session_and_the_default_restarts() {
        let a = decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &facts()).unwrap();
        assert_eq!(
            (a.session_id.as_str(), a.resume, a.max_restarts),
            ("fresh", false, 3)
        );
        assert_eq!(a.path, "/srv/projects/web");
    }

    #[test]
    fn the_last_slot_is_refused_when_the_quota_is_reached() {
        let f = LaunchFacts {
            active_runners: 5,
            ..facts()
        };
        assert_eq!(
            reason(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f)),
            "quota_reached"
        );
    }

    #[test]
    fn continue_takes_the_latest_resumable_session_or_is_refused() {
        let f = LaunchFacts {
            latest_resumable: Some("s-9".into()),
            ..facts()
        };
        let a = decide_launch(&cmd(LaunchMode::Continue, None), Uuid::nil(), &f).unwrap();
        assert_eq!((a.session_id.as_str(), a.resume), ("s-9", true));
        assert_eq!(
            reason(decide_launch(
                &cmd(LaunchMode::Continue, None),
                Uuid::nil(),
                &facts()
            )),
            "no_resumable_session"
        );
    }

    #[test]
    fn resume_refuses_unknown_foreign_unbound_and_busy_sessions() {
        let cases = [
            (None, "unknown_session"),
            (
                Some(("other".to_owned(), true, false)),
                "session_of_another_project",
            ),
            (
                Some(("web".to_owned(), false, false)),
                "session_not_resumable",
            ),
            (Some(("web".to_owned(), true, true)), "session_in_use"),
        ];
        for (named, expected) in cases {
            let f = LaunchFacts {
                named_session: named,
                ..facts()
            };
            assert_eq!(
                reason(decide_launch(
                    &cmd(LaunchMode::Resume, Some("s")),
                    Uuid::nil(),
                    &f
                )),
                expected
            );
        }
        let f = LaunchFacts {
            named_session: Some(("web".into(), true, false)),
            ..facts()
        };
        let a = decide_launch(&cmd(LaunchMode::Resume, Some("s")), Uuid::nil(), &f).unwrap();
        assert_eq!((a.session_id.as_str(), a.resume), ("s", true));
        assert_eq!(
            reason(decide_launch(
                &cmd(LaunchMode::Resume, None),
                Uuid::nil(),
                &facts()
            )),
            "session_required"
        );
    }

    #[test]
    fn unknown_or_archived_projects_and_unknown_profiles_are_refused_naming_the_field() {
        let f = LaunchFacts {
            project: None,
            ..facts()
        };
        let r = decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.field.as_deref()),
            ("unknown_project", Some("project"))
        );
        let mut f = facts();
        if let Some(p) = f.project.as_mut() {
            p.archived = true;
        }
        assert_eq!(
            reason(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f)),
            "project_archived"
        );
        let f = LaunchFacts {
            profile_known: false,
            ..facts()
        };
        assert_eq!(
            reason(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f)),
            "unknown_profile"
        );
    }
}
