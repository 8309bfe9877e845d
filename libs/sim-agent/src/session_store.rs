//! Sessions under `$HOME/.sim-agent/sessions/<id>.json`, as the real CLI
//! keeps its sessions under the home folder: a new id is refused when its
//! file exists, a resume when its file has no saved turn.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id.
    pub session_id: String,
    /// Turns completed over all runs of the session.
    pub turns_saved: u32,
    /// Where the session ran first.
    pub cwd: String,
}

/// Why a session cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The id is not a UUID (the real CLI refuses it too; it also keeps a
    /// path out of the id).
    #[error("Invalid session ID. Must be a valid UUID.")]
    InvalidId,
    /// A new session was asked for with an id that exists.
    #[error("Session ID {0} is already in use.")]
    InUse(String),
    /// A resume of a session with no saved turn, or none at all.
    #[error("No conversation found with session ID: {0}")]
    NotFound(String),
    /// The store could not be read or written.
    #[error("session store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A session file is not a session record.
    #[error("session file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The folder of session files.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// The store of the user whose home folder is `home`.
    #[must_use]
    pub fn under_home(home: &Path) -> Self {
        Self {
            dir: home.join(".sim-agent").join("sessions"),
        }
    }

    /// Starts a new session: fails if its id is taken. The file is created
    /// exclusively, so two agents given one id cannot both start.
    pub fn create(&self, session_id: &str, cwd: &str) -> Result<SessionRecord, SessionError> {
        let path = self.path_of(session_id)?;
        fs::create_dir_all(&self.dir).map_err(|source| SessionError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let record = SessionRecord {
            session_id: session_id.to_owned(),
            turns_saved: 0,
            cwd: cwd.to_owned(),
        };
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SessionError::InUse(session_id.to_owned()));
            }
            Err(source) => return Err(SessionError::Io { path, source }),
        };
        file.write_all(&encode(&record))
            .map_err(|source| SessionError::Io { path, source })?;
        Ok(record)
    }

    /// Opens a session to resume: it must have saved a turn.
    pub fn resume(&self, session_id: &str) -> Result<SessionRecord, SessionError> {
        let path = self
            .path_of(session_id)
            .map_err(|_| SessionError::NotFound(session_id.to_owned()))?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SessionError::NotFound(session_id.to_owned()));
            }
            Err(source) => return Err(SessionError::Io { path, source }),
        };
        let record: SessionRecord = serde_json::from_slice(&bytes)
            .map_err(|source| SessionError::Corrupt { path, source })?;
        if record.turns_saved == 0 {
            return Err(SessionError::NotFound(session_id.to_owned()));
        }
        Ok(record)
    }

    /// Saves the record, replacing the file by rename so that a reader (or
    /// a crash) never sees half of it.
    pub fn save(&self, record: &SessionRecord) -> Result<(), SessionError> {
        let path = self.path_of(&record.session_id)?;
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, encode(record)).map_err(|source| SessionError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| SessionError::Io { path, source })
    }

    fn path_of(&self, session_id: &str) -> Result<PathBuf, SessionError> {
        let id = Uuid::parse_str(session_id).map_err(|_| SessionError::InvalidId)?;
        Ok(self.dir.join(format!("{}.json", id.hyphenated())))
    }
}

fn encode(record: &SessionRecord) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    serde_json::to_vec(record).unwrap_or_default()
}
