//! The real agent CLIs, as provisioning installed them under the local
//! folder, for tests that run Claude Code, Codex or OpenCode themselves.

use std::path::PathBuf;

use stratavore_provision::agent_clis::agent_bin_dir;

use crate::paths;

/// The installed program `name` (`claude`, `codex` or `opencode`):
/// `<local dir>/agents/node_modules/.bin/<name>`.
///
/// # Panics
///
/// When it is not installed: provisioning installs it, and a test never
/// skips for a missing CLI, so the message says to provision.
pub fn agent_cli(name: &str) -> PathBuf {
    let path = agent_bin_dir(&paths::local_dir()).join(name);
    assert!(
        path.is_file(),
        "the agent CLI {name} is not installed at {}: run `make provision` \
         (it installs the pinned agent CLIs with npm)",
        path.display()
    );
    path
}
