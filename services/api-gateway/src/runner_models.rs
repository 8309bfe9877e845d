//! The runners read model: folded from the orchestrator's runner events and
//! the nodes' process events, a batch at a time (`fold`, with the pure
//! fold of a row in `row`).

mod fold;
mod row;
mod totals;

pub(crate) use fold::fold;
use serde::Serialize;
use sqlx::{PgPool, Row};
use stratavore_store::StoreError;
use uuid::Uuid;

/// Token counts of a runner, summed over its attempts and turns.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens.
    pub input: i64,
    /// Output tokens.
    pub output: i64,
    /// Tokens written to the prompt cache.
    pub cache_creation: i64,
    /// Tokens read from the prompt cache.
    pub cache_read: i64,
}

/// A runner as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunnerView {
    /// Its id.
    pub id: Uuid,
    /// Its project.
    pub project: String,
    /// Its agent profile.
    pub profile: String,
    /// Its state.
    pub state: String,
    /// The current attempt.
    pub attempt: i32,
    /// The node of the current attempt.
    pub node: Option<String>,
    /// The agent's pid there.
    pub pid: Option<i64>,
    /// The session: the agent's own id as soon as it names it (a Codex
    /// thread id shows while the first attempt runs).
    pub session_id: Option<String>,
    /// The model it was launched with (none: the agent's own default).
    pub model: Option<String>,
    /// The permission setting it was launched with.
    pub permission: Option<String>,
    /// Tools the agent may use without asking.
    pub allowed_tools: Vec<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The agent's last exit code.
    pub exit_code: Option<i32>,
    /// When the current attempt's agent was found stalled (no progress for
    /// its profile's stall timeout); none once it makes progress again.
    pub stalled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How long it had gone without progress then, in milliseconds.
    pub stalled_idle_ms: Option<i64>,
    /// Tokens used.
    pub tokens: Tokens,
    /// Cost in USD (priced per model while running; an attempt's priced
    /// cost is replaced by the agent's own figure once it reports one).
    pub cost_usd: f64,
    /// While it waits (a restart's backoff, a provider's quota window):
    /// when the orchestrator will offer its next attempt.
    pub resume_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was launched.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
}

const COLUMNS: &str = "runner_id, project, profile, state, attempt, node, pid, session_id, last_error, exit_code,
    input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, cost_usd, created_at, updated_at,
    model, permission, allowed_tools, stalled_at, stalled_idle_ms, resume_at";

fn view(r: &sqlx::postgres::PgRow) -> RunnerView {
    RunnerView {
        id: r.get(0),
        project: r.get(1),
        profile: r.get(2),
        state: r.get(3),
        attempt: r.get(4),
        node: r.get(5),
        pid: r.get(6),
        session_id: r.get(7),
        model: r.get(17),
        permission: r.get(18),
        allowed_tools: r.get(19),
        last_error: r.get(8),
        exit_code: r.get(9),
        stalled_at: r.get(20),
        stalled_idle_ms: r.get(21),
        resume_at: r.get(22),
        tokens: Tokens {
            input: r.get(10),
            output: r.get(11),
            cache_creation: r.get(12),
            cache_read: r.get(13),
        },
        cost_usd: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
    }
}

/// One runner.
pub async fn get_runner(pool: &PgPool, id: Uuid) -> Result<Option<RunnerView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runners WHERE runner_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store("reading a runner"))?;
    Ok(row.as_ref().map(view))
}

/// Filters of the runner list.
#[derive(Debug, Clone, Default)]
pub struct RunnerFilter {
    /// Only this project's.
    pub project: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
    /// Only on this node.
    pub node: Option<String>,
}

/// Runners in id order (UUIDv7: launch order) after `after`.
pub async fn list_runners(
    pool: &PgPool,
    filter: &RunnerFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RunnerView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runners
         WHERE ($1::text IS NULL OR project = $1) AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR node = $3) AND ($4::uuid IS NULL OR runner_id > $4)
         ORDER BY runner_id LIMIT $5"
    )))
    .bind(&filter.project)
    .bind(&filter.state)
    .bind(&filter.node)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store("listing runners"))?;
    Ok(rows.iter().map(view).collect())
}
