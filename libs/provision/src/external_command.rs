//! Running the outside programs this crate drives (pip, initdb, pg_ctl,
//! rabbitmqctl, ...) and turning a failure into an error that names the
//! command and keeps what it printed, since that output is usually the only
//! clue to what went wrong.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a command run with a timeout is checked for its end.
const TIMEOUT_POLL: Duration = Duration::from_millis(100);

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
    /// The program ran past its time and was killed, with its children.
    #[error("`{command}` did not finish within {timeout:?} and was killed: {output}")]
    TimedOut {
        /// The whole command line.
        command: String,
        /// The time it had.
        timeout: Duration,
        /// The end of what it wrote to stderr and stdout until then.
        output: String,
    },
    /// Waiting for the program failed.
    #[error("could not wait for `{command}`")]
    Wait {
        /// The whole command line.
        command: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
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

/// Runs `cmd` like [`run_checked`], but kills it, and every process it
/// started, when it has not finished within `timeout`. For programs that
/// can hang on the network (npm): the program runs in a process group of
/// its own, so the kill reaches its children, and so does not get a Ctrl-C
/// meant for us, which ends us and leaves it to finish alone.
pub fn run_checked_within(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    // Drained as the program runs: a full pipe would stop it.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_within(&mut child, timeout);
    let output = |status| Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    match status {
        Ok(Some(status)) => {
            let output = output(status);
            if output.status.success() {
                Ok(output)
            } else {
                Err(failure(cmd, &output))
            }
        }
        Ok(None) => {
            let killed = child.wait().map_err(|source| CommandError::Wait {
                command: command_line(cmd),
                source,
            })?;
            let text = output_text(&output(killed));
            Err(CommandError::TimedOut {
                command: command_line(cmd),
                timeout,
                output: tail(&text, OUTPUT_TAIL_CHARS),
            })
        }
        Err(source) => Err(CommandError::Wait {
            command: command_line(cmd),
            source,
        }),
    }
}

/// The child's exit status, or None when it was still running at the
/// deadline and its process group has been sent SIGKILL.
fn wait_within(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let group = rustix::process::Pid::from_child(child);
            if rustix::process::kill_process_group(group, rustix::process::Signal::KILL).is_err() {
                // The group is gone already; the child itself is what counts.
                let _ = child.kill();
            }
            return Ok(None);
        }
        thread::sleep(TIMEOUT_POLL);
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // What was read before an error is still worth keeping.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The error for a command that ran and exited unsuccessfully.
pub fn failure(cmd: &Command, output: &Output) -> CommandError {
    CommandError::Failed {
        command: command_line(cmd),
        status: output.status,
        output: tail(&output_text(output), OUTPUT_TAIL_CHARS),
    }
}

/// Stderr, then stdout, trimmed.
fn output_text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        // The background sleep holds the output pipes: unless it is killed
        // too, reading them to their end would take its 30 s.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo started >&2; wait"]);
        let result = run_checked_within(&mut cmd, Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&result, Err(CommandError::TimedOut { output, .. }) if output == "started"),
            "{result:?}"
        );
    }

    #[test]
    fn a_failing_command_within_its_timeout_keeps_what_it_printed() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let result = run_checked_within(&mut cmd, Duration::from_secs(30));
        assert!(
            matches!(&result, Err(CommandError::Failed { status, output, .. })
                if status.code() == Some(3) && output == "oops\nout"),
            "{result:?}"
        );
        let mut ok = Command::new("echo");
        ok.arg("fine");
        let output = run_checked_within(&mut ok, Duration::from_secs(30)).ok();
        assert_eq!(output.map(|o| o.stdout), Some(b"fine\n".to_vec()));
    }

    #[test]
    fn a_missing_program_within_a_timeout_is_not_found() {
        let mut cmd = Command::new("stratavore-no-such-program");
        let result = run_checked_within(&mut cmd, Duration::from_secs(1));
        assert!(result.is_err_and(|e| e.is_not_found()));
    }
}
