//! Scenario 6, rebuild: the gateway's projections rebuilt (the operator's
//! `rebuild-projections`: one transaction, the shared rebuild of
//! `libs/consumer`) from a history of a million messages, written straight
//! into the gateway's log and inbox: going through the bus would measure
//! the pipeline again, at a fraction of the speed.
//!
//! The history is what a gateway holds after agents ran ([`history`]):
//! mostly the nodes' `process.usage_reported` and `process.text_chunked`,
//! with the runner, project, budget and node events around them. Its
//! texts were embedded by the gateway's own worker with the real model
//! before the rebuild, as after a live run ([`texts`]); after the rebuild
//! the worker runs again over every text the rebuild recorded as pending,
//! and the figures say how many vectors it computed (none: every chunking
//! and vector is reused) and how many it reused.

mod history;
mod texts;

use crate::report::{Figure, ScenarioResult, Size, Target};
use api_gateway::config::SearchSection;
use api_gateway::search::Search;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratavore_store::Log;
use stratavore_testkit::TestEnv;

/// How big a run is.
struct Shape {
    history: history::Shape,
    /// Distinct replies and prompts the sessions say.
    replies: usize,
    prompts: usize,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                history: history::Shape {
                    events: 1_000_000,
                    projects: 200,
                    nodes: 4,
                    concurrent: 16,
                },
                replies: 200,
                prompts: 40,
            },
            Size::Smoke => Self {
                history: history::Shape {
                    events: 1_000,
                    projects: 3,
                    nodes: 2,
                    concurrent: 4,
                },
                replies: 6,
                prompts: 3,
            },
        }
    }
}

/// Texts one pass of the worker claims after the rebuild: an operator
/// catching up on a whole history raises `search.batch_texts` (16).
const CATCH_UP_BATCH_TEXTS: u32 = 1_000;

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let outcome = measure(&env, Shape::of(size), r).await;
    env.cleanup().await?;
    outcome
}

fn search_section() -> SearchSection {
    SearchSection {
        model_dir: stratavore_testkit::embedding_model_dir(),
        ..SearchSection::default()
    }
}

async fn measure(env: &TestEnv, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let admin = env.db.admin_pool().await?;
    let pool = env.db.service_pool("api-gateway").await?;
    let log = Log::new(api_gateway::SCHEMA, Duration::from_secs(5))
        .ok_or_else(|| anyhow::anyhow!("the gateway's schema is a plain name"))?;

    let texts = texts::Texts::from_docs(shape.replies, shape.prompts)?;
    let embedded = Instant::now();
    let live_search = Arc::new(Search::minilm(&search_section()));
    let live = texts::embed_as_live(&pool, &texts, live_search, search_section()).await?;
    let embed_time = embedded.elapsed();

    let written = Instant::now();
    let history = history::write(&admin, &log, shape.history, &texts).await?;
    // As on a live system, whose autovacuum has visited the tables.
    for table in ["gateway.log", "gateway.inbox"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
            .execute(&admin)
            .await?;
    }
    let write_time = written.elapsed();
    admin.close().await;

    let started = Instant::now();
    let report = stratavore_consumer::rebuild::rebuild(
        &pool,
        &log,
        &api_gateway::service::GatewayService,
        api_gateway::SERVICE,
    )
    .await?;
    let elapsed = started.elapsed();
    let events = (report.own + report.received) as u64;
    anyhow::ensure!(
        events == history.own + history.received,
        "the rebuild replayed {events} messages of {}",
        history.own + history.received
    );
    let (runners, pending): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM runners),
                (SELECT count(*) FROM session_texts WHERE embedded_at IS NULL)",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(
        u64::try_from(runners)? == history.runners,
        "the rebuild left {runners} of {} runners",
        history.runners
    );

    // A gateway that never loaded its model, catching up on what the
    // rebuild recorded as pending.
    let catch_up_search = Arc::new(Search::minilm(&search_section()));
    let caught_up = Instant::now();
    let again = texts::embed_pending(
        &pool,
        Arc::clone(&catch_up_search),
        SearchSection {
            batch_texts: CATCH_UP_BATCH_TEXTS,
            ..search_section()
        },
    )
    .await?;
    let catch_up_time = caught_up.elapsed();
    let model_loaded = catch_up_search.provider().is_loaded();
    pool.close().await;

    let rate = crate::stats::rate(events, elapsed)
        .ok_or_else(|| anyhow::anyhow!("the rebuild took no time"))?;
    r.param("events", events)
        .param("own_log_commands", report.own as u64)
        .param("received_events", report.received as u64)
        .param("received_by_type", serde_json::to_value(&history.by_type)?)
        .param("runners", history.runners)
        .param("projects", shape.history.projects as u64)
        .param("nodes", shape.history.nodes as u64)
        .param("runners_at_once", shape.history.concurrent as u64)
        .param(
            "history",
            "per runner (one attempt, 4-36 turns): runner.launch (own log); \
             project.runner_admitted; runner launch_approved, offered, placed, started, \
             session_bound, exited; process claimed, spawning, started, session_started, \
             per turn text_chunked (assistant) + usage_reported, session_bound, text_chunked \
             (result), cost_reconciled, exited (with its transcript file); every 8th runner \
             resumes a session, every 20th is a Codex run naming its own session, every 16th \
             ends on a reply cut into 8 KiB pieces; per project project.create/created and a \
             budget (one threshold alert); a global budget; node registrations",
        )
        .param("history_written_in_s", write_time.as_secs_f64())
        .param("distinct_texts", texts.distinct().len() as u64)
        .param("embedded_before_rebuild_in_s", embed_time.as_secs_f64())
        .param("vectors_computed_before_rebuild", live.computed as u64)
        .param("texts_pending_after_rebuild", u64::try_from(pending)?)
        .param("catch_up_batch_texts", u64::from(CATCH_UP_BATCH_TEXTS))
        .param("model_loaded_by_catch_up", model_loaded);
    r.push(Figure::plain("rebuild", rate, "events/s").target(Target::AtLeast(20_000.0)));
    r.push(Figure::plain(
        "rebuild wall time",
        elapsed.as_secs_f64(),
        "s",
    ));
    r.push(Figure::plain(
        "vectors computed after the rebuild",
        again.computed as f64,
        "vectors",
    ));
    r.push(Figure::plain(
        "vectors reused after the rebuild",
        again.reused as f64,
        "vectors",
    ));
    r.push(Figure::plain(
        "re-embedding after the rebuild",
        again.texts as f64 / catch_up_time.as_secs_f64().max(1e-9),
        "texts/s",
    ));
    if again.computed > 0 || model_loaded {
        r.note(format!(
            "the worker computed {} vectors after the rebuild (model loaded: {model_loaded}): \
             the reuse of text_chunking and embedding_cache failed",
            again.computed
        ));
    }
    Ok(())
}
