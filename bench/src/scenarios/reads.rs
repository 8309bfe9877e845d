//! Scenario 3, gateway reads: `GET /api/v1/runners?limit=100` with 100
//! runners in the read model under keep-alive load, against a bare axum
//! handler in this process that reads the same rows from the same Postgres
//! (same role, same pool size) and serialises them. Neither side caches
//! responses; the load generator and its connections are the same.

use crate::load;
use crate::report::{Figure, ScenarioResult, Size, Target};
use crate::stack::{self, InProcess, Services};
use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Shape {
    runners: u32,
    connections: usize,
    /// Each side is loaded this long, in two alternating rounds, so drift
    /// in the machine's other load falls on both.
    span: Duration,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                runners: 100,
                connections: 8,
                span: Duration::from_secs(20),
            },
            Size::Smoke => Self {
                runners: 100,
                connections: 2,
                span: Duration::from_millis(400),
            },
        }
    }
}

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let stack = InProcess::start(Services::default()).await?;
    let outcome = measure(&stack, Shape::of(size), r).await;
    stack.finish(outcome, r).await
}

async fn measure(stack: &InProcess, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    stack::wait_ready(&http, &stack.url("/readyz")).await?;
    let admin = stack.env.db.admin_pool().await?;
    fill_runners(&admin, shape.runners).await?;
    admin.close().await;

    let pool_size = stratavore_runtime::DatabaseSection::default().max_connections;
    let pool = stratavore_store::service_pool(
        &stack.env.db.url(),
        stratavore_store::services::service_db("api-gateway")
            .ok_or_else(|| anyhow::anyhow!("no api-gateway database role"))?,
        None,
        pool_size,
        Duration::from_secs(30),
    )
    .await?;
    let baseline = Baseline::serve(pool, shape.runners).await?;
    let gateway_url = stack.url(&format!("/api/v1/runners?limit={}", shape.runners));

    let half = shape.span / 2;
    let mut gateway = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..2 {
        gateway.push(load::closed_loop(&gateway_url, shape.connections, half).await?);
        bare.push(load::closed_loop(&baseline.url, shape.connections, half).await?);
    }
    baseline.stop().await;
    let rate = |runs: &[load::LoadResult]| -> anyhow::Result<(f64, u64, usize)> {
        let ok: u64 = runs.iter().map(|l| l.ok).sum();
        let errors: u64 = runs.iter().map(|l| l.errors).sum();
        let elapsed: Duration = runs.iter().map(|l| l.elapsed).sum();
        anyhow::ensure!(errors == 0, "{errors} requests failed under load");
        let bytes = runs.iter().map(|l| l.body_bytes).max().unwrap_or(0);
        Ok((
            crate::stats::rate(ok, elapsed).ok_or_else(|| anyhow::anyhow!("no requests timed"))?,
            ok,
            bytes,
        ))
    };
    let (gateway_rate, gateway_ok, gateway_bytes) = rate(&gateway)?;
    let (bare_rate, bare_ok, bare_bytes) = rate(&bare)?;
    r.param("runners_in_read_model", shape.runners)
        .param("keep_alive_connections", shape.connections as u64)
        .param("seconds_per_side", shape.span.as_secs_f64())
        .param("db_pool_connections", pool_size)
        .param("gateway_body_bytes", gateway_bytes as u64)
        .param("baseline_body_bytes", bare_bytes as u64)
        .param("requests", json_pair(gateway_ok, bare_ok))
        .param("load_generator", "reqwest, one client per keep-alive connection, closed loop, in the bench process beside both servers");
    r.note("the load generator, both servers and Postgres share the machine's cores: when the generator is what saturates them, the ratio tends to 100% and says only that the gateway is not the bound");
    r.push(
        Figure::plain("GET /api/v1/runners", gateway_rate, "req/s")
            .against("bare axum handler, same query and pool", bare_rate)
            .target(Target::RatioAtLeast(0.6)),
    );
    Ok(())
}

fn json_pair(gateway: u64, baseline: u64) -> serde_json::Value {
    serde_json::json!({"gateway": gateway, "baseline": baseline})
}

/// `count` runners in the gateway's read model, as its projection writes
/// them (every column the API shows filled in).
async fn fill_runners(admin: &PgPool, count: u32) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gateway.runners (runner_id, project, profile, state, attempt, node, pid,
             session_id, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
             cost_usd, created_at, updated_at, model, permission, allowed_tools)
         SELECT gen_random_uuid(), 'web', 'demo', 'running', 1, 'node-a', 10000 + i,
                gen_random_uuid()::text, 1200 * i, 300 * i, 50, 40, 0.01 * i, now(), now(),
                'claude-sonnet-4-5', 'acceptEdits', ARRAY['Read', 'Edit', 'Bash']
         FROM generate_series(1, $1) AS i",
    )
    .bind(i32::try_from(count)?)
    .execute(admin)
    .await?;
    Ok(())
}

/// A runner as the baseline serialises it: the columns the API shows.
#[derive(Serialize)]
struct BareRunner {
    id: uuid::Uuid,
    project: String,
    profile: String,
    state: String,
    attempt: i32,
    node: Option<String>,
    pid: Option<i64>,
    session_id: Option<String>,
    last_error: Option<String>,
    exit_code: Option<i32>,
    input_tokens: i64,
    output_tokens: i64,
    cache_creation_tokens: i64,
    cache_read_tokens: i64,
    cost_usd: f64,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    model: Option<String>,
    permission: Option<String>,
    allowed_tools: Vec<String>,
    stalled_at: Option<chrono::DateTime<chrono::Utc>>,
    stalled_idle_ms: Option<i64>,
    resume_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone)]
struct BareState {
    pool: PgPool,
    limit: i64,
}

async fn bare_list(State(s): State<BareState>) -> Result<Json<Vec<BareRunner>>, String> {
    let rows = sqlx::query(
        "SELECT runner_id, project, profile, state, attempt, node, pid, session_id, last_error,
                exit_code, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
                cost_usd, created_at, updated_at, model, permission, allowed_tools, stalled_at,
                stalled_idle_ms, resume_at
         FROM runners ORDER BY runner_id LIMIT $1",
    )
    .bind(s.limit)
    .fetch_all(&s.pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(Json(
        rows.iter()
            .map(|r| BareRunner {
                id: r.get(0),
                project: r.get(1),
                profile: r.get(2),
                state: r.get(3),
                attempt: r.get(4),
                node: r.get(5),
                pid: r.get(6),
                session_id: r.get(7),
                last_error: r.get(8),
                exit_code: r.get(9),
                input_tokens: r.get(10),
                output_tokens: r.get(11),
                cache_creation_tokens: r.get(12),
                cache_read_tokens: r.get(13),
                cost_usd: r.get(14),
                created_at: r.get(15),
                updated_at: r.get(16),
                model: r.get(17),
                permission: r.get(18),
                allowed_tools: r.get(19),
                stalled_at: r.get(20),
                stalled_idle_ms: r.get(21),
                resume_at: r.get(22),
            })
            .collect(),
    ))
}

/// The baseline server, stopped by [`Baseline::stop`].
struct Baseline {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pool: PgPool,
}

impl Baseline {
    async fn serve(pool: PgPool, limit: u32) -> anyhow::Result<Self> {
        let app = Router::new()
            .route("/runners", get(bare_list))
            .with_state(BareState {
                pool: pool.clone(),
                limit: i64::from(limit),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/runners", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            url,
            stop,
            task,
            pool,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.pool.close().await;
    }
}
