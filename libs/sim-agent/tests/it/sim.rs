//! Starting the simulated agent in a home folder of its own.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use stratavore_agent_protocols::{AgentFact, ClaudeStreamParser};

/// A fresh home folder under the git-ignored `.local/tmp/sim-tests/`,
/// removed on drop, so tests can run in parallel without sharing sessions.
pub struct SimHome {
    pub path: PathBuf,
}

impl SimHome {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.local/tmp/sim-tests")
            .join(format!(
                "{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test home");
        Self { path }
    }

    /// `claude -p <prompt> --output-format stream-json --verbose` plus
    /// `extra`, with this home and no script from the environment.
    pub fn command(&self, prompt: Option<&str>, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stratavore-sim-agent"));
        command.arg("-p");
        if let Some(prompt) = prompt {
            command.arg(prompt);
        }
        command
            .args(["--output-format", "stream-json", "--verbose"])
            .args(extra)
            .env("HOME", &self.path)
            .env_remove("SIM_AGENT_SCRIPT")
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs to the end with `script` in `SIM_AGENT_SCRIPT`.
    pub fn run(&self, script: &str, extra: &[&str]) -> Output {
        self.command(Some("do the task"), extra)
            .env("SIM_AGENT_SCRIPT", script)
            .output()
            .expect("run the sim agent")
    }

    pub fn session_file(&self, id: &str) -> PathBuf {
        self.path
            .join(".sim-agent/sessions")
            .join(format!("{id}.jsonl"))
    }
}

impl Drop for SimHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh session id.
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub struct Parsed {
    pub facts: Vec<AgentFact>,
    pub parser: ClaudeStreamParser,
    pub stdout: String,
}

/// Every stdout line through the Claude Code parser.
pub fn parse(output: &[u8]) -> Parsed {
    let stdout = String::from_utf8_lossy(output).into_owned();
    let mut parser = ClaudeStreamParser::new();
    let mut facts: Vec<AgentFact> = stdout.lines().flat_map(|l| parser.feed(l)).collect();
    facts.extend(parser.finish());
    Parsed {
        facts,
        parser,
        stdout,
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let after = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(after != 'Z' && after != 'X')
        })
        .unwrap_or(false)
}

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

pub fn write_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command.stdin(Stdio::piped()).spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write the prompt");
    child.wait_with_output().expect("wait")
}
