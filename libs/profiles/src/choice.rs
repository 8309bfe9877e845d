//! What a launch may choose: a model, a permission setting and tools, each
//! from the profile's allowlist, with the profile's defaults for what it
//! leaves out.

use crate::ProfileSection;

/// What a launch asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Choice<'a> {
    /// A model.
    pub model: Option<&'a str>,
    /// A permission setting.
    pub permission: Option<&'a str>,
    /// Tools to allow (`Some(&[])` allows none).
    pub tools: Option<&'a [String]>,
}

/// What the launch runs with, defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    /// The model, if any.
    pub model: Option<String>,
    /// The permission setting, if any.
    pub permission: Option<String>,
    /// Tools allowed.
    pub tools: Vec<String>,
}

/// A choice the profile does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChoiceError {
    /// The launch field at fault: `model`, `permission` or `allowed_tools`.
    pub field: &'static str,
    /// What is wrong, with what is allowed.
    pub message: String,
}

fn pick(
    field: &'static str,
    profile_name: &str,
    asked: Option<&str>,
    allowed: &[String],
    default: Option<&String>,
) -> Result<Option<String>, ChoiceError> {
    match asked {
        None => Ok(default.cloned()),
        Some(value) if allowed.iter().any(|a| a == value) => Ok(Some(value.to_owned())),
        Some(value) if allowed.is_empty() => Err(ChoiceError {
            field,
            message: format!(
                "profile {profile_name} offers no {field} to choose, not even {value}"
            ),
        }),
        Some(value) => Err(ChoiceError {
            field,
            message: format!(
                "{value} is not a {field} profile {profile_name} allows (allowed: {})",
                allowed.join(", ")
            ),
        }),
    }
}

impl ProfileSection {
    /// The launch's choice checked against the allowlists, defaults applied.
    pub fn choose(&self, profile_name: &str, choice: Choice<'_>) -> Result<Chosen, ChoiceError> {
        let model = pick(
            "model",
            profile_name,
            choice.model,
            &self.models,
            self.default_model.as_ref(),
        )?;
        let permission = pick(
            "permission",
            profile_name,
            choice.permission,
            &self.permissions,
            self.default_permission.as_ref(),
        )?;
        let tools = match choice.tools {
            None => self.default_tools.clone(),
            Some(asked) => {
                if let Some(bad) = asked.iter().find(|t| !self.tools.contains(t)) {
                    let allowed = if self.tools.is_empty() {
                        "none".to_owned()
                    } else {
                        self.tools.join(", ")
                    };
                    return Err(ChoiceError {
                        field: "allowed_tools",
                        message: format!(
                            "{bad} is not a tool profile {profile_name} allows (allowed: {allowed})"
                        ),
                    });
                }
                let mut tools = Vec::with_capacity(asked.len());
                for tool in asked {
                    if !tools.contains(tool) {
                        tools.push(tool.clone());
                    }
                }
                tools
            }
        };
        Ok(Chosen {
            model,
            permission,
            tools,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin_profiles;

    fn claude() -> ProfileSection {
        builtin_profiles()["claude-code"].clone()
    }

    #[test]
    fn nothing_chosen_takes_the_profile_defaults() {
        let chosen = claude().choose("claude-code", Choice::default()).unwrap();
        assert_eq!(chosen.model, None);
        assert_eq!(chosen.permission.as_deref(), Some("acceptEdits"));
        assert!(chosen.tools.contains(&"Edit".to_owned()));
        assert!(chosen.tools.contains(&"Bash".to_owned()));
    }

    #[test]
    fn allowed_choices_are_kept_and_repeated_tools_given_once() {
        let tools = vec!["Read".to_owned(), "Read".to_owned(), "Grep".to_owned()];
        let chosen = claude()
            .choose(
                "claude-code",
                Choice {
                    model: Some("opus"),
                    permission: Some("plan"),
                    tools: Some(&tools),
                },
            )
            .unwrap();
        assert_eq!(chosen.model.as_deref(), Some("opus"));
        assert_eq!(chosen.permission.as_deref(), Some("plan"));
        assert_eq!(chosen.tools, ["Read", "Grep"]);
        let none: Vec<String> = Vec::new();
        let chosen = claude()
            .choose(
                "claude-code",
                Choice {
                    tools: Some(&none),
                    ..Choice::default()
                },
            )
            .unwrap();
        assert!(chosen.tools.is_empty());
    }

    #[test]
    fn a_choice_outside_an_allowlist_names_its_field_and_what_is_allowed() {
        let err = claude()
            .choose(
                "claude-code",
                Choice {
                    model: Some("gpt-5"),
                    ..Choice::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.field, "model");
        assert!(
            err.message.contains("sonnet, opus, haiku"),
            "{}",
            err.message
        );
        let err = claude()
            .choose(
                "claude-code",
                Choice {
                    permission: Some("bypassPermissions"),
                    ..Choice::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.field, "permission");
        let tools = vec!["Read".to_owned(), "rm -rf".to_owned()];
        let err = claude()
            .choose(
                "claude-code",
                Choice {
                    tools: Some(&tools),
                    ..Choice::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.field, "allowed_tools");
        assert!(err.message.starts_with("rm -rf is not"), "{}", err.message);
        let codex = builtin_profiles()["codex"].clone();
        let err = codex
            .choose(
                "codex",
                Choice {
                    tools: Some(&tools),
                    ..Choice::default()
                },
            )
            .unwrap_err();
        assert!(err.message.contains("allowed: none"), "{}", err.message);
    }
}
