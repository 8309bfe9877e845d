//! Starting an attempt: check the project path on this node, build the
//! agent's command line from its profile, write the runner directory
//! (prompt, spec, a first lease) and start the shim on it.

use crate::config::NodeSection;
use crate::domain::pricing::PriceTable;
use crate::node_store::LiveAttempt;
use crate::transcripts::{
    TranscriptPaths, TranscriptStart, UnsafeSessionId, current_size, sessions_dir,
};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use stratavore_agent_shim::runner_dir::{
    RunnerDirError, ShimSpec, StdinSource, write_lease, write_prompt,
};
use stratavore_profiles::{Choice, LaunchValues, ProfileSection, Profiles, agent_command};

/// Why an attempt could not be started: its `process.failed` reason.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The offer names a profile this node does not have.
    #[error("profile {0:?} is not configured on this node")]
    UnknownProfile(String),
    /// The executable is not there.
    #[error("executable {0:?} not found next to the supervisor or on PATH")]
    ExecutableMissing(String),
    /// The profile's executable is not installed on this node.
    #[error(
        "profile {profile}'s executable {executable:?} is not installed on node {node} \
         (looked next to the supervisor and on its PATH)"
    )]
    AgentMissing {
        /// The profile.
        profile: String,
        /// Its executable.
        executable: String,
        /// This node.
        node: String,
    },
    /// The offer chose what this node's profile does not allow (the
    /// orchestrator's config and the node's differ).
    #[error("this node's profile refuses the launch: {0}")]
    ChoiceRefused(String),
    /// The project path is outside every root once resolved, or missing.
    #[error("project path {0} is not inside a root this node serves")]
    PathRefused(String),
    /// The session id cannot name a transcript file.
    #[error(transparent)]
    Session(#[from] UnsafeSessionId),
    /// The runner directory could not be written.
    #[error("cannot prepare the runner directory")]
    Dir(#[from] RunnerDirError),
    /// The directory could not be made, or the shim not started.
    #[error("cannot {what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A started attempt: its directory and its shim.
#[derive(Debug)]
pub struct Launched {
    /// The runner directory.
    pub dir: PathBuf,
    /// The shim process (reaped by the watcher).
    pub shim: Child,
}

/// Starts attempts on this node.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The node's settings.
    pub node: NodeSection,
    /// Profiles by name.
    pub profiles: Profiles,
    /// What tokens cost.
    pub pricing: PriceTable,
}

/// Where an attempt's runner directory lives.
pub fn runner_dir(data_dir: &Path, runner: uuid::Uuid, attempt: u32) -> PathBuf {
    data_dir
        .join("runners")
        .join(runner.to_string())
        .join(attempt.to_string())
}

/// A program by path, else next to the running supervisor (every
/// workspace binary sits in one folder), else on `PATH`.
pub fn resolve_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

impl Launcher {
    /// This node's profile named `name`.
    pub fn profile(&self, name: &str) -> Result<&ProfileSection, LaunchError> {
        self.profiles
            .get(name)
            .ok_or_else(|| LaunchError::UnknownProfile(name.to_owned()))
    }

    /// The shim binary.
    fn shim(&self) -> Result<PathBuf, LaunchError> {
        let configured = self.node.shim_path.to_string_lossy().into_owned();
        let name = if configured.is_empty() {
            "stratavore-shim".to_owned()
        } else {
            configured
        };
        resolve_program(&name).ok_or(LaunchError::ExecutableMissing(name))
    }

    /// The real project path, refused unless it lies in a served root.
    fn checked_cwd(&self, path: &str) -> Result<PathBuf, LaunchError> {
        let refused = || LaunchError::PathRefused(path.to_owned());
        let real = Path::new(path).canonicalize().map_err(|_| refused())?;
        let inside = self
            .node
            .roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(root));
        if inside { Ok(real) } else { Err(refused()) }
    }

    /// The transcript files of `attempt`'s session, their folder made, and
    /// where the attempt's part of the stdout file will start: its size now,
    /// since the agent appends.
    pub fn transcript(
        &self,
        attempt: &LiveAttempt,
    ) -> Result<(TranscriptPaths, TranscriptStart), LaunchError> {
        let data_dir = self.node.data_dir();
        let paths = TranscriptPaths::of_session(&data_dir, &attempt.offer.session_id)?;
        let dir = sessions_dir(&data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            // Transcripts hold the user's code and prompts: owner only.
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("create {}", dir.display())))?;
        let offset =
            current_size(&paths.stdout).map_err(io(format!("read {}", paths.stdout.display())))?;
        let start = TranscriptStart {
            path: paths.stdout.clone(),
            offset,
        };
        Ok((paths, start))
    }

    /// Write the runner directory of `attempt` and start its shim, with the
    /// agent's output appended to `transcript`.
    pub fn launch(
        &self,
        attempt: &LiveAttempt,
        transcript: &TranscriptPaths,
        lease_deadline_nanos: u64,
        lease_span: std::time::Duration,
    ) -> Result<Launched, LaunchError> {
        let offer = &attempt.offer;
        let profile = self.profile(&offer.profile)?;
        let cwd = self.checked_cwd(&offer.path)?;
        // The offer's choices were checked against the orchestrator's copy
        // of the profile; this node starts only what its own allows.
        profile
            .choose(
                &offer.profile,
                Choice {
                    model: offer.model.as_deref(),
                    permission: offer.permission.as_deref(),
                    tools: Some(&offer.allowed_tools),
                },
            )
            .map_err(|e| LaunchError::ChoiceRefused(e.message))?;
        let executable =
            resolve_program(&profile.executable).ok_or_else(|| LaunchError::AgentMissing {
                profile: offer.profile.clone(),
                executable: profile.executable.clone(),
                node: self.node.id.clone(),
            })?;
        let shim = self.shim()?;
        let command = agent_command(
            profile,
            &LaunchValues {
                prompt: &offer.prompt,
                session: &offer.session_id,
                resume: offer.resume,
                model: offer.model.as_deref(),
                permission: offer.permission.as_deref(),
                tools: &offer.allowed_tools,
            },
        );
        let dir = runner_dir(&self.node.data_dir(), attempt.runner_id, attempt.attempt);
        // A directory left by a start that crashed before its spawn was
        // recorded holds nothing of value: start it afresh.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("clear {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("resolve {}", dir.display())))?;
        if command.prompt_on_stdin {
            write_prompt(&dir, offer.prompt.as_bytes())?;
        }
        let mut argv = vec![executable.to_string_lossy().into_owned()];
        argv.extend(command.args);
        let env = profile
            .env_passthrough
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        let spec = ShimSpec {
            argv,
            cwd,
            env,
            runner: attempt.runner_id.to_string(),
            attempt: attempt.attempt,
            node: self.node.id.clone(),
            stdin: if command.prompt_on_stdin {
                StdinSource::Prompt
            } else {
                StdinSource::Null
            },
            term_grace_ms: self.node.term_grace_ms,
            lease_grace_ms: u64::try_from(lease_span.as_millis()).unwrap_or(u64::MAX),
            stdout_path: Some(transcript.stdout.clone()),
            stderr_path: Some(transcript.stderr.clone()),
        };
        spec.write(&dir)?;
        write_lease(&dir, lease_deadline_nanos)?;
        // The shim calls setsid itself, which fails for a group leader: it
        // stays in this process group until then. Nothing of ours is
        // inherited: the transcript files are opened by the shim, for
        // appending, so the attempts of a session share one file.
        let shim = Command::new(&shim)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("start {}", shim.display())))?;
        Ok(Launched { dir, shim })
    }
}
