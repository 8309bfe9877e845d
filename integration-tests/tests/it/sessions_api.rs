//! `/api/v1/sessions` with the whole stack, a real supervisor node and the
//! simulated agent: what a session shows after its runs, which session
//! `continue` and `resume` pick, refusals that launch nothing, and the
//! list's filters and pages.

use crate::supervisor_e2e::{LAUNCH_WITHIN, Node};
use crate::support::Reply;
use serde_json::{Value, json};
use stratavore_testkit::wait_until;

async fn get(node: &Node, path: &str) -> Reply {
    let url = format!("http://{}{path}", node.gateway_addr);
    Reply::of(reqwest::Client::new().get(url).send().await.unwrap()).await
}

async fn post(node: &Node, path: &str, body: Value) -> Reply {
    let url = format!("http://{}{path}", node.gateway_addr);
    Reply::of(
        reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Wait until `path` answers 200 with a body `check` accepts; that body.
async fn wait_for(node: &Node, what: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, LAUNCH_WITHIN, || async {
        let r = get(node, path).await;
        Ok((r.status.as_u16() == 200 && check(&r.body)).then_some(r.body))
    })
    .await
    .unwrap()
}

/// A launch accepted (201 within `wait`): the runner's id.
pub(crate) fn launched(r: &Reply) -> String {
    assert_eq!(r.status.as_u16(), 201, "{r:?}");
    r.body["id"].as_str().unwrap().to_owned()
}

/// Launch a new session of `demo` in `web` running `script`.
async fn launch_new(node: &Node, prompt: &str) -> String {
    let body = json!({"project": "web", "profile": "demo", "prompt": prompt});
    launched(&post(node, "/api/v1/runners?wait=20", body).await)
}

/// Wait until the runner ended; assert it exited cleanly. Its view.
async fn ended(node: &Node, runner: &str) -> Value {
    let view = wait_for(
        node,
        "the runner to end",
        &format!("/api/v1/runners/{runner}"),
        |b| ["exited", "failed", "lost", "cancelled"].contains(&b["state"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(view["state"], "exited", "{view}");
    view
}

/// The session `runner` ran, once its runs have all ended in the read model.
async fn session_after(node: &Node, runner: &str, runs: usize) -> Value {
    let view = get(node, &format!("/api/v1/runners/{runner}")).await;
    let id = view.body["session_id"].as_str().unwrap().to_owned();
    wait_for(
        node,
        "the session's runs to end",
        &format!("/api/v1/sessions/{id}"),
        |s| {
            s["runs"].as_array().map(Vec::len) == Some(runs)
                && !s["ended_at"].is_null()
                && !s["transcript"].is_null()
                && s["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["state"] == "exited")
        },
    )
    .await
}

async fn count(node: &Node, sql: &str) -> i64 {
    let pool = node.env.db.admin_pool().await.unwrap();
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Runners and offers the system holds: a refused launch moves neither.
async fn launches(node: &Node) -> (i64, i64, i64) {
    (
        count(node, "SELECT count(*) FROM gateway.runners").await,
        count(node, "SELECT count(*) FROM orchestrator.runners").await,
        count(
            node,
            "SELECT count(*) FROM orchestrator.log WHERE type = 'io.stratavore.runner.offered.v1'",
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sums_a_new_run_and_its_resume_and_describes_its_transcript_file() {
    let node = Node::start().await;
    let first_prompt = r#"sim:{"turns":2,"text":"first answer"} plan the schema"#;
    let first = launch_new(&node, first_prompt).await;
    ended(&node, &first).await;
    let session = session_after(&node, &first, 1).await;
    let id = session["id"].as_str().unwrap().to_owned();
    assert_eq!(session["final_result"], "first answer", "{session}");
    assert_eq!(session["resumable"], true, "{session}");

    let resumed = post(
        &node,
        &format!("/api/v1/sessions/{id}/resume?wait=20"),
        json!({"prompt": r#"sim:{"turns":2,"text":"second answer"} now write it"#}),
    )
    .await;
    let second = launched(&resumed);
    assert_eq!(
        resumed.headers["location"].to_str().unwrap(),
        format!("/api/v1/runners/{second}")
    );
    assert_eq!(resumed.body["session_id"], id.as_str(), "{resumed:?}");
    let second_view = ended(&node, &second).await;
    let s = wait_for(
        &node,
        "the resume's result",
        &format!("/api/v1/sessions/{id}"),
        |s| {
            s["final_result"] == "second answer"
                && !s["ended_at"].is_null()
                && s["runs"].as_array().map(Vec::len) == Some(2)
        },
    )
    .await;

    assert_eq!(s["project"], "web");
    assert_eq!(s["profile"], "demo");
    assert_eq!(s["node"], node.node.as_str());
    assert_eq!(s["path"], format!("{}/web", node.root));
    assert_eq!(
        (s["bound"].clone(), s["in_use"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(s["resumable"], true);
    assert!(
        s["resumed_from"].is_null(),
        "the agent kept the session's id"
    );
    assert_eq!(s["first_prompt"], first_prompt);
    // Two runs of two turns: each run's prompt and two assistant messages.
    assert_eq!(
        (s["message_count"].clone(), s["turn_count"].clone()),
        (json!(6), json!(4))
    );
    // The simulated agent's default usage per turn is 12/34/56/78.
    assert_eq!(
        s["usage"]["tokens"],
        json!({"input": 48, "output": 136, "cache_creation": 224, "cache_read": 312})
    );
    let first_view = get(&node, &format!("/api/v1/runners/{first}")).await.body;
    let runners_cost =
        first_view["cost_usd"].as_f64().unwrap() + second_view["cost_usd"].as_f64().unwrap();
    let cost = s["usage"]["cost_usd"].as_f64().unwrap();
    assert!(
        cost > 0.0 && (cost - runners_cost).abs() < 1e-9,
        "{cost} vs {runners_cost}"
    );

    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs[0]["runner_id"], first.as_str());
    assert_eq!(runs[1]["runner_id"], second.as_str());
    for run in runs {
        assert_eq!(run["state"], "exited", "{run}");
        assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
        assert_eq!(run["attempts"][0]["node"], node.node.as_str());
        assert_eq!(run["usage"]["tokens"]["input"], 24, "{run}");
        assert!(
            !run["started_at"].is_null() && !run["ended_at"].is_null(),
            "{run}"
        );
    }

    // The transcript is the session's file on the node, whole: both runs.
    let path = s["transcript"]["path"].as_str().unwrap();
    assert_eq!(
        std::path::PathBuf::from(path),
        node.transcript(second.parse().unwrap(), 1)
    );
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(s["transcript"]["bytes"], bytes.len());
    let pool = node.env.db.admin_pool().await.unwrap();
    let sha256: String = sqlx::query_scalar("SELECT encode(sha256($1), 'hex')")
        .bind(&bytes)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(s["transcript"]["sha256"], sha256.as_str());

    crate::rebuild::assert_rebuilds_match_live(&node.env).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_takes_the_latest_resumable_session_resume_the_named_one_and_the_list_filters_and_pages()
 {
    let node = Node::start().await;
    let older = launch_new(&node, r#"sim:{"turns":1,"text":"older"} one"#).await;
    ended(&node, &older).await;
    let older_session = session_after(&node, &older, 1).await["id"].clone();
    let newer = launch_new(&node, r#"sim:{"turns":1,"text":"newer"} two"#).await;
    ended(&node, &newer).await;
    let newer_session = session_after(&node, &newer, 1).await["id"].clone();
    assert_ne!(older_session, newer_session);

    let body = json!({"project": "web", "profile": "demo", "mode": "continue",
                      "prompt": r#"sim:{"turns":1,"text":"continued"} three"#});
    let continued = post(&node, "/api/v1/runners?wait=20", body).await;
    let continued_id = launched(&continued);
    assert_eq!(continued.body["session_id"], newer_session, "{continued:?}");
    ended(&node, &continued_id).await;
    session_after(&node, &continued_id, 2).await;

    let older_id = older_session.as_str().unwrap();
    let resumed = post(
        &node,
        &format!("/api/v1/sessions/{older_id}/resume?wait=20"),
        json!({"prompt": r#"sim:{"turns":1,"text":"resumed"} four"#, "max_restarts": 0}),
    )
    .await;
    let resumed_id = launched(&resumed);
    assert_eq!(resumed.body["session_id"], older_session, "{resumed:?}");
    ended(&node, &resumed_id).await;
    let older_view = session_after(&node, &resumed_id, 2).await;
    assert_eq!(older_view["final_result"], "resumed");

    // Most recently active first: the older session was resumed last.
    let all = get(&node, "/api/v1/sessions?project=web").await;
    let ids: Vec<Value> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [older_session.clone(), newer_session.clone()],
        "{all:?}"
    );
    assert!(all.body["next_cursor"].is_null());

    let mut paged = Vec::new();
    let mut path = "/api/v1/sessions?limit=1".to_owned();
    loop {
        let page = get(&node, &path).await;
        assert_eq!(page.status.as_u16(), 200, "{page:?}");
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 1);
        paged.extend(items.iter().map(|s| s["id"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/sessions?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, ids);

    let listed = |path: &'static str| {
        let node = &node;
        async move {
            let r = get(node, path).await;
            assert_eq!(r.status.as_u16(), 200, "{r:?}");
            r.body["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(listed("/api/v1/sessions?resumable=true").await, 2);
    assert_eq!(listed("/api/v1/sessions?resumable=false").await, 0);
    assert_eq!(listed("/api/v1/sessions?project=elsewhere").await, 0);
    assert_eq!(
        listed("/api/v1/sessions?since=2000-01-01T00:00:00Z").await,
        2
    );
    assert_eq!(
        listed("/api/v1/sessions?since=2999-01-01T00:00:00%2B02:00").await,
        0
    );
    let newest_activity = older_view["last_active_at"].as_str().unwrap().to_owned();
    let since = format!(
        "/api/v1/sessions?since={}",
        newest_activity.replace('+', "%2B")
    );
    let r = get(&node, &since).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{r:?}");
    assert_eq!(r.body["items"][0]["id"], older_session);

    for (path, field) in [
        ("/api/v1/sessions?resumable=maybe", "resumable"),
        ("/api/v1/sessions?since=yesterday", "since"),
        ("/api/v1/sessions?project=..%2Fetc", "project"),
        ("/api/v1/sessions?limit=0", "limit"),
    ] {
        let r = get(&node, path).await;
        r.assert_problem(422, "validation-failed");
        assert_eq!(r.fields(), [field], "{r:?}");
    }
    get(&node, "/api/v1/sessions?cursor=garbage")
        .await
        .assert_problem(400, "invalid-request");
    get(&node, "/api/v1/sessions/no-such-session")
        .await
        .assert_problem(404, "not-found");
    post(
        &node,
        "/api/v1/sessions/no-such-session/resume",
        json!({"prompt": "hello"}),
    )
    .await
    .assert_problem(404, "not-found");
    let before = launches(&node).await;
    let empty = post(
        &node,
        &format!("/api/v1/sessions/{older_id}/resume"),
        json!({"prompt": "  "}),
    )
    .await;
    empty.assert_problem(422, "validation-failed");
    assert_eq!(empty.fields(), ["prompt"]);
    post(
        &node,
        &format!("/api/v1/sessions/{older_id}/resume"),
        json!({"prompt": "hi", "mode": "new"}),
    )
    .await
    .assert_problem(422, "validation-failed");
    assert_eq!(
        launches(&node).await,
        before,
        "a refused resume launched nothing"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_of_a_session_in_use_or_of_another_project_is_422_and_launches_nothing() {
    let node = Node::start().await;
    let busy = launch_new(
        &node,
        r#"sim:{"run_for_ms":120000,"turn_delay_ms":300} keep working"#,
    )
    .await;
    let runner = wait_for(
        &node,
        "the runner's session",
        &format!("/api/v1/runners/{busy}"),
        |r| r["state"] == "running" && r["session_id"].is_string(),
    )
    .await;
    let id = runner["session_id"].as_str().unwrap().to_owned();
    let session = wait_for(
        &node,
        "the session to be bound",
        &format!("/api/v1/sessions/{id}"),
        |s| s["bound"] == true,
    )
    .await;
    assert_eq!(
        (session["in_use"].clone(), session["resumable"].clone()),
        (json!(true), json!(false))
    );
    let listed = get(&node, "/api/v1/sessions?resumable=false").await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str(), "{listed:?}");

    let before = launches(&node).await;
    let refused = post(
        &node,
        &format!("/api/v1/sessions/{id}/resume?wait=20"),
        json!({"prompt": "while it runs"}),
    )
    .await;
    refused.assert_problem(422, "validation-failed");
    assert_eq!(refused.fields(), ["session_id"], "{refused:?}");
    let body = json!({"project": "web", "profile": "demo", "mode": "resume",
                      "session_id": id, "prompt": "while it runs"});
    let refused = post(&node, "/api/v1/runners?wait=20", body).await;
    refused.assert_problem(422, "validation-failed");
    assert_eq!(refused.fields(), ["session_id"]);

    // Another project cannot resume it either.
    std::fs::create_dir_all(format!("{}/api", node.root)).unwrap();
    let created = post(
        &node,
        "/api/v1/projects",
        json!({"name": "api", "path": format!("{}/api", node.root)}),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let body = json!({"project": "api", "profile": "demo", "mode": "resume",
                      "session_id": id, "prompt": "not yours"});
    let refused = post(&node, "/api/v1/runners?wait=20", body).await;
    refused.assert_problem(422, "validation-failed");
    assert_eq!(refused.fields(), ["session_id"]);
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("belongs to web"),
        "{refused:?}"
    );
    assert_eq!(launches(&node).await, before, "nothing was launched");

    // Stopped, it is bound and free again: resumable.
    let stopped = post(
        &node,
        &format!("/api/v1/runners/{busy}/stop?wait=20"),
        json!({}),
    )
    .await;
    assert_eq!(stopped.status.as_u16(), 200, "{stopped:?}");
    wait_for(
        &node,
        "the session to be resumable",
        &format!("/api/v1/sessions/{id}"),
        |s| s["resumable"] == true && !s["ended_at"].is_null(),
    )
    .await;
    node.stop().await;
}
