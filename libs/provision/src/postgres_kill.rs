//! Crashing a cluster on purpose, for fault tests: the postmaster is
//! killed with SIGKILL and the next start goes through crash recovery.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::postgres_server::{PgCluster, PgServerError, io_error};

impl PgCluster {
    /// Kills the postmaster with SIGKILL, as a crash would, and waits until
    /// it is gone; for fault tests. The next [`PgCluster::start`] recovers.
    pub fn kill9(&self) -> Result<(), PgServerError> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let no_pid = || PgServerError::NoPostmasterPid {
            path: pid_file.clone(),
        };
        let contents = fs::read_to_string(&pid_file).map_err(io_error("read", &pid_file))?;
        let raw_pid: i32 = contents
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(no_pid)?;
        let pid = rustix::process::Pid::from_raw(raw_pid).ok_or_else(no_pid)?;
        let backends = child_pids(raw_pid);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(|errno| {
            PgServerError::Io {
                action: "SIGKILL the postmaster named in",
                path: pid_file.clone(),
                source: errno.into(),
            }
        })?;
        // The backends notice their postmaster's death and exit by
        // themselves, as after a real crash.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (process_alive(raw_pid) || backends.iter().any(|&b| process_alive(b)))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
        // The dead postmaster stays a zombie until whoever adopted it reaps
        // it (init here reaps every 2 s or so), and pg_ctl, like the next
        // postmaster, counts a zombie as a running server. If it is never
        // reaped, its pid file goes: every process of that server is dead.
        let proc_entry = PathBuf::from(format!("/proc/{raw_pid}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_entry.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if proc_entry.exists() && !process_alive(raw_pid) {
            tracing::warn!(
                pid = raw_pid,
                "the killed postmaster was not reaped; removing its pid file"
            );
            fs::remove_file(&pid_file).map_err(io_error("remove", &pid_file))?;
        }
        Ok(())
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself contain spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The processes whose parent is `pid`.
fn child_pids(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&candidate| parent_pid(candidate) == Some(pid))
        .collect()
}

/// The parent of `pid`, from the field after the state in /proc/PID/stat.
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
