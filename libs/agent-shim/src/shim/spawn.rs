//! Starting the agent as the spec says.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::Pid;

use crate::runner_dir::{NODE_ENV, PROMPT_FILE, RUNNER_MARK_ENV, ShimSpec, StdinSource};

/// The agent could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The spec has no program to run.
    #[error("the spec's argv is empty")]
    EmptyArgv,
    /// A file of the runner directory could not be opened for the agent.
    #[error("cannot open {path} for the agent")]
    Open {
        /// The file concerned.
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started (missing, not executable, bad cwd).
    #[error("cannot start {program:?} in {cwd:?}")]
    Exec {
        /// `argv[0]`.
        program: String,
        /// The working directory asked for.
        cwd: std::path::PathBuf,
        /// What `exec` (or `chdir`) said.
        #[source]
        source: std::io::Error,
    },
}

/// Starts the agent and returns its pid. The agent gets its own process
/// group (also the group's id is its pid) and exactly the spec's environment
/// plus the two marks. Its stdout and stderr are the transcript files
/// themselves (the spec's, else the runner directory's), opened for appending, so the shim never copies a byte and a
/// shim that dies loses no output.
pub fn spawn_agent(dir: &Path, spec: &ShimSpec) -> Result<Pid, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
    let stdout = open_transcript(&spec.stdout_file(dir))?;
    let stderr = open_transcript(&spec.stderr_file(dir))?;
    let stdin = match spec.stdin {
        // The prompt file itself is the agent's stdin: the agent reads its
        // bytes and then end of file, as if they came down a pipe that the
        // shim closed after writing, but with no pipe to keep fed, however
        // long the prompt and however slowly the agent reads.
        StdinSource::Prompt => {
            let path = dir.join(PROMPT_FILE);
            Stdio::from(File::open(&path).map_err(|source| SpawnError::Open { path, source })?)
        }
        StdinSource::Null => Stdio::null(),
    };
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .env(RUNNER_MARK_ENV, spec.runner_mark())
        .env(NODE_ENV, &spec.node)
        .current_dir(&spec.cwd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|source| SpawnError::Exec {
            program: program.clone(),
            cwd: spec.cwd.clone(),
            source,
        })?;
    // The std handle is dropped unwaited on purpose: the supervision loop
    // reaps every child, the agent included, with waitpid(-1), which a
    // `Child::wait` would race with.
    let pid = Pid::from_child(&child);
    drop(child);
    Ok(pid)
}

fn open_transcript(path: &Path) -> Result<File, SpawnError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        // Transcripts hold the user's code and prompts: owner only.
        .mode(0o600)
        .open(path)
        .map_err(|source| SpawnError::Open {
            path: path.to_path_buf(),
            source,
        })
}
