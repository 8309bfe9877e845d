//! Per-session transcripts: every attempt of a session appends the agent's
//! stdout, unchanged, to `<data_dir>/sessions/<session>.jsonl` (stderr to
//! `<session>.stderr.log` beside it). Each attempt's part of the file
//! starts at the size the file had when it was spawned, recorded before the
//! spawn, so that an attempt's events are derived from its own lines only,
//! and derived again from the same lines after a restart. When the attempt
//! ends its size and sha256 are recorded, for whoever later reads or ships
//! the file.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use stratavore_events::process::TranscriptFile;
use stratavore_store::StoreError;
use uuid::Uuid;

/// A session id that cannot name a file in the sessions folder.
#[derive(Debug, thiserror::Error)]
#[error("session id {0:?} cannot name a transcript file")]
pub struct UnsafeSessionId(pub String);

/// The two files of a session's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptPaths {
    /// The agent's stdout (JSON lines).
    pub stdout: PathBuf,
    /// The agent's stderr.
    pub stderr: PathBuf,
}

impl TranscriptPaths {
    /// The files of `session` under `data_dir`. The id becomes a file name,
    /// so only letters, digits, `-` and `_` are accepted (agents' session
    /// ids are UUIDs): nothing an offer carries can reach outside the folder.
    pub fn of_session(data_dir: &Path, session: &str) -> Result<Self, UnsafeSessionId> {
        let safe = !session.is_empty()
            && session.len() <= 128
            && session
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe {
            return Err(UnsafeSessionId(session.to_owned()));
        }
        let dir = sessions_dir(data_dir);
        Ok(Self {
            stdout: dir.join(format!("{session}.jsonl")),
            stderr: dir.join(format!("{session}.stderr.log")),
        })
    }
}

/// The folder of the node's session transcripts.
pub fn sessions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sessions")
}

/// The size of `path`, 0 when it does not exist yet.
pub fn current_size(path: &Path) -> std::io::Result<u64> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// A transcript as it stood when an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptSummary {
    /// Bytes covered.
    pub size: u64,
    /// The sha256 of those bytes, lower-case hex.
    pub sha256: String,
}

/// The size and sha256 of the first `size` bytes of `path` (fewer when the
/// file is shorter; a missing file is empty). Only the bytes the attempt's
/// deriver read are covered, so the record matches what was billed even if
/// a later attempt appends meanwhile.
pub fn summarize(path: &Path, size: u64) -> std::io::Result<TranscriptSummary> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TranscriptSummary {
                size: 0,
                sha256: hex(&Sha256::digest(b"")),
            });
        }
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut limited = file.take(size);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut covered = 0u64;
    loop {
        let n = limited.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        covered += n as u64;
    }
    Ok(TranscriptSummary {
        size: covered,
        sha256: hex(&hasher.finalize()),
    })
}

impl TranscriptSummary {
    /// The summary as `process.exited` carries it, for the file at `path`.
    #[must_use]
    pub fn file(&self, path: &Path) -> TranscriptFile {
        TranscriptFile {
            path: path.display().to_string(),
            bytes: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where an attempt's transcript part starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptStart {
    /// The session's stdout transcript.
    pub path: PathBuf,
    /// Its size when the attempt was spawned.
    pub offset: u64,
}

fn db_offset(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Record where `attempt`'s transcript starts, before its shim is started.
/// A start that is recorded again (the first spawn never happened) takes
/// the new offset.
pub async fn record_start(
    pool: &PgPool,
    runner: Uuid,
    attempt: u32,
    start: &TranscriptStart,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO attempt_transcripts (runner_id, attempt, path, start_offset)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (runner_id, attempt)
         DO UPDATE SET path = excluded.path, start_offset = excluded.start_offset",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .bind(start.path.to_string_lossy().as_ref())
    .bind(db_offset(start.offset))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(StoreError::new("recording a transcript's start"))
}

/// Where `attempt`'s transcript starts; None for an attempt spawned before
/// transcripts were kept per session.
pub async fn start_of(
    pool: &PgPool,
    runner: Uuid,
    attempt: u32,
) -> Result<Option<TranscriptStart>, StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT path, start_offset FROM attempt_transcripts WHERE runner_id = $1 AND attempt = $2",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .fetch_optional(pool)
    .await
    .map_err(StoreError::new("reading a transcript's start"))?;
    Ok(row.map(|(path, offset)| TranscriptStart {
        path: PathBuf::from(path),
        offset: u64::try_from(offset).unwrap_or(0),
    }))
}

/// Record the transcript's size and sha256 once `attempt` ended.
pub async fn record_end(
    pool: &PgPool,
    runner: Uuid,
    attempt: u32,
    summary: &TranscriptSummary,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE attempt_transcripts SET end_size = $3, sha256 = $4
         WHERE runner_id = $1 AND attempt = $2",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .bind(db_offset(summary.size))
    .bind(&summary.sha256)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(StoreError::new("recording a transcript's end"))
}

/// What this node knows of an attempt's part of its session transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTranscript {
    /// The session's stdout transcript.
    pub path: PathBuf,
    /// Where the attempt's part starts in it.
    pub start: u64,
    /// Where it ends, once the attempt ended and that was recorded.
    pub end: Option<u64>,
    /// Where the next attempt appended to the same file starts, if one
    /// did: the part of an attempt whose end is not recorded yet stops
    /// there at the latest.
    pub next_start: Option<u64>,
}

/// Where an attempt's part lies in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    /// Its first byte in the file.
    pub start: u64,
    /// Its length so far (for a running attempt, up to the file's end now,
    /// a line being written included).
    pub len: u64,
    /// The attempt ended: the part will not grow.
    pub ended: bool,
}

impl AttemptTranscript {
    /// The part as it stands while the file is `file_size` bytes long. A
    /// file shorter than the recorded offsets (it was cut) yields what is
    /// left, never more.
    pub fn span(&self, file_size: u64) -> PartSpan {
        let limit = match self.end {
            Some(end) => end,
            None => self.next_start.unwrap_or(u64::MAX),
        };
        let end = limit.min(file_size);
        PartSpan {
            start: self.start,
            len: end.saturating_sub(self.start),
            ended: self.end.is_some(),
        }
    }
}

/// What this node recorded of `attempt`'s transcript; None for an attempt
/// it never spawned.
pub async fn attempt_transcript(
    pool: &PgPool,
    runner: Uuid,
    attempt: u32,
) -> Result<Option<AttemptTranscript>, StoreError> {
    // Any runner's attempt may append to the session's file next (a resume
    // is a new runner), so the next start is looked for by path.
    let row: Option<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT t.path, t.start_offset, t.end_size,
                (SELECT min(o.start_offset) FROM attempt_transcripts o
                  WHERE o.path = t.path AND o.start_offset > t.start_offset)
         FROM attempt_transcripts t WHERE t.runner_id = $1 AND t.attempt = $2",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .fetch_optional(pool)
    .await
    .map_err(StoreError::new("reading a transcript's bounds"))?;
    let offset = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(row.map(|(path, start, end, next)| AttemptTranscript {
        path: PathBuf::from(path),
        start: offset(start),
        end: end.map(offset),
        next_start: next.map(offset),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::transcript_events::{
        AttemptIdentity, AttemptSetup, DerivedEvent, TranscriptDeriver,
    };
    use crate::transcript_reader::TranscriptReader;
    use std::io::Write;
    use stratavore_agent_shim::runner_dir::{ExitReason, ExitRecord};

    const TWO_TURNS: &str = include_str!(
        "../../../libs/agent-protocols/tests/fixtures/claude/two-turns-with-tools.jsonl"
    );
    const NO_LOGIN: &str =
        include_str!("../../../libs/agent-protocols/tests/fixtures/claude/no-login.jsonl");

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stv-transcripts-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// What an attempt's deriver makes of the file from `offset` to its end.
    fn derive_from(path: &Path, attempt: u32, offset: u64) -> (Vec<DerivedEvent>, u64) {
        let mut deriver = TranscriptDeriver::new(
            AttemptIdentity {
                runner_id: Uuid::nil(),
                attempt,
                node: "n".to_owned(),
            },
            AttemptSetup::claude("s"),
        );
        let mut reader = TranscriptReader::at(path.to_path_buf(), offset);
        let lines = reader.remaining_lines().unwrap();
        let mut events: Vec<_> = lines.iter().flat_map(|l| deriver.feed_line(l)).collect();
        events.extend(deriver.finish(
            &ExitRecord {
                code: Some(0),
                signal: None,
                reason: ExitReason::Exited,
                detail: None,
                ended_boottime_ns: 0,
            },
            None,
        ));
        (events, reader.offset())
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn two_attempts_of_a_session_share_one_file_and_each_derives_only_its_own_lines() {
        let dir = scratch();
        let path = dir.join("s.jsonl");
        // Attempt 1 runs and ends; attempt 2 (a resume) appends after it.
        let first_start = current_size(&path).unwrap();
        append(&path, TWO_TURNS);
        let (first, first_end) = derive_from(&path, 1, first_start);
        let second_start = current_size(&path).unwrap();
        append(&path, NO_LOGIN);
        let (second, second_end) = derive_from(&path, 2, second_start);

        // Each as if it had had a file of its own.
        let alone = scratch();
        append(&alone.join("1"), TWO_TURNS);
        append(&alone.join("2"), NO_LOGIN);
        assert_eq!(first, derive_from(&alone.join("1"), 1, 0).0);
        assert_eq!(second, derive_from(&alone.join("2"), 2, 0).0);
        assert_eq!((first_start, first_end), (0, second_start));
        // Read again from its recorded start, as after a restart.
        assert_eq!(derive_from(&path, 2, second_start), (second, second_end));

        let whole = std::fs::read(&path).unwrap();
        assert_eq!(second_end, whole.len() as u64);
        assert_eq!(
            summarize(&path, first_end).unwrap(),
            summarize(&alone.join("1"), u64::MAX).unwrap(),
            "attempt 1's record covers exactly the file as it ended"
        );
        assert_eq!(
            summarize(&path, second_end).unwrap().sha256,
            hex(&Sha256::digest(&whole))
        );
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(alone).unwrap();
    }

    #[test]
    fn an_attempts_part_ends_at_its_recorded_end_else_at_the_next_start_or_the_file() {
        let part = |end, next_start| AttemptTranscript {
            path: PathBuf::from("/d/sessions/s.jsonl"),
            start: 100,
            end,
            next_start,
        };
        let ended = part(Some(150), Some(150)).span(400);
        assert_eq!((ended.start, ended.len, ended.ended), (100, 50, true));
        let running = part(None, None).span(400);
        assert_eq!((running.len, running.ended), (300, false));
        assert_eq!(
            part(None, Some(180)).span(400).len,
            80,
            "a later attempt's lines are not its"
        );
        assert_eq!(part(Some(150), None).span(120).len, 20, "a file cut short");
        assert_eq!(
            part(None, None).span(40).len,
            0,
            "a file shorter than the start"
        );
    }

    #[test]
    fn a_session_names_its_two_files_in_the_sessions_folder() {
        let paths = TranscriptPaths::of_session(Path::new("/data"), "0192-ab_C").unwrap();
        assert_eq!(
            paths.stdout,
            PathBuf::from("/data/sessions/0192-ab_C.jsonl")
        );
        assert_eq!(
            paths.stderr,
            PathBuf::from("/data/sessions/0192-ab_C.stderr.log")
        );
    }

    #[test]
    fn a_session_id_that_could_leave_the_folder_is_refused() {
        for bad in ["", "../x", "a/b", "a.b", "..", &"x".repeat(129)] {
            assert!(
                TranscriptPaths::of_session(Path::new("/data"), bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_summary_covers_the_bytes_asked_for_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("stv-summary-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.jsonl");
        let empty = summarize(&path, 10).unwrap();
        assert_eq!(empty.size, 0);
        assert_eq!(
            empty.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        std::fs::write(&path, b"abc\ndef\n").unwrap();
        let first = summarize(&path, 3).unwrap();
        assert_eq!(
            first,
            TranscriptSummary {
                size: 3,
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                    .to_owned(),
            }
        );
        assert_eq!(summarize(&path, 100).unwrap().size, 8);
        assert_eq!(current_size(&path).unwrap(), 8);
        assert_eq!(current_size(&dir.join("none")).unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
