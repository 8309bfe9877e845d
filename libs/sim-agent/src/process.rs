//! The process tricks a test asks for: grandchildren that try to outlive
//! the agent, and deafness to SIGTERM.

use std::io;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// Starts three `sleep 1000` grandchildren the way agents' own children
/// escape: one plain, one in a session of its own (`setsid`), one with a
/// cleared environment (`env -i`, as Codex starts MCP servers). They are
/// not waited for. Their output goes nowhere, so they do not hold the
/// agent's stdout open. Returns their pids.
///
/// `setsid` and `env` exec `sleep` in place (a child of ours is not a
/// group leader, so `setsid` need not fork), so each pid is the sleep's.
pub fn start_grandchildren() -> io::Result<Vec<u32>> {
    let commands: [&[&str]; 3] = [
        &["sleep", "1000"],
        &["setsid", "sleep", "1000"],
        &["env", "-i", "sleep", "1000"],
    ];
    commands
        .iter()
        .map(|argv| {
            let (program, args) = argv.split_first().unwrap_or((&"sleep", &[]));
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(|child| child.id())
        })
        .collect()
}

/// Ignores SIGTERM from now on, so only SIGKILL ends this process.
/// Children started later inherit it (an ignored signal survives exec),
/// so start grandchildren first.
#[allow(unsafe_code)]
pub fn ignore_sigterm() -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler, so no code of ours ever runs in
    // signal context; `signal` only changes this process's disposition of
    // SIGTERM, which no other part of this program relies on.
    let previous = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    if previous == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The start of every run: grandchildren when asked (before SIGTERM is
/// ignored, which they would inherit), then deafness to SIGTERM when
/// asked. Returns the grandchildren's pids, if started.
pub fn start_misbehaving(
    grandchildren: bool,
    deaf_to_sigterm: bool,
) -> io::Result<Option<Vec<u32>>> {
    let pids = if grandchildren {
        Some(start_grandchildren()?)
    } else {
        None
    };
    if deaf_to_sigterm {
        ignore_sigterm()?;
    }
    Ok(pids)
}

/// Sleeps forever printing nothing, as an agent stuck on a call does.
pub fn hang_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
