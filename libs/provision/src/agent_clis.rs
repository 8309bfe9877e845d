//! The real agent CLIs (Claude Code, Codex, OpenCode) at the versions the
//! repository pins in `agents/package.json` and `agents/package-lock.json`,
//! installed with npm into the git-ignored `<local_dir>/agents/`.
//!
//! The two files are compiled in, so provisioning needs no path to the
//! repository at run time (the binary may run from anywhere, with any
//! local folder); they are written next to `node_modules` before each
//! install. A stamp file records the digest of what was installed, so a
//! second run with the same pins only checks that stamp and the three
//! programs.
//!
//! The install is `npm install` on the lock into an emptied `node_modules`,
//! not `npm ci`: opencode-ai names a binary package per platform as an
//! optional dependency, and a registry that lacks some of them (the one
//! the lock was made with answers 404 for the darwin and windows ones)
//! leaves them out of the lock, which `npm ci` then refuses as out of sync
//! with package.json. `npm install` takes the lock's versions and
//! integrity all the same (it leaves the lock byte for byte as it was);
//! the installed programs are checked afterwards.
//!
//! The install runs as the current user (unlike the embedded Postgres),
//! since it is that user who runs the supervisor and its agents.

use crate::local_files::{install_once, missing_is_fine};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::external_command::{self, CommandError};

/// `agents/package.json` of the repository: the pinned versions.
pub const PACKAGE_JSON: &str = include_str!("../../../agents/package.json");

/// `agents/package-lock.json` of the repository: the exact tree npm installs.
pub const PACKAGE_LOCK: &str = include_str!("../../../agents/package-lock.json");

/// One pinned agent CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentCli {
    /// The program, as profiles run it and as it appears in `node_modules/.bin`.
    pub program: &'static str,
    /// The npm package that provides it.
    pub package: &'static str,
    /// The pinned version, as the program's `--version` prints it.
    pub version: &'static str,
}

/// The pinned agent CLIs; a unit test keeps this list in step with
/// [`PACKAGE_JSON`].
pub const AGENT_CLIS: [AgentCli; 3] = [
    AgentCli {
        program: "claude",
        package: "@anthropic-ai/claude-code",
        version: "2.1.332",
    },
    AgentCli {
        program: "codex",
        package: "@openai/codex",
        version: "0.171.0",
    },
    AgentCli {
        program: "opencode",
        package: "opencode-ai",
        version: "1.18.33",
    },
];

/// How long the npm install may take: a cold one writes 1.2 GB (about
/// 20 s on a good line); this leaves room for a slow line, and still ends
/// a hung registry connection.
pub const NPM_INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long an installed program may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The file, under the install folder, holding the digest of the installed
/// package files.
const STAMP_FILE: &str = ".installed.sha256";

/// Why the agent CLIs could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCliError {
    /// There is no `npm` to install them with.
    #[error(
        "cannot install the agent CLIs: npm is missing; install Node.js 20 or later with npm (apt-get install nodejs npm)"
    )]
    NpmMissing {
        /// The failed attempt to run it.
        #[source]
        source: CommandError,
    },
    /// npm ran and failed, or ran past [`NPM_INSTALL_TIMEOUT`]; the error
    /// holds the end of what npm printed.
    #[error("installing the agent CLIs with npm failed: {0}")]
    Npm(#[source] CommandError),
    /// npm reported success but a program is not there.
    #[error("npm install succeeded but left no {path}")]
    ProgramMissing {
        /// Where the program should be.
        path: PathBuf,
    },
    /// An installed program does not answer `--version`.
    #[error("an installed agent CLI does not work")]
    NotWorking(#[source] CommandError),
    /// An installed program is not at the pinned version.
    #[error("{program} --version printed {printed:?}, not the pinned {pinned}")]
    WrongVersion {
        /// The program.
        program: PathBuf,
        /// The pinned version.
        pinned: &'static str,
        /// What it printed.
        printed: String,
    },
    /// A file or folder could not be created, written, locked or read.
    #[error("could not {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// What [`ensure_installed`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentClisInstalled {
    /// The folder holding `claude`, `codex` and `opencode`.
    pub bin_dir: PathBuf,
    /// Whether this call ran npm (false: the install was current).
    pub installed_now: bool,
}

/// The install folder under a local dir: `<local_dir>/agents`.
pub fn agent_install_dir(local_dir: &Path) -> PathBuf {
    local_dir.join("agents")
}

/// The folder of the installed programs: `<local_dir>/agents/node_modules/.bin`.
pub fn agent_bin_dir(local_dir: &Path) -> PathBuf {
    agent_install_dir(local_dir)
        .join("node_modules")
        .join(".bin")
}

/// Installs the pinned agent CLIs under `local_dir` unless the install
/// there is current (its stamp matches the compiled-in package files and
/// every program is present).
///
/// Safe when several processes call it at once (they take turns on
/// `<local_dir>/agents/.install.lock`); an install cut short leaves no
/// stamp, so the next call installs again. Blocking: from async code, call
/// it in `spawn_blocking`.
pub fn ensure_installed(local_dir: &Path) -> Result<AgentClisInstalled, AgentCliError> {
    let dir = agent_install_dir(local_dir);
    let bin_dir = agent_bin_dir(local_dir);
    let installed = |installed_now| AgentClisInstalled {
        bin_dir: bin_dir.clone(),
        installed_now,
    };
    let installed_now = install_once(
        &dir.join(".install.lock"),
        || is_current(&dir, &bin_dir),
        || {
            let stamp = dir.join(STAMP_FILE);
            missing_is_fine(fs::remove_file(&stamp)).map_err(io_error("remove", &stamp))?;
            write_file(&dir.join("package.json"), PACKAGE_JSON)?;
            write_file(&dir.join("package-lock.json"), PACKAGE_LOCK)?;
            npm_install(&dir)?;
            check_installed(&bin_dir)?;
            write_file(&stamp, &package_digest())
        },
        |action, path, e| io_error(action, path)(e),
    )?;
    Ok(installed(installed_now))
}

/// Whether the install in `dir` is of the compiled-in package files and
/// has every program.
fn is_current(dir: &Path, bin_dir: &Path) -> bool {
    let stamped = fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|s| s == package_digest());
    stamped
        && AGENT_CLIS
            .iter()
            .all(|cli| bin_dir.join(cli.program).is_file())
}

/// The SHA-256 of both package files, as the stamp holds it.
fn package_digest() -> String {
    let mut hasher = Sha256::new();
    hasher.update(PACKAGE_JSON);
    // A separator, so moving text from one file to the other changes it.
    hasher.update([0]);
    hasher.update(PACKAGE_LOCK);
    format!("{:x}\n", hasher.finalize())
}

/// `npm install` in `dir` on the lock, into an emptied `node_modules` so
/// that nothing of an older install stays (as `npm ci` would).
fn npm_install(dir: &Path) -> Result<(), AgentCliError> {
    let node_modules = dir.join("node_modules");
    match fs::remove_dir_all(&node_modules) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove", &node_modules)(error));
        }
        _ => {}
    }
    // Install scripts must run: those of claude-code and opencode-ai copy
    // the native binary of their platform package over a placeholder
    // (locally, no download). package.json approves them in `allowScripts`,
    // for npm versions that want scripts approved.
    let mut npm = Command::new("npm");
    npm.current_dir(dir).args([
        "install",
        // No report or donation prompts: they cost a registry round trip and
        // bury the real error in the output an error keeps.
        "--no-audit",
        "--no-fund",
    ]);
    match external_command::run_checked_within(&mut npm, NPM_INSTALL_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(source) if source.is_not_found() => Err(AgentCliError::NpmMissing { source }),
        Err(error) => Err(AgentCliError::Npm(error)),
    }
}

/// Every program is in `bin_dir` and answers `--version` with its pinned
/// version: a program whose install script did not run is there but only
/// prints how to fix it.
fn check_installed(bin_dir: &Path) -> Result<(), AgentCliError> {
    for cli in AGENT_CLIS {
        let program = bin_dir.join(cli.program);
        if !program.is_file() {
            return Err(AgentCliError::ProgramMissing { path: program });
        }
        let mut version = Command::new(&program);
        version.arg("--version");
        let output = external_command::run_checked_within(&mut version, VERSION_TIMEOUT)
            .map_err(AgentCliError::NotWorking)?;
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !printed.split_whitespace().any(|word| word == cli.version) {
            return Err(AgentCliError::WrongVersion {
                program,
                pinned: cli.version,
                printed,
            });
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<(), AgentCliError> {
    fs::write(path, contents).map_err(io_error("write", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AgentCliError {
    let path = path.to_owned();
    move |source| AgentCliError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_list_matches_package_json_and_its_lock() {
        for cli in AGENT_CLIS {
            let pin = format!(r#""{}": "{}""#, cli.package, cli.version);
            assert!(PACKAGE_JSON.contains(&pin), "package.json lacks {pin}");
            let locked = format!(
                "\"node_modules/{}\": {{\n      \"version\": \"{}\"",
                cli.package, cli.version
            );
            assert!(PACKAGE_LOCK.contains(&locked), "the lock lacks {locked}");
        }
    }

    #[test]
    fn the_programs_live_in_node_modules_bin_of_the_agents_folder() {
        assert_eq!(
            agent_bin_dir(Path::new("/x/.local")),
            Path::new("/x/.local/agents/node_modules/.bin")
        );
    }

    #[test]
    fn an_install_without_a_matching_stamp_is_not_current() {
        let dir = std::env::temp_dir().join(format!("agent-clis-stamp-{}", std::process::id()));
        let bin_dir = dir.join("node_modules/.bin");
        fs::create_dir_all(&bin_dir).ok();
        for cli in AGENT_CLIS {
            fs::write(bin_dir.join(cli.program), "").ok();
        }
        let without_stamp = is_current(&dir, &bin_dir);
        fs::write(dir.join(STAMP_FILE), "0000\n").ok();
        let stale_stamp = is_current(&dir, &bin_dir);
        fs::write(dir.join(STAMP_FILE), package_digest()).ok();
        let current = is_current(&dir, &bin_dir);
        fs::remove_file(bin_dir.join("codex")).ok();
        let program_gone = is_current(&dir, &bin_dir);
        fs::remove_dir_all(&dir).ok();
        assert_eq!(
            [without_stamp, stale_stamp, current, program_gone],
            [false, false, true, false]
        );
    }
}
