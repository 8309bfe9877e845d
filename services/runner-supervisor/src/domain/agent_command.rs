//! The agent's command line, from a profile's templates and an offer: pure,
//! so the choice between an argument and stdin is tested without a process.

/// A prompt longer than this goes on stdin: an argument list is limited to
/// 128 KiB on Linux, and the rest of the command line needs room too.
pub const MAX_PROMPT_ARG_BYTES: usize = 100 * 1024;

/// What a launch fills the templates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchValues<'a> {
    /// The prompt.
    pub prompt: &'a str,
    /// The session to start or resume.
    pub session: &'a str,
    /// The model, when the launch chose one.
    pub model: Option<&'a str>,
    /// The permission setting, when the launch chose one.
    pub permission: Option<&'a str>,
}

/// A profile's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Templates<'a> {
    /// For a new session.
    pub new_args: &'a [String],
    /// For a resumed one.
    pub resume_args: &'a [String],
    /// Added with a model.
    pub model_args: &'a [String],
    /// Added with a permission setting.
    pub permission_args: &'a [String],
}

/// The arguments (after the executable) and whether the prompt goes on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// The arguments.
    pub args: Vec<String>,
    /// True when the prompt is fed on stdin instead of as an argument.
    pub prompt_on_stdin: bool,
}

/// Fill the templates. A long prompt is left out of the arguments (an
/// argument that is exactly `{prompt}` is dropped, so `-p` stays with no
/// text, which makes Claude Code read stdin) and goes on stdin.
#[must_use]
pub fn agent_command(
    templates: Templates<'_>,
    values: &LaunchValues<'_>,
    resume: bool,
) -> AgentCommand {
    let prompt_on_stdin = values.prompt.len() > MAX_PROMPT_ARG_BYTES;
    let base = if resume {
        templates.resume_args
    } else {
        templates.new_args
    };
    let mut args = Vec::new();
    let mut fill = |template: &[String], extra: (&str, Option<&str>)| {
        for word in template {
            if word == "{prompt}" && prompt_on_stdin {
                continue;
            }
            let prompt = if prompt_on_stdin { "" } else { values.prompt };
            let mut filled = word
                .replace("{prompt}", prompt)
                .replace("{session}", values.session);
            if let (name, Some(value)) = extra {
                filled = filled.replace(name, value);
            }
            args.push(filled);
        }
    };
    fill(base, ("", None));
    if let Some(model) = values.model {
        fill(templates.model_args, ("{model}", Some(model)));
    }
    if let Some(permission) = values.permission {
        fill(
            templates.permission_args,
            ("{permission}", Some(permission)),
        );
    }
    AgentCommand {
        args,
        prompt_on_stdin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    struct Profile {
        new_args: Vec<String>,
        resume_args: Vec<String>,
        model_args: Vec<String>,
        permission_args: Vec<String>,
    }

    fn claude() -> Profile {
        Profile {
            new_args: words(&[
                "-p",
                "{prompt}",
                "--output-format",
                "stream-json",
                "--verbose",
                "--session-id",
                "{session}",
            ]),
            resume_args: words(&[
                "-p",
                "{prompt}",
                "--output-format",
                "stream-json",
                "--verbose",
                "--resume",
                "{session}",
            ]),
            model_args: words(&["--model", "{model}"]),
            permission_args: words(&["--permission-mode", "{permission}"]),
        }
    }

    fn templates(p: &Profile) -> Templates<'_> {
        Templates {
            new_args: &p.new_args,
            resume_args: &p.resume_args,
            model_args: &p.model_args,
            permission_args: &p.permission_args,
        }
    }

    fn values(prompt: &str) -> LaunchValues<'_> {
        LaunchValues {
            prompt,
            session: "s-1",
            model: None,
            permission: None,
        }
    }

    #[test]
    fn a_new_session_gets_the_prompt_as_an_argument_and_its_session_id() {
        let p = claude();
        let cmd = agent_command(templates(&p), &values("fix it"), false);
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
    fn a_resume_names_the_session_to_resume_and_chosen_options_follow() {
        let p = claude();
        let mut v = values("go on");
        v.model = Some("opus");
        v.permission = Some("acceptEdits");
        let cmd = agent_command(templates(&p), &v, true);
        assert_eq!(
            cmd.args[5..],
            words(&[
                "--resume",
                "s-1",
                "--model",
                "opus",
                "--permission-mode",
                "acceptEdits"
            ])
        );
    }

    #[test]
    fn a_prompt_over_100_kib_goes_on_stdin_and_leaves_p_without_text() {
        let p = claude();
        let long = "x".repeat(MAX_PROMPT_ARG_BYTES + 1);
        let cmd = agent_command(templates(&p), &values(&long), false);
        assert!(cmd.prompt_on_stdin);
        assert_eq!(cmd.args[..2], words(&["-p", "--output-format"]));
        assert!(cmd.args.iter().all(|a| a.len() < 100));
        let exact = "x".repeat(MAX_PROMPT_ARG_BYTES);
        assert!(!agent_command(templates(&p), &values(&exact), false).prompt_on_stdin);
    }
}
