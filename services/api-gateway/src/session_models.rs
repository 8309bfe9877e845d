//! The sessions read model: agent sessions keyed by the id the agent itself
//! reports, folded (in `fold`, with the pure fold of an attempt's row in
//! `attempt_row`) from the orchestrator's runner events and the nodes'
//! process events, one row per attempt, and summed per session (in
//! `refresh`). Whether a session is in use or resumable depends on
//! runners and nodes that change without touching the session, so it is
//! derived here on read, from the runners and nodes read models.
//!
//! Definitions, as the API documents them:
//! - message count: one user message per attempt that started (the prompt
//!   the agent was given), plus every user or assistant text message the
//!   agent printed (`process.text_chunked`; a message the node cut into
//!   several pieces counts once). The final result repeats the last reply
//!   and is not counted.
//! - turn count: the agent's turns (`process.usage_reported`, one per turn:
//!   its messages up to a tool result or the end).
//! - in use: it is the current session of a runner that has not ended.
//! - resumable: bound (the agent saved a first turn), not in use, and the
//!   node holding its files is not lost.

mod attempt_progress;
mod attempt_row;
mod fold;
mod refresh;
mod text_pieces;

pub(crate) use fold::fold;
pub(crate) use refresh::refresh_all;

use crate::runner_models::{Tokens, store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use stratavore_store::StoreError;
use uuid::Uuid;

/// Tokens and cost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Usage {
    /// Tokens, each agent turn counted once.
    pub tokens: Tokens,
    /// Cost in USD: priced per model while running; an attempt's priced
    /// cost is replaced by the agent's own figure once it reports one.
    pub cost_usd: f64,
}

/// The session's transcript file on the node that holds it, as it stood
/// when its latest attempt ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TranscriptView {
    /// The file's path on the node.
    pub path: String,
    /// Its size then.
    pub bytes: i64,
    /// The sha256 of those bytes, lower-case hex.
    pub sha256: String,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionView {
    /// The agent's own session id.
    pub id: String,
    /// Its project (none until the launch that used it is known).
    pub project: Option<String>,
    /// The project's path it ran in.
    pub path: Option<String>,
    /// The agent profile of its latest run (a resume runs with it).
    pub profile: Option<String>,
    /// The node that holds its files: the one its latest attempt ran on.
    pub node: Option<String>,
    /// The agent saved a first turn: only then can it be resumed.
    pub bound: bool,
    /// It is the current session of a runner that has not ended.
    pub in_use: bool,
    /// Bound, not in use, and its node is not lost.
    pub resumable: bool,
    /// The session a resume asked for, when the agent answered under a new
    /// id (a fork) instead of continuing it.
    pub resumed_from: Option<String>,
    /// When its first attempt's agent started.
    pub started_at: Option<DateTime<Utc>>,
    /// Its latest activity: the time of the last event about it.
    pub last_active_at: DateTime<Utc>,
    /// When its latest attempt ended; none while one has not.
    pub ended_at: Option<DateTime<Utc>>,
    /// Prompts given (one per attempt started) plus the user and assistant
    /// text messages the agent printed, each once however it was cut.
    pub message_count: i32,
    /// Agent turns (one usage report each).
    pub turn_count: i32,
    /// Usage summed over every run.
    pub usage: Usage,
    /// Its transcript, once an attempt ended.
    pub transcript: Option<TranscriptView>,
    /// The prompt of its first run.
    pub first_prompt: Option<String>,
    /// The latest result the agent reported.
    pub final_result: Option<String>,
}

/// One attempt of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptView {
    /// Its number within the runner.
    pub attempt: i32,
    /// The node it ran on.
    pub node: Option<String>,
    /// When its agent started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// What it used.
    pub usage: Usage,
}

/// A runner that used the session, with the attempts of it that did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
    /// The runner.
    pub runner_id: Uuid,
    /// Its profile.
    pub profile: Option<String>,
    /// Its state now.
    pub state: Option<String>,
    /// When its first attempt in this session started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt in this session ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Usage of those attempts.
    pub usage: Usage,
    /// Those attempts, in order.
    pub attempts: Vec<AttemptView>,
}

/// A session with its runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
    /// Its runs, oldest first.
    pub runs: Vec<RunView>,
}

/// Runner states after which a runner holds no session.
const ENDED_STATES: &str = "('exited', 'failed', 'lost', 'rejected', 'cancelled')";

/// The columns of [`session_view`], `in_use` and `node_lost` derived.
fn select_sessions() -> String {
    format!(
        "SELECT s.session_id, s.project, s.path, s.profile, s.node, s.bound, s.resumed_from,
             s.started_at, s.last_active_at, s.ended_at, s.message_count, s.turn_count,
             s.input_tokens, s.output_tokens, s.cache_creation_tokens, s.cache_read_tokens,
             s.cost_usd, s.transcript_path, s.transcript_bytes, s.transcript_sha256,
             s.first_prompt, s.final_result,
             EXISTS (SELECT 1 FROM runners r WHERE r.session_id = s.session_id
                     AND r.state NOT IN {ENDED_STATES}) AS in_use,
             EXISTS (SELECT 1 FROM nodes n WHERE n.node = s.node AND n.lost_incarnation IS NOT NULL
                     AND (n.incarnation IS NULL OR n.lost_incarnation >= n.incarnation)) AS node_lost
         FROM sessions s"
    )
}

fn session_view(r: &sqlx::postgres::PgRow) -> SessionView {
    let bound: bool = r.get(5);
    let in_use: bool = r.get(22);
    let node_lost: bool = r.get(23);
    let path: Option<String> = r.get(17);
    SessionView {
        id: r.get(0),
        project: r.get(1),
        path: r.get(2),
        profile: r.get(3),
        node: r.get(4),
        bound,
        in_use,
        resumable: bound && !in_use && !node_lost,
        resumed_from: r.get(6),
        started_at: r.get(7),
        last_active_at: r.get(8),
        ended_at: r.get(9),
        message_count: r.get(10),
        turn_count: r.get(11),
        usage: Usage {
            tokens: Tokens {
                input: r.get(12),
                output: r.get(13),
                cache_creation: r.get(14),
                cache_read: r.get(15),
            },
            cost_usd: r.get(16),
        },
        transcript: path.map(|path| TranscriptView {
            path,
            bytes: r.get::<Option<i64>, _>(18).unwrap_or(0),
            sha256: r.get::<Option<String>, _>(19).unwrap_or_default(),
        }),
        first_prompt: r.get(20),
        final_result: r.get(21),
    }
}

/// One session.
pub async fn get_session(pool: &PgPool, id: &str) -> Result<Option<SessionView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{} WHERE s.session_id = $1",
        select_sessions()
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a session"))?;
    Ok(row.as_ref().map(session_view))
}

/// Filters of the session list.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only this project's.
    pub project: Option<String>,
    /// Only those that are (or are not) resumable.
    pub resumable: Option<bool>,
    /// Only those last active at or after this.
    pub since: Option<DateTime<Utc>>,
}

/// Where a page of the list starts: after this session in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    /// The last listed session's latest activity.
    pub last_active_at: DateTime<Utc>,
    /// And its id.
    pub id: String,
}

/// Sessions, most recently active first (ties by id, descending), after
/// `after`, at most `limit`.
pub async fn list_sessions(
    pool: &PgPool,
    filter: &SessionFilter,
    after: Option<&SessionCursor>,
    limit: i64,
) -> Result<Vec<SessionView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM ({}) v
         WHERE ($1::text IS NULL OR v.project = $1)
           AND ($2::boolean IS NULL OR (v.bound AND NOT v.in_use AND NOT v.node_lost) = $2)
           AND ($3::timestamptz IS NULL OR v.last_active_at >= $3)
           AND ($4::timestamptz IS NULL OR (v.last_active_at, v.session_id) < ($4, $5))
         ORDER BY v.last_active_at DESC, v.session_id DESC LIMIT $6",
        select_sessions()
    )))
    .bind(&filter.project)
    .bind(filter.resumable)
    .bind(filter.since)
    .bind(after.map(|c| c.last_active_at))
    .bind(after.map(|c| c.id.clone()))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing sessions"))?;
    Ok(rows.iter().map(session_view).collect())
}

/// The runs that used session `id`, oldest first.
pub async fn runs_of(pool: &PgPool, id: &str) -> Result<Vec<RunView>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.runner_id, a.attempt, a.node, a.started_at, a.ended_at, a.input_tokens,
             a.output_tokens, a.cache_creation_tokens, a.cache_read_tokens, a.cost_usd,
             sr.profile, r.state
         FROM session_attempts a
         LEFT JOIN session_runners sr ON sr.runner_id = a.runner_id
         LEFT JOIN runners r ON r.runner_id = a.runner_id
         WHERE a.session_id = $1 ORDER BY a.runner_id, a.attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(store("reading a session's runs"))?;
    let mut runs: Vec<RunView> = Vec::new();
    for r in &rows {
        let runner_id: Uuid = r.get(0);
        let attempt = AttemptView {
            attempt: r.get(1),
            node: r.get(2),
            started_at: r.get(3),
            ended_at: r.get(4),
            usage: Usage {
                tokens: Tokens {
                    input: r.get(5),
                    output: r.get(6),
                    cache_creation: r.get(7),
                    cache_read: r.get(8),
                },
                cost_usd: r.get(9),
            },
        };
        match runs.last_mut().filter(|run| run.runner_id == runner_id) {
            Some(run) => run.add(attempt),
            None => runs.push(RunView::first(runner_id, r.get(10), r.get(11), attempt)),
        }
    }
    Ok(runs)
}

impl RunView {
    fn first(
        runner_id: Uuid,
        profile: Option<String>,
        state: Option<String>,
        attempt: AttemptView,
    ) -> Self {
        Self {
            runner_id,
            profile,
            state,
            started_at: attempt.started_at,
            ended_at: attempt.ended_at,
            usage: attempt.usage.clone(),
            attempts: vec![attempt],
        }
    }

    /// Add a later attempt of the same runner.
    fn add(&mut self, attempt: AttemptView) {
        self.started_at = self.started_at.or(attempt.started_at);
        self.ended_at = attempt.ended_at;
        let (sum, more) = (&mut self.usage.tokens, &attempt.usage.tokens);
        sum.input += more.input;
        sum.output += more.output;
        sum.cache_creation += more.cache_creation;
        sum.cache_read += more.cache_read;
        self.usage.cost_usd += attempt.usage.cost_usd;
        self.attempts.push(attempt);
    }
}
