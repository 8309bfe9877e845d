//! The runner directory: the only interface between a supervisor and a shim.
//!
//! There is one directory per runner attempt, e.g.
//! `<data>/runners/<runner>/<attempt>/`. Every file that one side replaces
//! while the other may read it is written to `<name>.tmp` and renamed over
//! `<name>`, so a reader sees the old content or the new one, never half;
//! except the lease, which is rewritten in place many times a second across
//! a node (see [`write_lease`]) and carries a check instead.
//!
//! | file           | written by        | content |
//! |----------------|-------------------|---------|
//! | `spec.json`    | supervisor, once  | [`ShimSpec`]: `{"argv":[..],"cwd":"/p","env":{"K":"V"},"runner":"r","attempt":1,"node":"n","stdin":"prompt"\|"null","term_grace_ms":10000,"lease_grace_ms":5000,"stdout_path":"/t/s.jsonl","stderr_path":"/t/s.stderr.log"}` (the last three optional) |
//! | `prompt`       | supervisor, once  | raw bytes given to the agent as stdin when `stdin` is `"prompt"` |
//! | `stdout.jsonl` | the agent         | the agent's stdout, appended unchanged (`O_APPEND`), unless the spec's `stdout_path` names another file |
//! | `stderr.log`   | the agent         | the agent's stderr, appended unchanged (`O_APPEND`), unless the spec's `stderr_path` names another file |
//! | `lease`        | supervisor, often | `<deadline> <check>\n`: a `CLOCK_BOOTTIME` deadline in nanoseconds, 20 decimal digits, and its check, 16 hex digits ([`write_lease`]) |
//! | `control`      | supervisor        | [`Control`]: `{"rev":N,"want":"running"\|"paused"\|"stopped"\|"killed"}` ([`write_control`]) |
//! | `shim.pid`     | shim, once        | the shim's pid, decimal, after its `setsid` |
//! | `agent.pid`    | shim, once        | the agent's pid, decimal, once spawned (also its process group id) |
//! | `exit.json`    | shim, last        | [`ExitRecord`]: `{"code":3,"signal":null,"reason":"exited","detail":null,"ended_boottime_ns":N}`, written only once no descendant of the shim remains |
//!
//! The agent's environment is exactly `env` of the spec plus
//! [`RUNNER_MARK_ENV`]`=<runner>:<attempt>` and [`NODE_ENV`]`=<node>`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The launch description, written by the supervisor before it starts the shim.
pub const SPEC_FILE: &str = "spec.json";
/// The bytes fed to the agent's stdin when the spec asks for it.
pub const PROMPT_FILE: &str = "prompt";
/// The agent's stdout, appended unchanged.
pub const STDOUT_FILE: &str = "stdout.jsonl";
/// The agent's stderr, appended unchanged.
pub const STDERR_FILE: &str = "stderr.log";
/// The lease deadline (`CLOCK_BOOTTIME` nanoseconds, decimal).
pub const LEASE_FILE: &str = "lease";
/// The latest command of the supervisor.
pub const CONTROL_FILE: &str = "control";
/// The shim's pid.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The agent's pid.
pub const AGENT_PID_FILE: &str = "agent.pid";
/// The outcome, present only once nothing of the runner remains.
pub const EXIT_FILE: &str = "exit.json";

/// Environment variable that marks every process of a runner attempt with
/// `<runner>:<attempt>`, so that registration can find what a shim lost.
pub const RUNNER_MARK_ENV: &str = "STRATAVORE_RUNNER";
/// Environment variable that tells the agent which node runs it.
pub const NODE_ENV: &str = "STRATAVORE_NODE";

/// A runner directory file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunnerDirError {
    /// The file system refused.
    #[error("cannot access {path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape.
    #[error("{path} does not hold the expected JSON")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// Where and why parsing failed.
        #[source]
        source: serde_json::Error,
    },
    /// The lease file holds no whole record: torn by a write in progress,
    /// or garbled.
    #[error("{path} does not hold a whole lease record: {content:?}")]
    BadLease {
        /// The file concerned.
        path: PathBuf,
        /// The start of what it holds.
        content: String,
    },
    /// The file should hold a decimal number and does not.
    #[error("{path} does not hold a decimal number: {content:?}")]
    NotANumber {
        /// The file concerned.
        path: PathBuf,
        /// What it holds instead (at most 64 bytes, lossily decoded).
        content: String,
    },
}

/// Where the agent's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdinSource {
    /// The `prompt` file; the agent sees its end of file after the last byte,
    /// since some CLIs wait for as long as stdin stays open.
    Prompt,
    /// `/dev/null`.
    Null,
}

/// How to start the agent (`spec.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    /// Executable and arguments; `argv[0]` is looked up in `PATH` of `env`
    /// when it has no slash.
    pub argv: Vec<String>,
    /// Working directory of the agent.
    pub cwd: PathBuf,
    /// The agent's complete environment, apart from the two marks the shim adds;
    /// nothing of the shim's own environment leaks through.
    pub env: BTreeMap<String, String>,
    /// Runner id, part of the process mark.
    pub runner: String,
    /// Attempt number, part of the process mark.
    pub attempt: u32,
    /// Node name, given to the agent in [`NODE_ENV`].
    pub node: String,
    /// What the agent reads on stdin.
    pub stdin: StdinSource,
    /// How long a `stopped` agent may take after SIGTERM before SIGKILL.
    pub term_grace_ms: u64,
    /// How long the shim runs without ever having read a valid lease; the
    /// supervisor should write the lease before it starts the shim, so this
    /// only bounds a supervisor that forgot or died in between.
    #[serde(default = "default_lease_grace_ms")]
    pub lease_grace_ms: u64,
    /// Where the agent's stdout is appended; relative paths are taken from
    /// the runner directory. Absent: [`STDOUT_FILE`] in the runner
    /// directory. A supervisor points it at a per-session transcript so that
    /// every attempt of a session appends to one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_path: Option<PathBuf>,
    /// Where the agent's stderr is appended, as `stdout_path`; absent:
    /// [`STDERR_FILE`] in the runner directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_path: Option<PathBuf>,
}

fn default_lease_grace_ms() -> u64 {
    5_000
}

impl ShimSpec {
    /// The value of [`RUNNER_MARK_ENV`] for this attempt: `<runner>:<attempt>`.
    pub fn runner_mark(&self) -> String {
        format!("{}:{}", self.runner, self.attempt)
    }

    /// The file the agent's stdout is appended to, for the runner directory `dir`.
    pub fn stdout_file(&self, dir: &Path) -> PathBuf {
        dir.join(
            self.stdout_path
                .as_deref()
                .unwrap_or(Path::new(STDOUT_FILE)),
        )
    }

    /// The file the agent's stderr is appended to, for the runner directory `dir`.
    pub fn stderr_file(&self, dir: &Path) -> PathBuf {
        dir.join(
            self.stderr_path
                .as_deref()
                .unwrap_or(Path::new(STDERR_FILE)),
        )
    }

    /// Writes `spec.json` in `dir` (tmp + rename).
    pub fn write(&self, dir: &Path) -> Result<(), RunnerDirError> {
        write_json(dir, SPEC_FILE, self, false)
    }

    /// Reads `spec.json` from `dir`; a missing file is an error.
    pub fn read(dir: &Path) -> Result<Self, RunnerDirError> {
        let path = dir.join(SPEC_FILE);
        let bytes = fs::read(&path).map_err(|source| RunnerDirError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| RunnerDirError::Json { path, source })
    }
}

/// What the supervisor wants of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// Every process of the tree continues (SIGCONT).
    Running,
    /// Every process of the tree is frozen (SIGSTOP).
    Paused,
    /// SIGTERM (and SIGCONT) to every process, SIGKILL after the grace period.
    Stopped,
    /// SIGKILL to every process at once.
    Killed,
}

/// A command of the supervisor (`control`). The shim applies a command only
/// when its `rev` is greater than the last one it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// Revision, increasing with every new command.
    pub rev: u64,
    /// The wanted state.
    pub want: Want,
}

/// Replaces `control` in `dir` (written to `control.tmp`, then renamed).
pub fn write_control(dir: &Path, control: &Control) -> Result<(), RunnerDirError> {
    write_json(dir, CONTROL_FILE, control, false)
}

/// Reads `control` from `dir`; `None` when there is none yet.
pub fn read_control(dir: &Path) -> Result<Option<Control>, RunnerDirError> {
    read_json(dir, CONTROL_FILE)
}

/// Sets the lease in `dir` to `deadline_ns`, a [`boottime_ns`] instant.
///
/// The file is rewritten in place, not replaced by rename: a node renews
/// every runner's lease on every confirmed heartbeat, and at a thousand
/// runners a new file and a rename each (an inode made, one freed, two
/// directory changes, and on ext4 the new file's data written out at once
/// because it replaces another) kept the kernel busy with a third of a
/// core or more. An in-place write can be read half done, so the record is of
/// fixed width (the file's length never changes) and carries a check of
/// the deadline: [`read_lease`] refuses a torn record, and the shim keeps
/// the deadline it had, which is never later than the new one.
pub fn write_lease(dir: &Path, deadline_ns: u64) -> Result<(), RunnerDirError> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(LEASE_FILE);
    let io_error = |source| RunnerDirError::Io {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error)?;
    file.write_all_at(&lease_record(deadline_ns), 0)
        .map_err(io_error)
}

/// Reads the lease deadline from `dir`; `None` when there is no lease file
/// (or it is still empty, just created), [`RunnerDirError::BadLease`] when
/// the record is torn or garbled.
pub fn read_lease(dir: &Path) -> Result<Option<u64>, RunnerDirError> {
    let path = dir.join(LEASE_FILE);
    match read_if_present(&path)? {
        None => Ok(None),
        Some(bytes) if bytes.is_empty() => Ok(None),
        Some(bytes) => {
            parse_lease_record(&bytes)
                .map(Some)
                .ok_or_else(|| RunnerDirError::BadLease {
                    path,
                    content: excerpt(&bytes),
                })
        }
    }
}

/// The length of a lease record: 20 digits, a space, 16 hex digits, `\n`.
const LEASE_RECORD_LEN: usize = 38;

/// The lease record of `deadline_ns`.
fn lease_record(deadline_ns: u64) -> [u8; LEASE_RECORD_LEN] {
    let text = format!("{deadline_ns:020} {:016x}\n", lease_check(deadline_ns));
    let mut record = [0u8; LEASE_RECORD_LEN];
    record.copy_from_slice(text.as_bytes());
    record
}

/// The deadline of a whole, unmixed lease record; `None` for anything else.
fn parse_lease_record(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != LEASE_RECORD_LEN || bytes[20] != b' ' || bytes[37] != b'\n' {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = &text[..20];
    let check = &text[21..37];
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !check.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let deadline: u64 = digits.parse().ok()?;
    (u64::from_str_radix(check, 16).ok()? == lease_check(deadline)).then_some(deadline)
}

/// FNV-1a (64 bits) of the deadline's bytes: a record mixed from two
/// writes matches its check only by a one in 2^64 chance.
fn lease_check(deadline_ns: u64) -> u64 {
    deadline_ns
        .to_le_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, b| {
            (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Writes `shim.pid` in `dir`.
pub fn write_shim_pid(dir: &Path, pid: i32) -> Result<(), RunnerDirError> {
    write_atomically(dir, SHIM_PID_FILE, format!("{pid}\n").as_bytes(), false)
}

/// Reads `shim.pid` from `dir`; `None` before the shim wrote it.
pub fn read_shim_pid(dir: &Path) -> Result<Option<i32>, RunnerDirError> {
    read_number(dir, SHIM_PID_FILE)
}

/// Writes `agent.pid` in `dir`.
pub fn write_agent_pid(dir: &Path, pid: i32) -> Result<(), RunnerDirError> {
    write_atomically(dir, AGENT_PID_FILE, format!("{pid}\n").as_bytes(), false)
}

/// Reads `agent.pid` from `dir`; `None` before the agent was spawned.
pub fn read_agent_pid(dir: &Path) -> Result<Option<i32>, RunnerDirError> {
    read_number(dir, AGENT_PID_FILE)
}

/// Writes the `prompt` file in `dir`.
pub fn write_prompt(dir: &Path, prompt: &[u8]) -> Result<(), RunnerDirError> {
    write_atomically(dir, PROMPT_FILE, prompt, false)
}

/// Why the shim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The agent ended by itself.
    Exited,
    /// A `killed` command ended it.
    KilledOnRequest,
    /// A `stopped` command ended it.
    StoppedOnRequest,
    /// The lease ran out before the agent ended.
    LeaseExpired,
    /// The agent never started (bad spec, missing executable or cwd, ...).
    SpawnFailed,
}

/// The outcome of a runner attempt (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The agent's exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended the agent, when one did.
    pub signal: Option<i32>,
    /// Why the agent ended; the first cause wins (a `stopped` agent that
    /// then exits 0 by itself is still `stopped_on_request`).
    pub reason: ExitReason,
    /// Human-readable detail, e.g. why spawning failed.
    pub detail: Option<String>,
    /// [`boottime_ns`] when the last process of the tree was gone.
    pub ended_boottime_ns: u64,
}

impl ExitRecord {
    /// Writes `exit.json` in `dir` (tmp, fsync, rename), so a reader that
    /// sees it sees all of it.
    pub fn write(&self, dir: &Path) -> Result<(), RunnerDirError> {
        write_json(dir, EXIT_FILE, self, true)
    }

    /// Reads `exit.json` from `dir`; `None` while the runner is not over.
    pub fn read(dir: &Path) -> Result<Option<Self>, RunnerDirError> {
        read_json(dir, EXIT_FILE)
    }
}

/// Now on `CLOCK_BOOTTIME` in nanoseconds: the clock of leases and of
/// [`ExitRecord::ended_boottime_ns`]; it keeps counting while the machine
/// is suspended, unlike `CLOCK_MONOTONIC`.
pub fn boottime_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // The boot clock never goes negative; saturate rather than trust that blindly.
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn write_json<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    sync: bool,
) -> Result<(), RunnerDirError> {
    let bytes = serde_json::to_vec(value).map_err(|source| RunnerDirError::Json {
        path: dir.join(name),
        source,
    })?;
    write_atomically(dir, name, &bytes, sync)
}

fn read_json<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, RunnerDirError> {
    let path = dir.join(name);
    let Some(bytes) = read_if_present(&path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RunnerDirError::Json { path, source })
}

fn read_number<T: std::str::FromStr>(dir: &Path, name: &str) -> Result<Option<T>, RunnerDirError> {
    let path = dir.join(name);
    let Some(bytes) = read_if_present(&path)? else {
        return Ok(None);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| RunnerDirError::NotANumber {
            path,
            content: excerpt(&bytes),
        })
}

/// What a file that failed to parse holds, for its error: at most 64
/// bytes, lossily decoded.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, RunnerDirError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunnerDirError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `<name>.tmp` and renames it over `<name>`; `sync` makes the content
/// durable before the rename, for files read after a crash.
fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
) -> Result<(), RunnerDirError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunnerDirError::Io { path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    if sync {
        file.sync_all().map_err(io_error(&tmp))?;
    }
    drop(file);
    let target = dir.join(name);
    fs::rename(&tmp, &target).map_err(io_error(&target))
}

#[cfg(test)]
mod tests;
