//! Scenario 5, search: the time to embed a chunk with the provisioned
//! all-MiniLM-L6-v2 over 100 real chunks (this repository's own docs, cut
//! by the model's tokenizer as the gateway cuts sessions' text), and the
//! latency of the gateway's own search statement (its SQL, its scan
//! settings, its `run`) at two corpus sizes of synthetic unit vectors with
//! real text, with the query plan of each.

use crate::report::{Figure, ScenarioResult, Size};
use crate::stats;
use api_gateway::config::SearchSection;
use api_gateway::search::Search;
use api_gateway::search::query::{self, SCAN_SETTINGS, SearchRequest, candidates, search_sql};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use stratavore_testkit::TestEnv;

#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Real chunks embedded.
    chunks: usize,
    /// Chunks per `embed` call.
    batch: usize,
    /// The corpus sizes searched.
    corpus: [i64; 2],
    /// Searches timed at each size.
    queries: usize,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                chunks: 100,
                batch: 16,
                corpus: [10_000, 100_000],
                queries: 200,
            },
            Size::Smoke => Self {
                chunks: 8,
                batch: 4,
                corpus: [200, 400],
                queries: 5,
            },
        }
    }
}

/// Queries a user might type about this code base.
const QUERIES: &[&str] = &[
    "why did the relay publish the batch again",
    "runner stuck waiting for quota",
    "rebuild projections after a crash",
    "dead letter replay by an operator",
    "supervisor node lost its lease",
    "budget exhausted for the project this month",
    "search sessions by meaning and by words",
    "the consumer inbox drains in version order",
];

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let pool = env.db.service_pool("api-gateway").await?;
    let outcome = measure(&pool, Shape::of(size), r).await;
    pool.close().await;
    env.cleanup().await?;
    outcome
}

async fn measure(pool: &PgPool, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let search = std::sync::Arc::new(Search::minilm(&SearchSection {
        model_dir: stratavore_testkit::embedding_model_dir(),
        ..SearchSection::default()
    }));
    let chunks = real_chunks(&search, shape.chunks).await?;
    let per_chunk = embed_time(&search, &chunks, shape.batch).await?;
    let queries = embed_queries(&search).await?;
    r.param("real_chunks", chunks.len() as u64)
        .param("chunks_per_embed_call", shape.batch as u64)
        .param("chunk_tokens", SearchSection::default().chunk_tokens as u64)
        .param(
            "chunk_source",
            "docs/architecture.md and README.md of this repository",
        )
        .param("queries_per_size", shape.queries as u64)
        .param("result_limit", 10)
        .param("scan_settings", SCAN_SETTINGS.join("; "));
    r.push(Figure::plain(
        "embedding time per chunk",
        per_chunk.as_secs_f64() * 1e3,
        "ms",
    ));

    let index = search.index().name();
    let mut filled = 0;
    for target in shape.corpus {
        // Bulk-load without the index, then build it: far faster than
        // growing an HNSW graph row by row.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
            .execute(pool)
            .await?;
        fill(pool, &chunks, filled, target).await?;
        filled = target;
        let built = Instant::now();
        search.index().ensure(pool).await?;
        sqlx::query("ANALYZE session_chunks").execute(pool).await?;
        let build = built.elapsed();
        let mut times = Vec::with_capacity(shape.queries);
        for i in 0..shape.queries {
            let (q, vector) = &queries[i % queries.len()];
            let request = SearchRequest {
                q: (*q).to_owned(),
                project: None,
                limit: 10,
            };
            let started = Instant::now();
            let hits = query::run(pool, &search, &request, vector).await?;
            times.push(started.elapsed());
            anyhow::ensure!(
                !hits.is_empty(),
                "a search of {target} chunks found nothing"
            );
        }
        let s = stats::summarise(&times).ok_or_else(|| anyhow::anyhow!("no searches timed"))?;
        let [p50, p99] = Figure::percentiles(&s, |p| format!("search {p} at {target} chunks"));
        r.push(p50).push(p99);
        r.note(format!(
            "HNSW index over {target} chunks built in {:.1} s; plan at {target} chunks:\n{}",
            build.as_secs_f64(),
            plan(pool, &search, &queries[0]).await?
        ));
    }
    Ok(())
}

/// The first `count` chunks of this repository's docs, cut by the model.
async fn real_chunks(search: &std::sync::Arc<Search>, count: usize) -> anyhow::Result<Vec<String>> {
    let root = stratavore_testkit::paths::repo_root();
    let mut text = String::new();
    for doc in ["docs/architecture.md", "README.md"] {
        text.push_str(&std::fs::read_to_string(root.join(doc))?);
        text.push('\n');
    }
    let search = std::sync::Arc::clone(search);
    let tokens = SearchSection::default().chunk_tokens;
    let chunks =
        tokio::task::spawn_blocking(move || search.provider().chunk(&text, tokens)).await??;
    let chunks: Vec<String> = chunks.into_iter().take(count).map(|c| c.text).collect();
    anyhow::ensure!(
        chunks.len() == count,
        "the docs gave only {} chunks",
        chunks.len()
    );
    Ok(chunks)
}

/// Mean time per chunk, the model loaded first (loading is not embedding).
async fn embed_time(
    search: &std::sync::Arc<Search>,
    chunks: &[String],
    batch: usize,
) -> anyhow::Result<Duration> {
    let search = std::sync::Arc::clone(search);
    let chunks = chunks.to_vec();
    tokio::task::spawn_blocking(move || {
        search.provider().embed(&["warm up"])?;
        let started = Instant::now();
        for group in chunks.chunks(batch) {
            let refs: Vec<&str> = group.iter().map(String::as_str).collect();
            search.provider().embed(&refs)?;
        }
        anyhow::Ok(started.elapsed() / u32::try_from(chunks.len())?)
    })
    .await?
}

async fn embed_queries(
    search: &std::sync::Arc<Search>,
) -> anyhow::Result<Vec<(&'static str, Vec<f32>)>> {
    let search = std::sync::Arc::clone(search);
    tokio::task::spawn_blocking(move || {
        let vectors = search.provider().embed(QUERIES)?;
        anyhow::Ok(QUERIES.iter().copied().zip(vectors).collect())
    })
    .await?
}

/// Chunks `from + 1 ..= to`: random unit vectors, the real chunks' text in
/// turn, five chunks per session, twenty projects.
async fn fill(pool: &PgPool, bodies: &[String], from: i64, to: i64) -> anyhow::Result<()> {
    let model = stratavore_embeddings::MINILM_MODEL;
    sqlx::query(
        "INSERT INTO session_chunks (text_id, seq, model, session_id, project, role, body, at, embedding)
         SELECT md5(i::text)::uuid, 0, $1, 's' || (i / 5), 'p' || (i % 20), 'assistant',
                ($2::text[])[1 + i % cardinality($2::text[])], now() - make_interval(secs => i),
                l2_normalize((SELECT array_agg(random() - 0.5)::vector
                              FROM generate_series(1, 384) WHERE i > 0))
         FROM generate_series($3 + 1, $4) AS i",
    )
    .bind(model)
    .bind(bodies)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await?;
    Ok(())
}

async fn plan(pool: &PgPool, search: &Search, query: &(&str, Vec<f32>)) -> anyhow::Result<String> {
    let mut tx = pool.begin().await?;
    for setting in SCAN_SETTINGS {
        sqlx::query(*setting).execute(&mut *tx).await?;
    }
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {}",
        search_sql(search.index())
    )))
    .bind(api_gateway::search::vector_literal(&query.1))
    .bind(query.0)
    .bind(search.model())
    .bind(None::<String>)
    .bind(candidates(10))
    .bind(i64::from(search.rrf_k()))
    .bind(10_i64)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(shorten_vectors(&lines.join("\n")))
}

/// The plan with each vector literal (`'[0.1,-0.2,…]'`, 384 numbers) cut to
/// its first number, so the recorded plan stays readable.
fn shorten_vectors(plan: &str) -> String {
    let mut out = String::with_capacity(plan.len());
    let mut rest = plan;
    while let Some(start) = rest.find("'[") {
        let Some(len) = rest[start..].find("]'") else {
            break;
        };
        let literal = &rest[start + 2..start + len];
        let first = literal.split(',').next().unwrap_or("");
        out.push_str(&rest[..start]);
        out.push_str(&format!("'[{first},…]'"));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_literals_in_a_plan_are_cut_to_their_first_number() {
        let plan = "Sort Key: (e <=> '[0.5,-0.25,0.125]'::vector)\n  Filter: (model = 'm'::text)";
        assert_eq!(
            shorten_vectors(plan),
            "Sort Key: (e <=> '[0.5,…]'::vector)\n  Filter: (model = 'm'::text)"
        );
        assert_eq!(shorten_vectors("no vectors"), "no vectors");
    }
}
