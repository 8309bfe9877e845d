//! Sessions under `$HOME/.sim-agent/sessions/<id>.jsonl`, as the real CLI
//! keeps its sessions under the home folder, one JSON line per save: a new
//! id is refused when its file exists, a resume when its file has no saved
//! turn.
//!
//! A save appends a line, as Claude Code appends to its session's JSONL,
//! rather than rewriting the file and renaming it into place: with hundreds
//! of agents saving a turn a second into this one folder (`make bench`,
//! supervision scale), the create-and-rename took most of each agent's
//! kernel time, under the folder's lock. A crash can leave a torn last
//! line; a resume reads the last whole one.

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
        let record =
            last_record(&bytes).map_err(|source| SessionError::Corrupt { path, source })?;
        if record.turns_saved == 0 {
            return Err(SessionError::NotFound(session_id.to_owned()));
        }
        Ok(record)
    }

    /// Saves the record: appends it, in one write, to the session's file,
    /// which [`Self::create`] made (a save never creates one).
    pub fn save(&self, record: &SessionRecord) -> Result<(), SessionError> {
        let path = self.path_of(&record.session_id)?;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(&encode(record)))
            .map_err(|source| SessionError::Io { path, source })
    }

    fn path_of(&self, session_id: &str) -> Result<PathBuf, SessionError> {
        let id = Uuid::parse_str(session_id).map_err(|_| SessionError::InvalidId)?;
        Ok(self.dir.join(format!("{}.jsonl", id.hyphenated())))
    }
}

/// One line of the file.
fn encode(record: &SessionRecord) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The last whole record of a session file. A last line that does not
/// parse (torn by a crash mid-write) falls back to the one before; a file
/// with no line that parses is corrupt.
fn last_record(bytes: &[u8]) -> Result<SessionRecord, serde_json::Error> {
    let mut failure = None;
    for line in bytes.split(|b| *b == b'\n').rev() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => return Ok(record),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        // Nothing but blanks: the parse of the whole says so.
        None => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(turns_saved: u32) -> SessionRecord {
        SessionRecord {
            session_id: "0195f5a0-0000-7000-8000-000000000001".to_owned(),
            turns_saved,
            cwd: "/w".to_owned(),
        }
    }

    #[test]
    fn the_last_whole_line_is_the_session() {
        let mut file = encode(&record(0));
        file.extend(encode(&record(1)));
        file.extend(encode(&record(2)));
        assert_eq!(last_record(&file).ok(), Some(record(2)));
        // A save torn by a crash leaves half a line: the one before holds.
        file.extend(&encode(&record(3))[..20]);
        assert_eq!(last_record(&file).ok(), Some(record(2)));
    }

    #[test]
    fn a_file_with_no_whole_line_is_corrupt() {
        assert!(last_record(b"").is_err());
        assert!(last_record(b"\n \n").is_err());
        assert!(last_record(b"{\"session_id\": 1}\n").is_err());
    }

    #[test]
    fn saves_append_to_the_file_that_create_made() {
        let home = std::env::temp_dir().join(format!("sim-store-{}", Uuid::now_v7()));
        let store = SessionStore::under_home(&home);
        let id = "0195f5a0-0000-7000-8000-000000000002";
        let mut session = store.create(id, "/w").expect("create");
        assert!(matches!(store.resume(id), Err(SessionError::NotFound(_))));
        for _ in 0..3 {
            session.turns_saved += 1;
            store.save(&session).expect("save");
        }
        assert_eq!(store.resume(id).ok().map(|s| s.turns_saved), Some(3));
        let lines = fs::read_to_string(store.path_of(id).expect("path")).expect("read");
        assert_eq!(lines.lines().count(), 4);
        assert!(matches!(
            store.create(id, "/w"),
            Err(SessionError::InUse(_))
        ));
        let other = "0195f5a0-0000-7000-8000-000000000003";
        assert!(matches!(
            store.save(&SessionRecord {
                session_id: other.to_owned(),
                ..session
            }),
            Err(SessionError::Io { .. })
        ));
        let _ = fs::remove_dir_all(home);
    }
}
