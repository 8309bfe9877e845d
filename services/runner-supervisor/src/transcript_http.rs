//! The node's transcript endpoint, on its health server: the one read
//! between services that is not a message (DESIGN.md section 1). The
//! gateway reads an attempt's part of its session transcript from the node
//! that holds it, with the node token, the way the Kubernetes API server
//! reads logs from kubelets.
//!
//! `GET /internal/v1/transcripts/{runner}/{attempt}?offset=N&limit=M`
//! with `Authorization: Bearer <node.token>` answers the attempt's bytes
//! from `offset` (counted from the start of its part) as `text/plain`,
//! whole lines only while it runs, at most `limit` bytes, with the headers
//! [`ENDED_HEADER`], [`NEXT_OFFSET_HEADER`] and [`SIZE_HEADER`]. 401
//! without the token (always, when the node has none), 404 for an attempt
//! this node never spawned, 416 for an offset past the part's end.

use crate::config::NodeToken;
use crate::transcripts::{AttemptTranscript, PartSpan, attempt_transcript, sessions_dir};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sqlx::PgPool;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// The route.
pub const ROUTE: &str = "/internal/v1/transcripts/{runner}/{attempt}";
/// `true` once the attempt ended: its part will not grow.
pub const ENDED_HEADER: &str = "stratavore-attempt-ended";
/// The offset to ask for next (the end of what this answer holds).
pub const NEXT_OFFSET_HEADER: &str = "stratavore-next-offset";
/// The part's length now, in bytes (for a running attempt, a line still
/// being written included).
pub const SIZE_HEADER: &str = "stratavore-size";
/// The most one answer holds, and the default `limit`.
pub const MAX_PART_BYTES: u64 = 8 * 1024 * 1024;

/// What the endpoint needs: the token, where transcripts live, and the
/// pool once the node has its database (503 until then).
#[derive(Clone)]
pub struct TranscriptState {
    token: NodeToken,
    data_dir: PathBuf,
    pool: Arc<OnceLock<PgPool>>,
}

impl TranscriptState {
    /// The endpoint of a node whose transcripts live under `data_dir`.
    pub fn new(token: NodeToken, data_dir: PathBuf) -> Self {
        Self {
            token,
            data_dir,
            pool: Arc::default(),
        }
    }

    /// Answer requests from now on.
    pub fn set_pool(&self, pool: PgPool) {
        let _ = self.pool.set(pool);
    }
}

/// The routes to merge into the health server.
pub fn router(state: TranscriptState) -> Router {
    Router::new().route(ROUTE, get(get_part)).with_state(state)
}

/// Whether the request carries `token` as its bearer token.
pub fn authorized(headers: &HeaderMap, token: &NodeToken) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, presented)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && token.accepts(presented.trim())
}

#[derive(Debug, Deserialize)]
struct PartQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

async fn get_part(
    State(state): State<TranscriptState>,
    Path((runner, attempt)): Path<(String, String)>,
    query: Result<Query<PartQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // The token first: nothing, not even whether an attempt exists, is
    // told to a caller without it.
    if !authorized(&headers, &state.token) {
        let mut response = plain(StatusCode::UNAUTHORIZED, "a valid node token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let (Ok(runner), Ok(attempt)) = (Uuid::parse_str(&runner), attempt.parse::<u32>()) else {
        return plain(StatusCode::NOT_FOUND, "no such attempt on this node");
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(pool) = state.pool.get() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is still connecting to its database",
        );
    };
    let transcript = match attempt_transcript(pool, runner, attempt).await {
        Ok(Some(t)) => t,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such attempt on this node"),
        Err(e) => {
            tracing::error!(error = %e, %runner, attempt, "cannot read a transcript's bounds");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the transcript",
            );
        }
    };
    let request = PartRequest {
        offset: query.offset.unwrap_or(0),
        limit: query
            .limit
            .unwrap_or(MAX_PART_BYTES)
            .clamp(1, MAX_PART_BYTES),
    };
    let data_dir = state.data_dir.clone();
    let read =
        tokio::task::spawn_blocking(move || read_part(&data_dir, &transcript, request)).await;
    match read {
        Ok(Ok(part)) => part.into_response(),
        Ok(Err(PartError::PastEnd { size })) => plain(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("the offset is past the attempt's transcript ({size} bytes)"),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, %runner, attempt, "cannot serve a transcript");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the transcript",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "a transcript read panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the transcript",
            )
        }
    }
}

/// Which bytes a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRequest {
    /// From where, counted from the start of the attempt's part.
    pub offset: u64,
    /// At most this many bytes.
    pub limit: u64,
}

/// Bytes of an attempt's part, and where they leave the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The bytes: whole lines, unless the attempt ended and these reach its
    /// end (its last line may lack a newline) or one line is longer than
    /// the limit (then the limit's worth of it).
    pub bytes: Vec<u8>,
    /// The offset after them.
    pub next_offset: u64,
    /// The part's length now.
    pub size: u64,
    /// The attempt ended.
    pub ended: bool,
}

impl IntoResponse for Part {
    fn into_response(self) -> Response {
        // Digits and `true`/`false` are always valid header values.
        let value = |v: String| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""));
        (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (
                    header::HeaderName::from_static(ENDED_HEADER),
                    value(self.ended.to_string()),
                ),
                (
                    header::HeaderName::from_static(NEXT_OFFSET_HEADER),
                    value(self.next_offset.to_string()),
                ),
                (
                    header::HeaderName::from_static(SIZE_HEADER),
                    value(self.size.to_string()),
                ),
            ],
            self.bytes,
        )
            .into_response()
    }
}

/// Why a part cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The offset lies past the part's end.
    #[error("offset past the end of the part ({size} bytes)")]
    PastEnd {
        /// The part's length.
        size: u64,
    },
    /// The recorded path is not a file of the sessions folder.
    #[error("{0} is not in the node's sessions folder")]
    OutsideSessions(PathBuf),
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How many of `bytes` (read from the part's `offset`) to serve: up to the
/// last newline, so a reader never gets half a line it would get whole
/// later; all of them when they reach the end of an ended attempt, or when
/// they fill the window without a newline (one line longer than it).
pub fn servable_len(bytes: &[u8], reaches_final_end: bool, window_full: bool) -> usize {
    if reaches_final_end {
        return bytes.len();
    }
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => last + 1,
        None if window_full => bytes.len(),
        None => 0,
    }
}

/// Whether `path` is a file directly in `sessions`, by name and, when it
/// exists, once links are resolved.
fn in_sessions_folder(path: &FsPath, sessions: &FsPath) -> Result<bool, std::io::Error> {
    if path.parent() != Some(sessions) {
        return Ok(false);
    }
    match (path.canonicalize(), sessions.canonicalize()) {
        (Ok(file), Ok(folder)) => Ok(file.parent() == Some(folder.as_path())),
        (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Read what `request` asks of an attempt's part. Only a file of the
/// node's sessions folder is ever opened.
pub fn read_part(
    data_dir: &FsPath,
    transcript: &AttemptTranscript,
    request: PartRequest,
) -> Result<Part, PartError> {
    let path = &transcript.path;
    let io = |source| PartError::Io {
        path: path.clone(),
        source,
    };
    if !in_sessions_folder(path, &sessions_dir(data_dir)).map_err(io)? {
        return Err(PartError::OutsideSessions(path.clone()));
    }
    let mut file = match File::open(path) {
        Ok(file) => Some(file),
        // The agent wrote nothing yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let file_size = match &file {
        Some(f) => f.metadata().map_err(io)?.len(),
        None => 0,
    };
    let PartSpan { start, len, ended } = transcript.span(file_size);
    if request.offset > len {
        return Err(PartError::PastEnd { size: len });
    }
    let window = (len - request.offset).min(request.limit);
    let mut bytes = Vec::new();
    if let Some(file) = &mut file
        && window > 0
    {
        file.seek(SeekFrom::Start(start + request.offset))
            .map_err(io)?;
        file.take(window).read_to_end(&mut bytes).map_err(io)?;
    }
    let reaches_end = request.offset + bytes.len() as u64 == len;
    let window_full = bytes.len() as u64 == request.limit;
    bytes.truncate(servable_len(&bytes, ended && reaches_end, window_full));
    Ok(Part {
        next_offset: request.offset + bytes.len() as u64,
        bytes,
        size: len,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stv-part-{}", Uuid::new_v4()));
        std::fs::create_dir_all(sessions_dir(&dir)).unwrap();
        dir
    }

    fn transcript(dir: &FsPath, start: u64, end: Option<u64>) -> AttemptTranscript {
        AttemptTranscript {
            path: sessions_dir(dir).join("s.jsonl"),
            start,
            end,
            next_start: None,
        }
    }

    fn ask(offset: u64) -> PartRequest {
        PartRequest {
            offset,
            limit: MAX_PART_BYTES,
        }
    }

    #[test]
    fn only_whole_lines_are_served_until_the_attempt_ended() {
        assert_eq!(servable_len(b"a\nb\nc", false, false), 4);
        assert_eq!(servable_len(b"a\nb\nc", true, false), 5);
        assert_eq!(
            servable_len(b"abc", false, false),
            0,
            "a line being written"
        );
        assert_eq!(
            servable_len(b"abc", false, true),
            3,
            "a line longer than the window"
        );
        assert_eq!(servable_len(b"", false, false), 0);
    }

    #[test]
    fn a_running_attempts_part_is_read_from_its_start_in_whole_lines() {
        let dir = scratch();
        let t = transcript(&dir, 4, None);
        std::fs::write(&t.path, b"old\none\ntwo\nthr").unwrap();
        let part = read_part(&dir, &t, ask(0)).unwrap();
        assert_eq!(part.bytes, b"one\ntwo\n");
        assert_eq!((part.next_offset, part.size, part.ended), (8, 11, false));
        let next = read_part(&dir, &t, ask(part.next_offset)).unwrap();
        assert!(next.bytes.is_empty(), "the third line is not complete yet");
        assert_eq!(next.next_offset, 8);
        let from = read_part(&dir, &t, ask(4)).unwrap();
        assert_eq!(from.bytes, b"two\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_ended_attempt_is_served_to_its_recorded_end_and_no_further() {
        let dir = scratch();
        let t = transcript(&dir, 4, Some(15));
        std::fs::write(&t.path, b"old\none\ntwo\nthrnext attempt\n").unwrap();
        let part = read_part(&dir, &t, ask(0)).unwrap();
        assert_eq!(part.bytes, b"one\ntwo\nthr", "its last line has no newline");
        assert_eq!((part.next_offset, part.size, part.ended), (11, 11, true));
        assert!(matches!(
            read_part(&dir, &t, ask(12)),
            Err(PartError::PastEnd { size: 11 })
        ));
        let limited = read_part(
            &dir,
            &t,
            PartRequest {
                offset: 0,
                limit: 6,
            },
        )
        .unwrap();
        assert_eq!(limited.bytes, b"one\n", "a window ends at a line's end");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_attempt_that_wrote_nothing_yet_has_an_empty_part() {
        let dir = scratch();
        let part = read_part(&dir, &transcript(&dir, 0, None), ask(0)).unwrap();
        assert_eq!((part.bytes.len(), part.size, part.next_offset), (0, 0, 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_outside_the_sessions_folder_is_served() {
        let dir = scratch();
        let secret = dir.join("secret.txt");
        std::fs::write(&secret, b"token\n").unwrap();
        let outside = AttemptTranscript {
            path: secret.clone(),
            ..transcript(&dir, 0, None)
        };
        assert!(matches!(
            read_part(&dir, &outside, ask(0)),
            Err(PartError::OutsideSessions(_))
        ));
        let dotted = AttemptTranscript {
            path: sessions_dir(&dir).join("../secret.txt"),
            ..transcript(&dir, 0, None)
        };
        assert!(matches!(
            read_part(&dir, &dotted, ask(0)),
            Err(PartError::OutsideSessions(_))
        ));
        let link = sessions_dir(&dir).join("link.jsonl");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let linked = AttemptTranscript {
            path: link,
            ..transcript(&dir, 0, None)
        };
        assert!(matches!(
            read_part(&dir, &linked, ask(0)),
            Err(PartError::OutsideSessions(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_configured_bearer_token_is_authorized() {
        let token = NodeToken::new("t0ken");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(authorized(&with("Bearer t0ken"), &token));
        assert!(authorized(&with("bearer t0ken"), &token));
        assert!(!authorized(&with("Bearer t0ke"), &token));
        assert!(!authorized(&with("Basic t0ken"), &token));
        assert!(!authorized(&with("t0ken"), &token));
        assert!(!authorized(&HeaderMap::new(), &token));
        assert!(!authorized(&with("Bearer "), &NodeToken::default()));
    }
}
