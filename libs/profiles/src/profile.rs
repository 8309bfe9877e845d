//! One profile's settings, and the set of them a service loads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use stratavore_agent_protocols::ParserKind;

/// What a node does when an agent makes no progress for the stall timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallPolicy {
    /// Stop it (SIGTERM, then SIGKILL after the grace): the runner ends, or
    /// restarts, saying it stalled.
    Stop,
    /// Keep it running and flag the runner as stalled.
    Flag,
}

impl StallPolicy {
    /// The name config and events use.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Flag => "flag",
        }
    }
}

/// `[profiles.<name>]`: how to start one agent CLI. Argument templates may
/// hold `{prompt}` and `{session}`; `model_args`, `permission_args` and
/// `tools_args` (added only when the launch has a value for them) hold
/// `{model}`, `{permission}` and `{tools}` (comma-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileSection {
    /// The executable: a path, or a name looked up next to the supervisor's
    /// binary, then on the agent's `PATH`.
    pub executable: String,
    /// How its output is read.
    pub parser: ParserKind,
    /// Arguments for a new session.
    pub new_args: Vec<String>,
    /// Arguments to resume a session (a `continue` launch resumes the
    /// session the orchestrator chose, by id, with these too). Empty: the
    /// profile cannot resume.
    pub resume_args: Vec<String>,
    /// Added when the launch has a model.
    pub model_args: Vec<String>,
    /// Added when the launch has a permission setting.
    pub permission_args: Vec<String>,
    /// Added when the launch allows tools.
    pub tools_args: Vec<String>,
    /// Variables of the supervisor's environment the agent gets (credentials
    /// included: nothing else of the node's environment reaches it).
    pub env_passthrough: Vec<String>,
    /// Models a launch may choose; empty: no choice.
    pub models: Vec<String>,
    /// The model when the launch names none (none: the CLI's own default).
    pub default_model: Option<String>,
    /// Permission settings a launch may choose; empty: no choice.
    pub permissions: Vec<String>,
    /// The permission setting when the launch names none.
    pub default_permission: Option<String>,
    /// Tools a launch may allow; empty: no choice.
    pub tools: Vec<String>,
    /// The tools allowed when the launch names none.
    pub default_tools: Vec<String>,
    /// No progress (a turn, an item, assistant text) for this long is a
    /// stall, however many error or retry lines come meanwhile; 0: never.
    pub stall_timeout_ms: u64,
    /// What a stall does.
    pub stall_policy: StallPolicy,
}

impl Default for ProfileSection {
    /// A profile named only in config starts from this: a command that takes
    /// the prompt as its one argument, no parser, no choices, no stall timer.
    fn default() -> Self {
        Self {
            executable: String::new(),
            parser: ParserKind::None,
            new_args: vec!["{prompt}".to_owned()],
            resume_args: Vec::new(),
            model_args: Vec::new(),
            permission_args: Vec::new(),
            tools_args: Vec::new(),
            env_passthrough: crate::builtin::BASE_ENV
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            models: Vec::new(),
            default_model: None,
            permissions: Vec::new(),
            default_permission: None,
            tools: Vec::new(),
            default_tools: Vec::new(),
            stall_timeout_ms: 0,
            stall_policy: StallPolicy::Stop,
        }
    }
}

/// A profile setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ProfileError {
    /// The dotted config key (`profiles.codex.default_model`).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl ProfileSection {
    /// The stall timeout, or None when stalls are not watched.
    #[must_use]
    pub fn stall_timeout(&self) -> Option<Duration> {
        (self.stall_timeout_ms > 0).then(|| Duration::from_millis(self.stall_timeout_ms))
    }

    /// Whether sessions of this profile can be resumed.
    #[must_use]
    pub fn can_resume(&self) -> bool {
        !self.resume_args.is_empty()
    }

    /// Checks that the settings fit together; `name` makes the keys.
    pub fn validate(&self, name: &str) -> Result<(), ProfileError> {
        let err = |field: &str, reason: String| ProfileError {
            key: format!("profiles.{name}.{field}"),
            reason,
        };
        if self.executable.trim().is_empty() {
            return Err(err("executable", "must name a program".into()));
        }
        if self.new_args.is_empty() && self.resume_args.is_empty() {
            return Err(err(
                "new_args",
                "a profile needs arguments to start with".into(),
            ));
        }
        let option_groups = [
            (
                "models",
                &self.models,
                "model_args",
                &self.model_args,
                "{model}",
            ),
            (
                "permissions",
                &self.permissions,
                "permission_args",
                &self.permission_args,
                "{permission}",
            ),
            (
                "tools",
                &self.tools,
                "tools_args",
                &self.tools_args,
                "{tools}",
            ),
        ];
        for (list, values, args_key, args, placeholder) in option_groups {
            if !values.is_empty() && !args.iter().any(|a| a.contains(placeholder)) {
                return Err(err(
                    args_key,
                    format!("{list} are offered, so it must hold {placeholder}"),
                ));
            }
        }
        for (key, default, allowed) in [
            ("default_model", &self.default_model, &self.models),
            (
                "default_permission",
                &self.default_permission,
                &self.permissions,
            ),
        ] {
            if let Some(value) = default
                && !allowed.contains(value)
            {
                return Err(err(
                    key,
                    format!("{value} is not in the allowlist {allowed:?}"),
                ));
            }
        }
        if let Some(tool) = self.default_tools.iter().find(|t| !self.tools.contains(t)) {
            return Err(err(
                "default_tools",
                format!("{tool} is not in the allowlist {:?}", self.tools),
            ));
        }
        if let Some(tool) = self.tools.iter().find(|t| t.contains(',')) {
            return Err(err(
                "tools",
                format!("{tool} holds a comma, which separates tools in {{tools}}"),
            ));
        }
        Ok(())
    }
}

/// The `[profiles]` table a service loads: the built-in profiles, each key
/// of which the config file and environment may override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profiles {
    /// Profiles by name.
    pub profiles: BTreeMap<String, ProfileSection>,
}

impl Default for Profiles {
    fn default() -> Self {
        Self {
            profiles: crate::builtin_profiles(),
        }
    }
}

impl Profiles {
    /// Validates every profile.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.profiles.is_empty() {
            return Err(ProfileError {
                key: "profiles".into(),
                reason: "name at least one profile".into(),
            });
        }
        self.profiles
            .iter()
            .try_for_each(|(name, profile)| profile.validate(name))
    }

    /// The dotted keys whose environment value is a comma-separated list
    /// (`STRATAVORE__PROFILES__DEMO__MODELS=sonnet,opus`): the lists whose
    /// items cannot hold a comma, of every profile here. Argument templates
    /// are left out, since an argument may well hold a comma.
    #[must_use]
    pub fn env_list_keys(&self) -> Vec<String> {
        const LISTS: [&str; 5] = [
            "models",
            "permissions",
            "tools",
            "default_tools",
            "env_passthrough",
        ];
        self.profiles
            .keys()
            .flat_map(|name| LISTS.map(|key| format!("profiles.{name}.{key}")))
            .collect()
    }

    /// The profile named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ProfileSection> {
        self.profiles.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_is_valid() {
        Profiles::default().validate().unwrap();
    }

    #[test]
    fn a_default_outside_its_allowlist_or_an_option_without_its_placeholder_is_refused() {
        let mut p = builtin_profiles()["claude-code"].clone();
        p.default_model = Some("gpt-9".into());
        assert_eq!(
            p.validate("claude-code").unwrap_err().key,
            "profiles.claude-code.default_model"
        );
        let mut p = builtin_profiles()["claude-code"].clone();
        p.tools_args = vec!["--allowedTools".into()];
        assert_eq!(
            p.validate("claude-code").unwrap_err().key,
            "profiles.claude-code.tools_args"
        );
        let p = ProfileSection::default();
        assert_eq!(p.validate("x").unwrap_err().key, "profiles.x.executable");
    }

    use crate::builtin_profiles;
}
