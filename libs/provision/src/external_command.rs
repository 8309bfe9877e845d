//! Running the outside programs this crate drives (pip, initdb, pg_ctl,
//! rabbitmqctl, ...) and turning a failure into an error that names the
//! command and keeps what it printed, since that output is usually the only
//! clue to what went wrong.

use std::io;
use std::process::{Command, ExitStatus, Output, Stdio};

/// How much of a failed command's output an error keeps: the end is where
/// the reason is, and a whole pip or initdb log would drown it.
const OUTPUT_TAIL_CHARS: usize = 2000;

/// A program that could not be started, or that ran and failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started at all (missing, not executable).
    #[error("could not run `{program}`")]
    Spawn {
        /// The program, as it was given.
        program: String,
        /// Why the operating system refused to start it.
        #[source]
        source: io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        /// The whole command line, for copying into a shell.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of what it wrote to stderr and stdout.
        output: String,
    },
}

impl CommandError {
    /// Whether the program itself was missing, as opposed to failing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CommandError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Runs `cmd` to completion with no input and its output captured; an
/// unsuccessful exit is an error.
pub fn run_checked(cmd: &mut Command) -> Result<Output, CommandError> {
    let output = run_captured(cmd)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failure(cmd, &output))
    }
}

/// Runs `cmd` to completion with no input and its output captured, and
/// returns the output whatever the exit status, for commands whose status
/// is an answer (`pg_ctl status`) rather than success or failure.
pub fn run_captured(cmd: &mut Command) -> Result<Output, CommandError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })
}

/// The error for a command that ran and exited unsuccessfully.
pub fn failure(cmd: &Command, output: &Output) -> CommandError {
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    CommandError::Failed {
        command: command_line(cmd),
        status: output.status,
        output: tail(&text, OUTPUT_TAIL_CHARS),
    }
}

/// The command line of `cmd`, for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The last `max_chars` characters of `text`.
pub fn tail(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_owned();
    }
    let skipped: String = text.chars().skip(count - max_chars).collect();
    format!("...{skipped}")
}
