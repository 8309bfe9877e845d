//! The command line, flag-compatible with `claude -p`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// `claude -p [PROMPT] --output-format stream-json --verbose
/// (--session-id ID | --resume ID)`; model and permission flags are
/// accepted and ignored, but the model is echoed in `init`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "stratavore-sim-agent",
    about = "Simulated agent: speaks Claude Code's flags and stream-json, for tests and demos",
    version = crate::stream::VERSION
)]
pub struct Cli {
    /// Print mode: answer once and exit (the only mode simulated).
    #[arg(short = 'p', long = "print")]
    pub print: bool,
    /// The prompt; read from stdin (to its end) when `-p` has none.
    pub prompt: Option<String>,
    /// `text`, `json` or `stream-json`.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Required with `stream-json`, as in the real CLI.
    #[arg(long)]
    pub verbose: bool,
    /// Start a new session with this id (a UUID).
    #[arg(long = "session-id", conflicts_with = "resume")]
    pub session_id: Option<String>,
    /// Resume the session with this id.
    #[arg(short = 'r', long = "resume")]
    pub resume: Option<String>,
    /// The model, echoed in `init`.
    #[arg(long)]
    pub model: Option<String>,
    /// Ignored.
    #[arg(long = "permission-mode")]
    pub permission_mode: Option<String>,
    /// Ignored.
    #[arg(long = "allowedTools", alias = "allowed-tools", action = clap::ArgAction::Append)]
    pub allowed_tools: Vec<String>,
    /// Ignored.
    #[arg(long = "disallowedTools", alias = "disallowed-tools", action = clap::ArgAction::Append)]
    pub disallowed_tools: Vec<String>,
    /// Ignored.
    #[arg(long = "append-system-prompt")]
    pub append_system_prompt: Option<String>,
    /// The script (JSON); see the crate docs.
    #[arg(long = "sim-script", env = "SIM_AGENT_SCRIPT", hide = true)]
    pub script: Option<String>,
    /// The home folder that holds the session store.
    #[arg(long = "sim-home", env = "HOME", hide = true)]
    pub home: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The result text only.
    Text,
    /// The result line only.
    Json,
    /// Every line, as it happens.
    StreamJson,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claude_code_launch_line_parses() {
        let cli = Cli::try_parse_from([
            "claude",
            "-p",
            "hello",
            "--output-format",
            "stream-json",
            "--verbose",
            "--session-id",
            "0f8e3c52-6a4b-4d1e-9c7a-2b5d8e1f4a63",
            "--model",
            "opus",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Bash",
            "--allowedTools",
            "Edit",
            "--append-system-prompt",
            "be brief",
        ]);
        let cli = cli.ok();
        assert_eq!(
            cli.as_ref().and_then(|c| c.prompt.as_deref()),
            Some("hello")
        );
        assert_eq!(
            cli.as_ref().map(|c| c.output_format),
            Some(OutputFormat::StreamJson)
        );
        assert_eq!(cli.map(|c| c.allowed_tools.len()), Some(2));
    }

    #[test]
    fn a_prompt_can_be_left_to_stdin() {
        let cli = Cli::try_parse_from([
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume",
            "x",
        ]);
        assert_eq!(
            cli.ok().map(|c| (c.prompt, c.resume)),
            Some((None, Some("x".into())))
        );
    }

    #[test]
    fn a_new_id_and_a_resume_conflict() {
        assert!(
            Cli::try_parse_from(["claude", "-p", "x", "--session-id", "a", "--resume", "b"])
                .is_err()
        );
    }
}
