//! The operating-system user a server runs as. PostgreSQL refuses to run as
//! root, so when we are root it runs as an unprivileged system user that
//! this module creates, hands the server's folders to, and drops to with
//! `runuser`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::external_command::{self, CommandError};

/// The system user Stratavore's servers run as when started by root.
pub const DEFAULT_SERVER_USER: &str = "stratavore";

/// How often `useradd` is tried when it fails for a reason other than "the
/// user exists": two processes creating users at once can collide on the
/// lock of /etc/passwd.
const USERADD_ATTEMPTS: u32 = 5;

/// Why a server user could not be found, created or given its folders.
#[derive(Debug, thiserror::Error)]
pub enum OsUserError {
    /// `getent`, `useradd` or `runuser` could not be run or failed.
    #[error("could not look up or create the OS user {user}")]
    Command {
        /// The user concerned.
        user: String,
        /// The command that failed.
        #[source]
        source: CommandError,
    },
    /// `getent passwd` answered something that is not a passwd line.
    #[error("unexpected passwd entry for {user}: {entry}")]
    BadPasswdEntry {
        /// The user concerned.
        user: String,
        /// What `getent` printed.
        entry: String,
    },
    /// A folder on the way to the server's files is closed to the user, so
    /// the server could not reach its data.
    #[error(
        "{path} is not traversable by the OS user {user}; give it o+x (chmod o+x {path}) or put the server's folder elsewhere"
    )]
    NotTraversable {
        /// The folder that blocks the way.
        path: PathBuf,
        /// The user that cannot pass it.
        user: String,
    },
    /// A file or folder could not be read, created or handed over.
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

/// An operating-system user, as found in the passwd database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl OsUser {
    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The numeric user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The numeric id of the primary group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Looks a user up by name; `None` if there is no such user.
    pub fn lookup(name: &str) -> Result<Option<OsUser>, OsUserError> {
        let mut cmd = Command::new("getent");
        cmd.args(["passwd", name]);
        let output =
            external_command::run_captured(&mut cmd).map_err(|source| OsUserError::Command {
                user: name.to_owned(),
                source,
            })?;
        // getent exits 2 when the key is not in the database.
        if output.status.code() == Some(2) {
            return Ok(None);
        }
        if !output.status.success() {
            return Err(OsUserError::Command {
                user: name.to_owned(),
                source: external_command::failure(&cmd, &output),
            });
        }
        let entry = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let fields: Vec<&str> = entry.split(':').collect();
        let parsed = match fields.as_slice() {
            [_, _, uid, gid, ..] => uid.parse().ok().zip(gid.parse().ok()),
            _ => None,
        };
        match parsed {
            Some((uid, gid)) => Ok(Some(OsUser {
                name: name.to_owned(),
                uid,
                gid,
            })),
            None => Err(OsUserError::BadPasswdEntry {
                user: name.to_owned(),
                entry,
            }),
        }
    }

    /// Returns the system user `name`, creating it (no home, no login
    /// shell) if it does not exist. Safe when several processes do this at
    /// once: whoever loses the race finds the user the winner made.
    pub fn ensure_system_user(name: &str) -> Result<OsUser, OsUserError> {
        let mut attempt = 1;
        loop {
            if let Some(user) = OsUser::lookup(name)? {
                return Ok(user);
            }
            let mut cmd = Command::new("useradd");
            cmd.args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]);
            let output = external_command::run_captured(&mut cmd).map_err(|source| {
                OsUserError::Command {
                    user: name.to_owned(),
                    source,
                }
            })?;
            if attempt >= USERADD_ATTEMPTS {
                return match OsUser::lookup(name)? {
                    Some(user) => Ok(user),
                    None => Err(OsUserError::Command {
                        user: name.to_owned(),
                        source: external_command::failure(&cmd, &output),
                    }),
                };
            }
            attempt += 1;
            // 9 is useradd's "username already in use": someone else made
            // it, and the lookup at the top of the loop will find it. Any
            // other failure may be a collision on /etc/passwd's lock.
            let created = output.status.success() || output.status.code() == Some(9);
            if !created {
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Whether this process runs with an effective user id of 0.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Who a server's commands run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The user running this process (who is not root).
    CurrentUser,
    /// Another user, switched to with `runuser` (we are root).
    User(OsUser),
}

impl RunAs {
    /// The identity for a server that must not run as root: this process's
    /// own user when that is not root, else the system user `name`,
    /// created if missing.
    pub fn unprivileged(name: &str) -> Result<RunAs, OsUserError> {
        if running_as_root() {
            Ok(RunAs::User(OsUser::ensure_system_user(name)?))
        } else {
            Ok(RunAs::CurrentUser)
        }
    }

    /// A command that runs `program` as this identity.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            RunAs::CurrentUser => Command::new(program),
            RunAs::User(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user.name(), "--"]).arg(program);
                cmd
            }
        }
    }

    /// Makes `path` belong to this identity (not recursively); nothing to do
    /// for the current user, who created it.
    pub fn take_ownership(&self, path: &Path) -> Result<(), OsUserError> {
        match self {
            RunAs::CurrentUser => Ok(()),
            RunAs::User(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|source| OsUserError::Io {
                    action: "change the owner of",
                    path: path.to_owned(),
                    source,
                }),
        }
    }

    /// Checks that this identity can pass through every folder from `/`
    /// down to `path`, so that the server fails here with a message naming
    /// the folder rather than later with "permission denied" in its log.
    pub fn check_traversable(&self, path: &Path) -> Result<(), OsUserError> {
        let RunAs::User(user) = self else {
            return Ok(());
        };
        let path = std::fs::canonicalize(path).map_err(|source| OsUserError::Io {
            action: "resolve",
            path: path.to_owned(),
            source,
        })?;
        for folder in path.ancestors() {
            let meta = std::fs::metadata(folder).map_err(|source| OsUserError::Io {
                action: "read the permissions of",
                path: folder.to_owned(),
                source,
            })?;
            // A system user has no supplementary groups, so owner, primary
            // group and others are the only classes that can apply.
            let execute_bit = if meta.uid() == user.uid {
                0o100
            } else if meta.gid() == user.gid {
                0o010
            } else {
                0o001
            };
            if meta.mode() & execute_bit == 0 {
                return Err(OsUserError::NotTraversable {
                    path: folder.to_owned(),
                    user: user.name.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_a_made_up_user_is_not() {
        let root = OsUser::lookup("root").unwrap().unwrap();
        assert_eq!((root.uid(), root.gid()), (0, 0));
        assert_eq!(OsUser::lookup("no-such-user-stratavore-x").unwrap(), None);
    }

    #[test]
    fn a_closed_folder_is_named_as_not_traversable() {
        use std::os::unix::fs::PermissionsExt;
        let nobody = OsUser::lookup("nobody").unwrap().unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.local/tmp")
            .join(format!("closed-{}", std::process::id()));
        let inner = dir.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let closed = std::fs::canonicalize(&dir).unwrap();
        let error = RunAs::User(nobody).check_traversable(&inner).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        // On a machine where a folder above ours is already closed, that one
        // is named instead; either way the named folder is on the path.
        match error {
            OsUserError::NotTraversable { path, .. } => assert!(closed.starts_with(&path)),
            other => panic!("unexpected error {other:?}"),
        }
    }
}
