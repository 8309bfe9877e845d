//! The search statement at scale: with 10,000 chunks (synthetic vectors,
//! real words) the plan reads the model's HNSW index and the full-text GIN
//! index, and a filter on a small project still fills `limit`, which only
//! pgvector's iterative index scan makes possible.

use api_gateway::config::SearchSection;
use api_gateway::search::Search;
use api_gateway::search::query::{self, SCAN_SETTINGS, SearchRequest, candidates, search_sql};
use std::time::{Duration, Instant};
use stratavore_testkit::TestEnv;

const CHUNKS: i64 = 10_000;
const PROJECTS: i64 = 5;
const MODEL: &str = "all-MiniLM-L6-v2";

/// 10,000 chunks over 2,000 sessions in 50 projects; a handful mention a
/// rare word.
async fn fill(pool: &sqlx::PgPool) {
    sqlx::query(
        "INSERT INTO session_chunks (text_id, seq, model, session_id, project, role, body, at, embedding)
         SELECT md5(i::text)::uuid, 0, $1, 's' || (i % 2000), 'p' || (i % $3), 'assistant',
                (ARRAY['the migration of the orders table failed halfway',
                       'sidebar layout overlaps the header on phones',
                       'retry the deploy after the canary settles',
                       'billing workers fall behind on the queue',
                       'certificates expired on one load balancer'])[1 + i % 5]
                || CASE WHEN i % 997 = 0 THEN ' see zebrafinchd.conf' ELSE '' END,
                now(),
                (SELECT array_agg(random() - 0.5)::vector FROM generate_series(1, 384) WHERE i > 0)
         FROM generate_series(1, $2) AS i",
    )
    .bind(MODEL)
    .bind(CHUNKS)
    .bind(PROJECTS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE session_chunks")
        .execute(pool)
        .await
        .unwrap();
}

fn random_vector(seed: u64) -> Vec<f32> {
    // A small LCG: the test needs some direction, not a good one.
    let mut x = seed;
    (0..384)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

async fn plan(
    pool: &sqlx::PgPool,
    search: &Search,
    words: &str,
    project: Option<&str>,
    settings: &[&str],
) -> String {
    let mut tx = pool.begin().await.unwrap();
    for setting in settings {
        sqlx::query(sqlx::AssertSqlSafe(*setting))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, COSTS OFF) {}",
        search_sql(search.index())
    )))
    .bind(api_gateway::search::vector_literal(&random_vector(7)))
    .bind(words)
    .bind(MODEL)
    .bind(project)
    .bind(candidates(10))
    .bind(60_i64)
    .bind(10_i64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    lines.join("\n")
}

/// Rows the vector ranking's LIMIT returned, from an `EXPLAIN ANALYZE`.
fn vector_rows(plan: &str) -> i64 {
    let after = &plan[plan.find("CTE vec").expect("a vector ranking")..];
    let rows = &after[after.find("rows=").unwrap() + 5..];
    let end = rows.find(|c: char| !c.is_ascii_digit()).unwrap();
    rows[..end].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ten_thousand_chunks_search_uses_both_indexes_and_a_project_filter_still_fills_the_limit()
 {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool("api-gateway").await.unwrap();
    // The model is not loaded: the statement takes a vector, and these are
    // synthetic.
    let search = Search::minilm(&SearchSection {
        model_dir: stratavore_testkit::embedding_model_dir(),
        ..SearchSection::default()
    });
    search.index().ensure(&pool).await.unwrap();
    fill(&pool).await;

    let index = search.index().name();
    for project in [None, Some("p3")] {
        let plan = plan(&pool, &search, "zebrafinchd.conf", project, SCAN_SETTINGS).await;
        assert!(
            plan.contains(&format!("Index Scan using {index}")),
            "{plan}"
        );
        assert!(
            plan.contains("Bitmap Index Scan on session_chunks_fts"),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan on session_chunks"), "{plan}");
        // The vector ranking got all the candidates it asked for.
        assert_eq!(vector_rows(&plan), candidates(10), "{plan}");
    }
    // The control: without iterative scans the filtered index scan stops
    // at ef_search neighbours and comes back short.
    let plain = [
        "SET LOCAL hnsw.iterative_scan = off",
        "SET LOCAL hnsw.ef_search = 100",
    ];
    let plan = plan(&pool, &search, "zebrafinchd.conf", Some("p3"), &plain).await;
    assert!(vector_rows(&plan) < candidates(10) / 2, "{plan}");

    // p7 holds 2% of the chunks: a plain scan of the first ef_search
    // neighbours would find about two of them.
    let request = SearchRequest {
        q: "orders table migration".into(),
        project: Some("p3".into()),
        limit: 10,
    };
    let hits = query::run(&pool, &search, &request, &random_vector(11))
        .await
        .unwrap();
    assert_eq!(hits.len(), 10, "{hits:#?}");
    assert!(hits.iter().all(|h| h.project.as_deref() == Some("p3")));

    // The rare word finds every session that holds it (one chunk in each),
    // among the first hits. A session is ranked by its best chunk, so one
    // whose other chunk the random vectors put nearer the query than its
    // words' rank shows that chunk instead (a search's vector ranking is
    // over all 10,000 chunks, and these 10 sessions hold 50 of them).
    let request = SearchRequest {
        q: "zebrafinchd.conf".into(),
        project: None,
        limit: 20,
    };
    let hits = query::run(&pool, &search, &request, &random_vector(13))
        .await
        .unwrap();
    let sessions: Vec<String> = (1..=CHUNKS)
        .filter(|i| i % 997 == 0)
        .map(|i| format!("s{}", i % 2000))
        .collect();
    for session in &sessions {
        let hit = hits
            .iter()
            .find(|h| &h.session_id == session)
            .unwrap_or_else(|| panic!("{session} missing: {hits:#?}"));
        match (hit.text_rank, hit.vector_rank) {
            (Some(_), _) => assert!(hit.snippet.contains("<b>zebrafinchd"), "{hit:#?}"),
            // Its words' chunk ranked at most 10th by words (there are
            // 10): this one must have ranked as high by distance.
            (None, Some(rank)) => assert!(rank <= 10, "{hit:#?}"),
            (None, None) => panic!("a hit with neither rank: {hit:#?}"),
        }
    }
    // Each session's other four chunks are among the nearest ten of 10,000
    // with a chance of about 0.4%: most show their words.
    let by_words: Vec<_> = hits.iter().filter(|h| h.text_rank.is_some()).collect();
    assert!(by_words.len() * 2 > sessions.len(), "{hits:#?}");
    assert!(by_words.iter().all(|h| sessions.contains(&h.session_id)));
    pool.close().await;
}

/// A text of about 200 of the model's tokens, different for each `i`.
fn record_text(i: usize) -> String {
    const WORDS: &[&str] = &[
        "deploy",
        "queue",
        "replica",
        "schema",
        "index",
        "cache",
        "worker",
        "latency",
        "timeout",
        "retry",
        "certificate",
        "layout",
        "sidebar",
        "billing",
        "invoice",
        "checkout",
        "session",
        "token",
        "budget",
        "runner",
        "transcript",
        "migration",
        "rollback",
        "canary",
        "dashboard",
        "alert",
        "metric",
        "trace",
        "gateway",
        "broker",
    ];
    let mut x = i as u64 + 1;
    let words: Vec<&str> = (0..150)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            WORDS[(x >> 40) as usize % WORDS.len()]
        })
        .collect();
    format!("Record {i}: {}.", words.join(" "))
}

async fn create_project(stack: &crate::support::Stack, name: &str) -> Duration {
    let started = Instant::now();
    let reply = stack
        .http
        .post(stack.url("/api/v1/projects"))
        .header("Idempotency-Key", name)
        .json(
            &serde_json::json!({"name": name, "path": format!("{}/{name}", crate::support::ROOT)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201, "{:?}", reply.text().await);
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The worker embeds beside the consumer, never in it: while 1,000 texts
/// wait to be embedded, a project's creation still answers 201 as fast as
/// on an idle gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_project_creation_is_not_delayed_while_a_thousand_chunks_are_embedded() {
    let stack = crate::support::Stack::start().await;
    let mut idle = Vec::new();
    for i in 0..5 {
        idle.push(create_project(&stack, &format!("idle-{i}")).await);
    }
    let admin = stack.env.db.admin_pool().await.unwrap();
    let texts: Vec<String> = (0..1000).map(record_text).collect();
    sqlx::query(
        "INSERT INTO gateway.session_texts (text_id, session_id, runner_id, attempt, project, role, body, at)
         SELECT gen_random_uuid(), 'load-' || (n % 100), gen_random_uuid(), 1, 'load', 'assistant', body, now()
         FROM unnest($1::text[]) WITH ORDINALITY AS t(body, n)",
    )
    .bind(&texts)
    .execute(&admin)
    .await
    .unwrap();
    let embedded = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM gateway.session_texts WHERE embedded_at IS NOT NULL",
        )
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    stratavore_testkit::wait_until(
        "the worker to start embedding",
        Duration::from_secs(60),
        || async { Ok((embedded().await > 0).then_some(())) },
    )
    .await
    .unwrap();

    let mut busy = Vec::new();
    for i in 0..5 {
        busy.push(create_project(&stack, &format!("busy-{i}")).await);
    }
    let done = embedded().await;
    assert!(
        done < 1000,
        "the worker finished before the creations: nothing was measured"
    );
    let (idle, busy) = (median(idle), median(busy));
    eprintln!(
        "201 median: idle {idle:?}, while embedding {busy:?} ({done} of 1000 texts embedded)"
    );
    assert!(
        busy <= idle * 3 + Duration::from_millis(150),
        "a creation took {busy:?} while embedding, {idle:?} idle"
    );
    admin.close().await;
    stack.cleanup().await;
}

/// A gateway whose model folder is empty says so: `/readyz` is not ready
/// and names the missing file, a search answers 503 `model-unavailable`,
/// and pending text stays pending rather than being embedded some other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_model_the_gateway_is_not_ready_and_search_refuses_instead_of_falling_back() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = stratavore_runtime::Shutdown::new();
    let mut config = crate::support::gateway_config(&env);
    let empty =
        stratavore_testkit::scratch_dir().join(format!("no-model-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&empty).unwrap();
    config.search.model_dir = empty.clone();
    let gateway = api_gateway::start(config, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let base = format!("http://{}", gateway.health_addr);

    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    let check = &body["checks"]["embeddings"];
    assert_eq!(check["ready"], false, "{body}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.starts_with("all-MiniLM-L6-v2"), "{detail}");
    assert!(detail.contains(&empty.display().to_string()), "{detail}");

    let pool = env.db.admin_pool().await.unwrap();
    sqlx::query(
        "INSERT INTO gateway.session_texts (text_id, session_id, runner_id, attempt, project, role, body, at)
         VALUES (gen_random_uuid(), 's', gen_random_uuid(), 1, 'web', 'assistant', 'some text', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let search = reqwest::get(format!("{base}/api/v1/sessions/search?q=anything"))
        .await
        .unwrap();
    assert_eq!(search.status().as_u16(), 503);
    let problem: serde_json::Value = search.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://stratavore.dev/problems/model-unavailable"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("all-MiniLM-L6-v2"),
        "{problem}"
    );

    // The worker tried, recorded why, and left the text pending.
    stratavore_testkit::wait_until("the worker to try", Duration::from_secs(30), || async {
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM gateway.session_texts")
                .fetch_one(&pool)
                .await?;
        Ok(error)
    })
    .await
    .unwrap();
    let (pending, chunks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gateway.session_texts WHERE embedded_at IS NULL),
                (SELECT count(*) FROM gateway.session_chunks)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((pending, chunks), (1, 0));
    pool.close().await;
    shutdown.trigger();
    shutdown
        .wait_for_tasks(Duration::from_secs(20))
        .await
        .unwrap();
}
