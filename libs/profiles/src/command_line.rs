//! The agent's command line, from a profile's templates and a launch: pure,
//! so the choice between an argument and stdin is tested without a process.

use crate::ProfileSection;

/// A prompt longer than this goes on stdin: an argument list is limited to
/// 128 KiB on Linux, and the rest of the command line needs room too.
pub const MAX_PROMPT_ARG_BYTES: usize = 100 * 1024;

/// What a launch fills the templates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchValues<'a> {
    /// The prompt.
    pub prompt: &'a str,
    /// The session to start or resume.
    pub session: &'a str,
    /// Whether the session is resumed.
    pub resume: bool,
    /// The model, when there is one.
    pub model: Option<&'a str>,
    /// The permission setting, when there is one.
    pub permission: Option<&'a str>,
    /// Tools allowed.
    pub tools: &'a [String],
}

/// The arguments (after the executable) and whether the prompt goes on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// The arguments.
    pub args: Vec<String>,
    /// True when the prompt is fed on stdin instead of as an argument; stdin
    /// is closed after it either way, since some CLIs wait on an open one.
    pub prompt_on_stdin: bool,
}

/// Fill the profile's templates. A long prompt is left out of the arguments
/// (an argument that is exactly `{prompt}` is dropped, so `-p` stays with
/// no text, which makes Claude Code read stdin, and Codex and OpenCode read
/// stdin when they get no prompt argument) and goes on stdin.
#[must_use]
pub fn agent_command(profile: &ProfileSection, values: &LaunchValues<'_>) -> AgentCommand {
    let prompt_on_stdin = values.prompt.len() > MAX_PROMPT_ARG_BYTES;
    let prompt = if prompt_on_stdin { "" } else { values.prompt };
    let tools = values.tools.join(",");
    let mut args = Vec::new();
    let mut fill = |template: &[String]| {
        for word in template {
            if word == "{prompt}" && prompt_on_stdin {
                continue;
            }
            args.push(
                word.replace("{prompt}", prompt)
                    .replace("{session}", values.session)
                    .replace("{model}", values.model.unwrap_or_default())
                    .replace("{permission}", values.permission.unwrap_or_default())
                    .replace("{tools}", &tools),
            );
        }
    };
    fill(if values.resume {
        &profile.resume_args
    } else {
        &profile.new_args
    });
    if values.model.is_some() {
        fill(&profile.model_args);
    }
    if values.permission.is_some() {
        fill(&profile.permission_args);
    }
    if !values.tools.is_empty() {
        fill(&profile.tools_args);
    }
    AgentCommand {
        args,
        prompt_on_stdin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin_profiles;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn values(prompt: &str) -> LaunchValues<'_> {
        LaunchValues {
            prompt,
            session: "s-1",
            resume: false,
            model: None,
            permission: None,
            tools: &[],
        }
    }

    fn claude() -> ProfileSection {
        builtin_profiles()["claude-code"].clone()
    }

    #[test]
    fn a_new_claude_session_gets_the_prompt_as_an_argument_and_its_session_id() {
        let cmd = agent_command(&claude(), &values("fix it"));
        assert_eq!(
            cmd.args,
            words(&[
                "-p",
                "fix it",
                "--output-format",
                "stream-json",
                "--verbose",
                "--session-id",
                "s-1"
            ])
        );
        assert!(!cmd.prompt_on_stdin);
    }

    #[test]
    fn a_resume_names_the_session_and_chosen_options_and_tools_follow() {
        let tools = words(&["Read", "Bash"]);
        let v = LaunchValues {
            resume: true,
            model: Some("opus"),
            permission: Some("acceptEdits"),
            tools: &tools,
            ..values("go on")
        };
        let cmd = agent_command(&claude(), &v);
        assert_eq!(
            cmd.args[5..],
            words(&[
                "--resume",
                "s-1",
                "--model",
                "opus",
                "--permission-mode",
                "acceptEdits",
                "--allowedTools",
                "Read,Bash"
            ])
        );
    }

    #[test]
    fn codex_skips_the_git_check_and_resumes_its_thread() {
        let codex = builtin_profiles()["codex"].clone();
        let cmd = agent_command(&codex, &values("hi"));
        assert_eq!(
            cmd.args,
            words(&["exec", "--json", "--skip-git-repo-check", "hi"])
        );
        let v = LaunchValues {
            resume: true,
            session: "thread-9",
            ..values("more")
        };
        assert_eq!(
            agent_command(&codex, &v).args,
            words(&[
                "exec",
                "--json",
                "--skip-git-repo-check",
                "resume",
                "thread-9",
                "more"
            ])
        );
    }

    #[test]
    fn a_prompt_over_100_kib_goes_on_stdin_and_leaves_p_without_text() {
        let long = "x".repeat(MAX_PROMPT_ARG_BYTES + 1);
        let cmd = agent_command(&claude(), &values(&long));
        assert!(cmd.prompt_on_stdin);
        assert_eq!(cmd.args[..2], words(&["-p", "--output-format"]));
        assert!(cmd.args.iter().all(|a| a.len() < 100));
        let exact = "x".repeat(MAX_PROMPT_ARG_BYTES);
        assert!(!agent_command(&claude(), &values(&exact)).prompt_on_stdin);
    }
}
