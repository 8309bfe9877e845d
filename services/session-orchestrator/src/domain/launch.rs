//! Deciding a launch: the project, its quota, the profile and the session,
//! known in advance and passed in; approval (with the profile's defaults
//! for what the launch did not choose) or a rejection naming why.

use super::projects::Project;
use stratavore_events::runner::{LaunchApproved, LaunchMode, LaunchRejected, LaunchRunner};
use stratavore_profiles::{Choice, ProfileSection};
use uuid::Uuid;

/// What the shell looked up for a launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFacts {
    /// The project, if it exists.
    pub project: Option<Project>,
    /// Runners of the project that have not ended.
    pub active_runners: i64,
    /// The profile the launch names, if it is configured.
    pub profile: Option<ProfileSection>,
    /// With `continue`: the project's latest resumable session not in use.
    pub latest_resumable: Option<String>,
    /// With `resume`: the named session (project, bound, in use).
    pub named_session: Option<(String, bool, bool)>,
    /// Sessions this launch may resolve to whose files only a lost node
    /// holds, with that node (none when the nodes share session storage).
    pub sessions_on_lost_nodes: Vec<(String, String)>,
    /// An id for a new session.
    pub fresh_session_id: String,
    /// Restarts when the launch does not say.
    pub default_max_restarts: u32,
    /// The budgets whose scope holds the launch (global, its project, its
    /// profile), each with its current period's spending.
    pub budgets: Vec<super::budgets::Standing>,
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
    let Some(profile) = &facts.profile else {
        return reject(
            "unknown_profile",
            Some("profile"),
            format!("no agent profile named {}", cmd.profile),
        );
    };
    let choice = Choice {
        model: cmd.model.as_deref(),
        permission: cmd.permission.as_deref(),
        tools: cmd.allowed_tools.as_deref(),
    };
    let chosen = match profile.choose(&cmd.profile, choice) {
        Ok(chosen) => chosen,
        Err(bad) => return reject("choice_not_allowed", Some(bad.field), bad.message),
    };
    if matches!(cmd.mode, LaunchMode::Continue | LaunchMode::Resume) && !profile.can_resume() {
        return reject(
            "profile_cannot_resume",
            Some("mode"),
            format!("profile {} cannot resume a session", cmd.profile),
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
    if let Some(spent) = super::budgets::exhausted(&facts.budgets) {
        return reject(
            "budget_exceeded",
            None,
            super::budgets::refusal_message(spent),
        );
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
    let lost_node = facts
        .sessions_on_lost_nodes
        .iter()
        .find(|(s, _)| *s == session_id)
        .map(|(_, node)| node);
    if let (true, Some(node)) = (resume, lost_node) {
        let field = match cmd.mode {
            LaunchMode::Continue => "mode",
            _ => "session_id",
        };
        return reject(
            "session_node_lost",
            Some(field),
            format!(
                "session {session_id} lives on node {node}, which is lost; it can be resumed once {node} is back"
            ),
        );
    }
    Ok(LaunchApproved {
        command_id,
        runner_id: cmd.runner_id,
        project: project.name.clone(),
        path: project.path.clone(),
        profile: cmd.profile.clone(),
        session_id,
        resume,
        model: chosen.model,
        permission: chosen.permission,
        max_restarts: cmd.max_restarts.unwrap_or(facts.default_max_restarts),
        prompt: cmd.prompt.clone(),
        allowed_tools: chosen.tools,
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
            allowed_tools: None,
            max_restarts: None,
        }
    }

    fn profile(name: &str) -> Option<ProfileSection> {
        stratavore_profiles::builtin_profiles().remove(name)
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
            profile: profile("demo"),
            latest_resumable: None,
            named_session: None,
            sessions_on_lost_nodes: vec![],
            fresh_session_id: "fresh".into(),
            default_max_restarts: 3,
            budgets: vec![],
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
            profile: None,
            ..facts()
        };
        assert_eq!(
            reason(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f)),
            "unknown_profile"
        );
    }

    #[test]
    fn a_launch_that_chooses_nothing_runs_with_the_profiles_defaults() {
        let a = decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &facts()).unwrap();
        assert_eq!(a.model, None);
        assert_eq!(a.permission.as_deref(), Some("acceptEdits"));
        assert_eq!(
            a.allowed_tools,
            [
                "Read",
                "Edit",
                "MultiEdit",
                "Write",
                "Glob",
                "Grep",
                "LS",
                "Bash"
            ]
        );
    }

    #[test]
    fn allowed_choices_are_approved_as_chosen() {
        let c = LaunchRunner {
            model: Some("opus".into()),
            permission: Some("plan".into()),
            allowed_tools: Some(vec!["Read".into(), "Grep".into()]),
            ..cmd(LaunchMode::New, None)
        };
        let a = decide_launch(&c, Uuid::nil(), &facts()).unwrap();
        assert_eq!(a.model.as_deref(), Some("opus"));
        assert_eq!(a.permission.as_deref(), Some("plan"));
        assert_eq!(a.allowed_tools, ["Read", "Grep"]);
        let none = LaunchRunner {
            allowed_tools: Some(Vec::new()),
            ..cmd(LaunchMode::New, None)
        };
        let a = decide_launch(&none, Uuid::nil(), &facts()).unwrap();
        assert!(a.allowed_tools.is_empty(), "an empty list allows no tool");
    }

    #[test]
    fn a_choice_outside_the_profiles_allowlists_is_refused_naming_its_field() {
        let cases = [
            (
                LaunchRunner {
                    model: Some("claude-sonnet-4".into()),
                    ..cmd(LaunchMode::New, None)
                },
                "model",
            ),
            (
                LaunchRunner {
                    permission: Some("bypassPermissions".into()),
                    ..cmd(LaunchMode::New, None)
                },
                "permission",
            ),
            (
                LaunchRunner {
                    allowed_tools: Some(vec!["Read".into(), "Shell".into()]),
                    ..cmd(LaunchMode::New, None)
                },
                "allowed_tools",
            ),
        ];
        for (c, field) in cases {
            let r = decide_launch(&c, Uuid::nil(), &facts()).unwrap_err();
            assert_eq!(
                (r.reason.as_str(), r.field.as_deref()),
                ("choice_not_allowed", Some(field))
            );
            assert!(r.message.contains("allowed"), "{}", r.message);
        }
    }

    #[test]
    fn continue_or_resume_on_a_profile_that_cannot_resume_is_refused_naming_the_mode() {
        let f = LaunchFacts {
            profile: profile("generic"),
            latest_resumable: Some("s-9".into()),
            named_session: Some(("web".into(), true, false)),
            ..facts()
        };
        for c in [
            cmd(LaunchMode::Continue, None),
            cmd(LaunchMode::Resume, Some("s-9")),
        ] {
            let generic = LaunchRunner {
                profile: "generic".into(),
                ..c
            };
            let r = decide_launch(&generic, Uuid::nil(), &f).unwrap_err();
            assert_eq!(
                (r.reason.as_str(), r.field.as_deref()),
                ("profile_cannot_resume", Some("mode"))
            );
        }
        let fresh = LaunchRunner {
            profile: "generic".into(),
            ..cmd(LaunchMode::New, None)
        };
        assert!(decide_launch(&fresh, Uuid::nil(), &f).is_ok());
    }

    #[test]
    fn continue_or_resume_of_a_session_whose_node_is_lost_is_refused_naming_the_node() {
        let f = LaunchFacts {
            latest_resumable: Some("s-9".into()),
            named_session: Some(("web".into(), true, false)),
            sessions_on_lost_nodes: vec![("s-9".into(), "node-b".into())],
            ..facts()
        };
        for (c, field) in [
            (cmd(LaunchMode::Continue, None), "mode"),
            (cmd(LaunchMode::Resume, Some("s-9")), "session_id"),
        ] {
            let r = decide_launch(&c, Uuid::nil(), &f).unwrap_err();
            assert_eq!(
                (r.reason.as_str(), r.field.as_deref()),
                ("session_node_lost", Some(field))
            );
            assert!(r.message.contains("node-b"), "{}", r.message);
        }
        // Another session, or a new one, is not held up by the lost node.
        assert!(decide_launch(&cmd(LaunchMode::Resume, Some("s-8")), Uuid::nil(), &f).is_ok());
        assert!(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f).is_ok());
    }

    #[test]
    fn a_launch_under_an_exhausted_budget_is_refused_as_budget_exceeded() {
        use crate::domain::budgets::Standing;
        use stratavore_events::budget::{
            BudgetAction, BudgetDefinition, BudgetPeriod, BudgetScope,
        };
        let start = chrono::DateTime::UNIX_EPOCH;
        let standing = |tokens| Standing {
            budget: BudgetDefinition {
                budget_id: Uuid::from_u128(9),
                scope: BudgetScope::Global,
                target: None,
                period: BudgetPeriod::Hourly,
                time_zone: "UTC".into(),
                limit_tokens: Some(100),
                limit_usd: None,
                warn_percent: 80,
                action: BudgetAction::Warn,
            },
            period: stratavore_budgets::Period {
                start,
                end: start + chrono::Duration::hours(1),
            },
            spent: stratavore_budgets::Spend { tokens, usd: 0.0 },
        };
        let f = LaunchFacts {
            budgets: vec![standing(100)],
            ..facts()
        };
        let refused = decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f).unwrap_err();
        assert_eq!(refused.reason, "budget_exceeded");
        assert!(
            refused.message.contains("1970-01-01T01:00:00Z"),
            "{}",
            refused.message
        );
        let f = LaunchFacts {
            budgets: vec![standing(99)],
            ..facts()
        };
        assert!(decide_launch(&cmd(LaunchMode::New, None), Uuid::nil(), &f).is_ok());
    }
}
