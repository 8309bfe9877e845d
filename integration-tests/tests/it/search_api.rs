//! Semantic search over real sessions: the simulated agent runs on a real
//! node, its text goes through the node's log, the relay and RabbitMQ into
//! the gateway, whose worker chunks and embeds it with all-MiniLM-L6-v2;
//! `GET /api/v1/sessions/search` then ranks the sessions.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node, NodeOptions};
use serde_json::{Value, json};
use std::time::Duration;
use stratavore_testkit::wait_until;

const MODEL: &str = "all-MiniLM-L6-v2";

/// A rare token in the middle of a long agent message.
const RARE: &str = "quokkaplexer.rs";

async fn post(node: &Node, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", node.gateway_addr))
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(node: &Node, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", node.gateway_addr))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Launch a demo runner in `project` and return its id.
async fn launch(node: &Node, project: &str, prompt: &str) -> String {
    let (status, body) = post(
        node,
        "/api/v1/runners",
        &json!({"project": project, "profile": "demo", "prompt": prompt, "mode": "new"}),
    )
    .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    body["id"]
        .as_str()
        .or_else(|| body["runner_id"].as_str())
        .or_else(|| body["subject"].as_str())
        .unwrap_or_else(|| panic!("no runner id in {body}"))
        .to_owned()
}

/// The runner's session once it has exited.
async fn session_of_finished(node: &Node, runner: &str) -> String {
    wait_until("the runner to exit", LAUNCH_WITHIN, || async {
        let (_, view) = get(node, &format!("/api/v1/runners/{runner}")).await;
        Ok((view["state"] == "exited").then(|| view["session_id"].as_str().map(str::to_owned)))
    })
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("runner {runner} has no session"))
}

/// Wait until every recorded text is embedded.
async fn wait_embedded(node: &Node, at_least: i64) {
    let pool = node.env.db.admin_pool().await.unwrap();
    wait_until("every text to be embedded", Duration::from_secs(120), || async {
        let (all, pending): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE embedded_at IS NULL) FROM gateway.session_texts",
        )
        .fetch_one(&pool)
        .await?;
        Ok((all >= at_least && pending == 0).then_some(()))
    })
    .await
    .unwrap();
    pool.close().await;
}

async fn search(node: &Node, query: &str) -> Vec<Value> {
    let (status, body) = get(node, query).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL, "the model that answered: {body}");
    body["hits"].as_array().unwrap().clone()
}

fn rank(hits: &[Value], session: &str) -> usize {
    hits.iter()
        .position(|h| h["session_id"] == session)
        .unwrap_or_else(|| panic!("session {session} not among {hits:#?}"))
}

/// About 1,000 words on one incident, with [`RARE`] at the middle, as
/// one assistant message of a recorded Claude Code run.
fn long_transcript(session: &str) -> String {
    let topics = [
        "The deploy pipeline retried the canary twice before the health checks settled.",
        "Operators noticed the queue depth rising on the billing workers after midnight.",
        "A configuration flag for the cache warmer was flipped back to its earlier value.",
        "The on-call engineer paged the storage team about slow replication to the replica.",
        "Dashboards showed latency in the checkout service climbing during the sale.",
        "Load balancer logs pointed at one zone answering with stale certificates.",
        "The incident channel collected timelines, screenshots and the graphs of the night.",
        "Follow-up tasks covered alert thresholds, runbooks and a rehearsal of failover.",
    ];
    let mut sentences: Vec<String> = (0..120)
        .map(|i| format!("{} Step {i} of the review.", topics[i % topics.len()]))
        .collect();
    sentences.insert(
        60,
        format!("The stack trace ended in {RARE} at line 88, inside the retry loop."),
    );
    let text = sentences.join(" ");
    let usage = json!({"input_tokens": 10, "output_tokens": 20,
                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    [
        json!({"type": "system", "subtype": "init", "session_id": session, "model": "claude-sonnet-4-5", "cwd": "."}),
        json!({"type": "assistant", "session_id": session, "message": {
            "id": "msg_long_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}], "usage": usage}}),
        json!({"type": "result", "subtype": "success", "is_error": false, "session_id": session,
               "result": "Wrote up the incident review.", "total_cost_usd": 0.01,
               "num_turns": 1, "duration_ms": 5, "usage": usage}),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_search_ranks_sessions_by_meaning_and_by_exact_words_with_the_local_model() {
    let node = Node::start_with(NodeOptions {
        embed: true,
        ..NodeOptions::default()
    })
    .await;
    std::fs::create_dir_all(format!("{}/ops", node.root)).unwrap();
    let (status, body) = post(
        &node,
        "/api/v1/projects",
        &json!({"name": "ops", "path": format!("{}/ops", node.root)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // `/readyz` names the model before any search.
    let (_, ready) = get(&node, "/readyz").await;
    let detail = ready["checks"]["embeddings"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.starts_with(MODEL), "{ready}");

    let migration = launch(
        &node,
        "web",
        "Roll back the failed Postgres schema migration that left the orders table half altered",
    )
    .await;
    let css = launch(
        &node,
        "web",
        "Fix the CSS layout so the sidebar flexbox stops overlapping the header on narrow screens",
    )
    .await;
    let paraphrase = launch(&node, "web",
        "Revert the database upgrade that broke the customers table and restore its previous version").await;
    let unrelated = launch(
        &node,
        "web",
        "Add a dark mode toggle to the settings page and remember the choice per user",
    )
    .await;
    let long_session = uuid::Uuid::now_v7().to_string();
    std::fs::write(
        format!("{}/ops/long.jsonl", node.root),
        long_transcript(&long_session),
    )
    .unwrap();
    let long = launch(&node, "ops", r#"sim:{"replay":"long.jsonl"}"#).await;

    let mut sessions = Vec::new();
    for runner in [&migration, &css, &paraphrase, &unrelated, &long] {
        sessions.push(session_of_finished(&node, runner).await);
    }
    let [migration, css, paraphrase, unrelated, long] = <[String; 5]>::try_from(sessions).unwrap();
    assert_eq!(long, long_session);
    // Each run: its prompt, its message and its result.
    wait_embedded(&node, 15).await;

    let hits = search(
        &node,
        "/api/v1/sessions/search?q=undo%20a%20schema%20migration&limit=10",
    )
    .await;
    assert!(rank(&hits, &migration) < rank(&hits, &css), "{hits:#?}");
    assert!(rank(&hits, &paraphrase) < rank(&hits, &css), "{hits:#?}");
    assert!(
        rank(&hits, &paraphrase) < rank(&hits, &unrelated),
        "{hits:#?}"
    );
    assert_eq!(hits[0]["session_id"], migration.as_str(), "{hits:#?}");
    // The paraphrase shares no word with the query: meaning alone found it.
    let found = &hits[rank(&hits, &paraphrase)];
    assert!(
        found["text_rank"].is_null() && !found["vector_rank"].is_null(),
        "{found}"
    );
    assert_eq!(
        hits[0]["links"]["resume"],
        format!("/api/v1/sessions/{migration}/resume").as_str()
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.0);

    // An exact rare word from the middle of a long message.
    let hits = search(&node, &format!("/api/v1/sessions/search?q={RARE}")).await;
    assert_eq!(hits[0]["session_id"], long.as_str(), "{hits:#?}");
    assert_eq!(hits[0]["role"], "assistant");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("quokkaplexer"),
        "{hits:#?}"
    );
    assert!(!hits[0]["text_rank"].is_null());

    // The long message was cut into chunks, none beyond the model's size,
    // and together they hold every word of it.
    let pool = node.env.db.admin_pool().await.unwrap();
    let chunks: Vec<String> = sqlx::query_scalar(
        "SELECT c.body FROM gateway.session_chunks c JOIN gateway.session_texts t USING (text_id)
         WHERE t.session_id = $1 AND t.role = 'assistant' ORDER BY c.text_id, c.seq",
    )
    .bind(&long)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    assert_eq!(chunks.iter().filter(|c| c.contains(RARE)).count(), 1);
    let model = stratavore_embeddings::MiniLm::new(stratavore_embeddings::MiniLmConfig {
        model_dir: stratavore_testkit::embedding_model_dir(),
        idle_release: Duration::from_secs(60),
    });
    for chunk in &chunks {
        // 200 of the text's own tokens, plus [CLS] and [SEP].
        assert!(model.sequence_length(chunk).unwrap() <= 202, "{chunk}");
    }
    let words: usize = chunks.iter().map(|c| c.split_whitespace().count()).sum();
    let original = long_transcript(&long);
    let message: Value = serde_json::from_str(original.lines().nth(1).unwrap()).unwrap();
    let text = message["message"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(words, text.split_whitespace().count());

    // A project filter keeps to the project.
    let hits = search(
        &node,
        &format!("/api/v1/sessions/search?q={RARE}&project=web"),
    )
    .await;
    assert!(hits.iter().all(|h| h["project"] == "web"), "{hits:#?}");
    assert!(hits.iter().all(|h| h["session_id"] != long.as_str()));

    // Bad input is refused, naming the parameter.
    for (query, field) in [
        ("", "q"),
        ("?q=%20", "q"),
        ("?q=x&limit=0", "limit"),
        ("?q=x&limit=many", "limit"),
    ] {
        let (status, body) = get(&node, &format!("/api/v1/sessions/search{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }

    // A rebuild records every text again; the worker finds every chunking
    // and vector it needs, computes none, and writes the same chunks.
    let before = chunk_rows(&pool).await;
    let computed = metric(&node, "stratavore_search_vectors_computed_total").await;
    let reused = metric(&node, "stratavore_search_vectors_reused_total").await;
    assert!(computed >= 10.0, "{computed} vectors computed");
    let g = api_gateway::drainer(
        &crate::support::gateway_config(&node.env),
        node.env.db.service_pool("api-gateway").await.unwrap(),
    );
    stratavore_consumer::rebuild::rebuild(&g.pool, &g.log, g.service.as_ref(), "api-gateway")
        .await
        .unwrap();
    wait_embedded(&node, 15).await;
    assert_eq!(chunk_rows(&pool).await, before);
    assert_eq!(
        metric(&node, "stratavore_search_vectors_computed_total").await,
        computed,
        "a rebuild computes no vector"
    );
    assert!(metric(&node, "stratavore_search_vectors_reused_total").await > reused);
    pool.close().await;
    node.stop().await;
}

/// Every chunk: session, project, role, text and vector.
async fn chunk_rows(pool: &sqlx::PgPool) -> Vec<(String, Option<String>, String, String, String)> {
    sqlx::query_as(
        "SELECT session_id, project, role, body, embedding::text FROM gateway.session_chunks
         ORDER BY session_id, role, body",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A counter of the gateway's `/metrics` (0 before its first increment).
async fn metric(node: &Node, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", node.gateway_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
