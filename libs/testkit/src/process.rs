//! Services as real processes, for the tests that kill or restart them.

use crate::paths;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The path of a workspace binary, next to the running test binary's
/// folder (`cargo nextest run --workspace` builds every binary first).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/debug/deps/<test binary> -> <target>/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target folder above {}", exe.display()))?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built (run the tests with --workspace)",
        path.display()
    );
    Ok(path)
}

/// How long a terminated service may take to exit: its own shutdown waits
/// at most 30 s for an incarnation's tasks.
const TERMINATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A service binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Start `binary` with `env` added to the environment; its output goes
    /// to `.local/tmp/logs/<name>.log` (appended across restarts).
    pub async fn start(
        binary: &Path,
        name: &str,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let dir = paths::scratch_dir().join("logs");
        std::fs::create_dir_all(&dir)?;
        let mut process = Self {
            binary: binary.to_owned(),
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().cloned())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether it has exited (by itself: a crash, a failpoint).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL it and reap it.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM it and wait for it to exit; returns its exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?)
                .ok_or_else(|| anyhow::anyhow!("pid 0"))?;
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        }
        // Bounded, so a service that hangs in its shutdown fails the test
        // with this message instead of holding it until the runner's own
        // timeout, which says nothing of why.
        match tokio::time::timeout(TERMINATE_WITHIN, child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => {
                let _ = child.kill().await;
                anyhow::bail!(
                    "{} did not exit within {TERMINATE_WITHIN:?} of SIGTERM; its log: {}",
                    self.binary.display(),
                    self.log_path().display()
                )
            }
        }
    }

    /// Start it again after a kill or terminate.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.spawn()
    }
}
