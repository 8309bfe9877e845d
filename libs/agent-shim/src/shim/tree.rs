//! The shim's process tree, read from `/proc`.
//!
//! The shim is a child subreaper, so an orphan anywhere below it is
//! reparented to it (or to a subreaper below it) and never leaves its tree:
//! "every process of the runner" is exactly "every descendant of the shim",
//! found by following each process's parent (`/proc/<pid>/stat`, field 4).
//! The environment mark ([`marked_processes`]) is a second net only.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use rustix::process::{Pid, Signal};

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// Its parent's process id.
    pub ppid: i32,
    /// The state letter: `R`, `S`, `D`, `T` (stopped), `t`, `Z` (zombie), ...
    pub state: char,
}

impl ProcStat {
    /// Whether a signal can no longer change anything about this process:
    /// it is dead and only waits to be reaped.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether the process is stopped (by a signal or a tracer).
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields that
/// follow are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat { pid, ppid, state })
}

/// Reads one process's stat; `None` when it is gone (or never was).
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Every process currently visible in `/proc`, by pid. Processes that end
/// while the directory is read are simply left out.
fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The descendants of `root` (not `root` itself), parents before children.
pub fn descendants(root: i32) -> Vec<ProcStat> {
    descendants_in(root, &all_processes())
}

/// The descendants of `root` among `processes`, parents before children.
pub fn descendants_in(root: i32, processes: &[ProcStat]) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    for process in processes {
        children.entry(process.ppid).or_default().push(*process);
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for child in children.remove(&parent).unwrap_or_default() {
            // `remove` expands each parent at most once, so even a table
            // read mid-change that holds a cycle cannot loop forever.
            frontier.push(child.pid);
            found.push(child);
        }
    }
    found
}

/// Sends `signal` to every process in `processes`. A process that has ended
/// meanwhile (ESRCH) is no error: it is exactly what a kill wants.
pub fn signal_each(processes: &[ProcStat], signal: Signal) {
    for process in processes {
        if let Some(pid) = Pid::from_raw(process.pid) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// Sends `signal` to every descendant of `root` once.
pub fn signal_tree(root: i32, signal: Signal) {
    signal_each(&descendants(root), signal);
}

/// Freezes every descendant of `root`. A process may fork between the
/// listing and the SIGSTOP, so this lists again until every live
/// descendant shows as stopped (a stopped process cannot fork) or `budget`
/// runs out; returns whether all were seen stopped.
pub fn stop_tree(root: i32, budget: Duration) -> bool {
    let step = Duration::from_millis(2);
    let mut spent = Duration::ZERO;
    loop {
        let running: Vec<ProcStat> = descendants(root)
            .into_iter()
            .filter(|process| !process.is_dead() && !process.is_stopped())
            .collect();
        if running.is_empty() {
            return true;
        }
        if spent >= budget {
            return false;
        }
        signal_each(&running, Signal::STOP);
        // SIGSTOP takes effect asynchronously; give the scheduler a moment
        // before checking the states again.
        std::thread::sleep(step);
        spent += step;
    }
}

/// Pids of processes whose environment holds exactly the entry `entry`
/// (e.g. `STRATAVORE_RUNNER=r:1`). Needs permission to read
/// `/proc/<pid>/environ`, i.e. the same user or root; others are skipped.
/// Note that the environment read is the one the process started with.
pub fn marked_processes(entry: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = entry.as_bytes();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|environ| environ.split(|byte| *byte == 0).any(|item| item == wanted))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "42 (a) b) (c) T 7 42 42 0 -1 4194560 0 0";
        assert_eq!(
            parse_stat(42, text),
            Some(ProcStat {
                pid: 42,
                ppid: 7,
                state: 'T'
            })
        );
        assert_eq!(parse_stat(1, "garbage"), None);
    }

    #[test]
    fn descendants_follow_parents_through_every_generation() {
        let p = |pid, ppid| ProcStat {
            pid,
            ppid,
            state: 'S',
        };
        let table = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(13, 10), p(20, 1)];
        let mut pids: Vec<i32> = descendants_in(10, &table).iter().map(|d| d.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![11, 12, 13]);
        assert!(descendants_in(12, &table).is_empty());
    }

    #[test]
    fn this_process_is_found_under_its_parent() {
        let me = std::process::id() as i32;
        let parent = read_stat(me).map(|stat| stat.ppid).unwrap_or(0);
        assert!(descendants(parent).iter().any(|d| d.pid == me));
    }
}
