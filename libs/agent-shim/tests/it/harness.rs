//! Starts a shim on a fresh runner directory and waits on what it writes,
//! always with a deadline.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use stratavore_agent_shim::runner_dir::{
    self, Control, ExitRecord, RUNNER_MARK_ENV, ShimSpec, StdinSource, Want, boottime_ns,
};
use stratavore_agent_shim::shim::tree;

/// How long anything the shim should do promptly may take on a busy machine.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// One shim run in its own runner directory; on drop it kills whatever is
/// left (through the control file, then the shim itself) and removes the
/// directory.
pub struct ShimRun {
    pub dir: PathBuf,
    runner: String,
    shim: Option<Child>,
}

impl ShimRun {
    pub fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.local/tmp/shim-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create runner dir");
        // Canonical, so that it compares equal to /proc/<pid>/cwd on drop.
        let dir = dir.canonicalize().expect("canonical runner dir");
        Self {
            dir,
            runner: format!("{name}-{}", std::process::id()),
            shim: None,
        }
    }

    /// A spec running `script` with `/bin/sh` in the runner directory, with
    /// stdin from /dev/null and a 300 ms grace for SIGTERM.
    pub fn spec(&self, script: &str) -> ShimSpec {
        ShimSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            cwd: self.dir.clone(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            // Unique per test, so the shim's mark sweep never meets another
            // test's processes.
            runner: self.runner.clone(),
            attempt: 1,
            node: "test-node".into(),
            stdin: StdinSource::Null,
            term_grace_ms: 300,
            lease_grace_ms: 60_000,
            stdout_path: None,
            stderr_path: None,
        }
    }

    /// Writes `spec`, a lease a minute ahead unless one is there already,
    /// and starts the shim.
    pub fn start(&mut self, spec: &ShimSpec) {
        spec.write(&self.dir).expect("write spec");
        if runner_dir::read_lease(&self.dir)
            .expect("read lease")
            .is_none()
        {
            self.lease_in(Duration::from_secs(60));
        }
        self.start_shim();
    }

    /// Starts the shim on the directory as it is.
    pub fn start_shim(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_stratavore-shim"))
            .arg(&self.dir)
            .spawn()
            .expect("start shim");
        self.shim = Some(child);
    }

    pub fn lease_in(&self, from_now: Duration) {
        let deadline = boottime_ns() + u64::try_from(from_now.as_nanos()).expect("small");
        runner_dir::write_lease(&self.dir, deadline).expect("write lease");
    }

    pub fn control(&self, rev: u64, want: Want) {
        runner_dir::write_control(&self.dir, &Control { rev, want }).expect("write control");
    }

    /// The agent's stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.join(runner_dir::STDOUT_FILE)).unwrap_or_default()
    }

    /// Waits until the agent's stdout has at least `count` lines; returns them.
    pub fn stdout_lines(&self, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        wait_until(PROMPTLY, &format!("{count} lines of stdout"), || {
            lines = self.stdout().lines().map(str::to_owned).collect();
            lines.len() >= count
        });
        lines
    }

    /// The agent's pid, once the shim has written it.
    pub fn agent_pid(&self) -> i32 {
        let mut pid = None;
        wait_until(PROMPTLY, "agent.pid", || {
            pid = runner_dir::read_agent_pid(&self.dir).ok().flatten();
            pid.is_some()
        });
        pid.expect("waited for it")
    }

    /// Waits for `exit.json`, calling `on_sight` the moment it is first
    /// seen, then for the shim to exit 0.
    pub fn wait_exit_and(&mut self, within: Duration, on_sight: impl FnOnce()) -> ExitRecord {
        let mut record = None;
        wait_until(within, "exit.json", || {
            record = ExitRecord::read(&self.dir).ok().flatten();
            record.is_some()
        });
        on_sight();
        let status = self.wait_shim();
        assert_eq!(status.code(), Some(0), "shim status {status:?}");
        record.expect("waited for it")
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitRecord {
        self.wait_exit_and(within, || {})
    }

    /// Waits for the shim process to end and returns its status.
    pub fn wait_shim(&mut self) -> ExitStatus {
        let shim = self.shim.as_mut().expect("shim started");
        let mut status = None;
        wait_until(PROMPTLY, "the shim to exit", || {
            status = shim.try_wait().expect("try_wait");
            status.is_some()
        });
        self.shim = None;
        status.expect("waited for it")
    }
}

impl Drop for ShimRun {
    fn drop(&mut self) {
        if let Some(mut shim) = self.shim.take() {
            let _ = runner_dir::write_control(
                &self.dir,
                &Control {
                    rev: u64::MAX,
                    want: Want::Killed,
                },
            );
            let deadline = Instant::now() + PROMPTLY;
            while Instant::now() < deadline && matches!(shim.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = shim.kill();
            let _ = shim.wait();
        }
        // Should a shim have failed at its job, what it left must not
        // outlive the test: whatever carries the mark or runs in the
        // directory (the agents here all start there) goes.
        let mut leftovers = tree::marked_processes(&format!("{RUNNER_MARK_ENV}={}:1", self.runner));
        leftovers.extend(processes_in(&self.dir));
        for pid in leftovers {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Pids of the processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

/// Polls `done` every 10 ms; panics naming `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of a process (`None` once it is gone).
pub fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

pub fn is_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

pub fn parse_pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .map(|line| line.trim().parse().expect("a pid line"))
        .collect()
}
