//! Budgets end to end: the API's validation, usage counted once per event
//! into the period of the event's own time, alerts, launches refused while
//! a budget is spent, `stop` budgets stopping their runners (a fake node
//! for the fast cases; a real node with the simulated agent and one
//! injected clock for the rest), and rebuilds that agree.

use crate::launch_saga::{FakeNode, launch, wait_state};
use crate::supervisor_e2e::{Node, NodeOptions};
use crate::support::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use stratavore_events::process::{ProcessEvent, UsageReported};
use stratavore_store::NewEntry;
use stratavore_testkit::{TestEnv, wait_until};
use uuid::Uuid;

/// How long a budget's effect (an alert, a stop) may take to show.
const WITHIN: Duration = Duration::from_secs(60);

async fn stack_with_project() -> Stack {
    let stack = Stack::start().await;
    let created = post(
        &stack,
        "/api/v1/projects",
        json!({"name": "web", "path": format!("{ROOT}/web")}),
        None,
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    stack
}

async fn budget_rows(env: &TestEnv) -> (i64, i64) {
    let pool = env.db.admin_pool().await.unwrap();
    let counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gateway.budgets), (SELECT count(*) FROM orchestrator.budgets)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_api_bad_requests_are_refused_naming_the_field_and_change_nothing() {
    let stack = stack_with_project().await;
    let before = gateway_counts(&stack).await;
    for (body, field) in [
        (
            json!({"scope": "galaxy", "period": "daily", "limit_tokens": 5}),
            "scope",
        ),
        (
            json!({"scope": "global", "period": "yearly", "limit_tokens": 5}),
            "period",
        ),
        (
            json!({"scope": "global", "period": "daily"}),
            "limit_tokens",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_tokens": 0}),
            "limit_tokens",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_usd": -2}),
            "limit_usd",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_tokens": 5, "warn_percent": 0}),
            "warn_percent",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_tokens": 5, "warn_percent": 101}),
            "warn_percent",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_tokens": 5, "action": "explode"}),
            "action",
        ),
        (
            json!({"scope": "global", "target": "web", "period": "daily", "limit_tokens": 5}),
            "target",
        ),
        (
            json!({"scope": "project", "period": "daily", "limit_tokens": 5}),
            "target",
        ),
        (
            json!({"scope": "runner", "target": "nope", "period": "daily", "limit_tokens": 5}),
            "target",
        ),
        (
            json!({"scope": "global", "period": "daily", "limit_tokens": 5, "colour": "red"}),
            "colour",
        ),
    ] {
        let reply = post(&stack, "/api/v1/budgets", body.clone(), None).await;
        reply.assert_problem(422, "validation-failed");
        assert_eq!(reply.fields(), [field], "{body}: {reply:?}");
    }
    assert_eq!(gateway_counts(&stack).await, before, "nothing was recorded");

    // Only the orchestrator knows which projects exist: it refuses, naming
    // the target, and no budget appears.
    let reply = post(
        &stack,
        "/api/v1/budgets",
        json!({"scope": "project", "target": "nowhere", "period": "daily", "limit_tokens": 5}),
        None,
    )
    .await;
    reply.assert_problem(422, "validation-failed");
    assert_eq!(reply.fields(), ["target"]);
    assert_eq!(budget_rows(&stack.env).await, (0, 0));

    let unknown = format!("/api/v1/budgets/{}", Uuid::now_v7());
    get(&stack, &unknown).await.assert_problem(404, "not-found");
    get(&stack, "/api/v1/budgets/not-a-uuid")
        .await
        .assert_problem(404, "not-found");
    patch(&stack, &unknown, json!({"limit_tokens": 9}))
        .await
        .assert_problem(404, "not-found");
    let deleted = Reply::of(stack.http.delete(stack.url(&unknown)).send().await.unwrap()).await;
    deleted.assert_problem(404, "not-found");

    // A real budget: a change that would leave it without a limit, or a
    // field that is not a budget's to change, is refused and changes nothing.
    let created = post(
        &stack,
        "/api/v1/budgets",
        json!({"scope": "project", "target": "web", "period": "daily", "limit_tokens": 500}),
        Some("budget-1"),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/budgets/{id}");
    assert_eq!(created.headers["location"].to_str().unwrap(), path.as_str());
    assert_eq!(created.body["action"], "warn");
    assert_eq!(created.body["warn_percent"], 80);
    assert_eq!(created.body["time_zone"], "UTC");
    let again = post(
        &stack,
        "/api/v1/budgets",
        json!({"scope": "project", "target": "web", "period": "daily", "limit_tokens": 500}),
        Some("budget-1"),
    )
    .await;
    assert_eq!(
        again.body["id"], created.body["id"],
        "same key, same budget"
    );
    let before = gateway_counts(&stack).await;
    let reply = patch(&stack, &path, json!({"limit_tokens": null})).await;
    reply.assert_problem(422, "validation-failed");
    assert_eq!(reply.fields(), ["limit_tokens"]);
    let reply = patch(&stack, &path, json!({"period": "hourly"})).await;
    reply.assert_problem(422, "validation-failed");
    assert_eq!(reply.fields(), ["period"]);
    assert_eq!(gateway_counts(&stack).await, before);
    assert_eq!(get(&stack, &path).await.body["limit"]["tokens"], 500);

    let changed = patch(&stack, &path, json!({"limit_usd": 2.5, "action": "stop"})).await;
    assert_eq!(changed.status.as_u16(), 200, "{changed:?}");
    assert_eq!(changed.body["limit"], json!({"tokens": 500, "usd": 2.5}));
    assert_eq!(changed.body["action"], "stop");
    let listed = get(&stack, "/api/v1/budgets?limit=1").await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str(), "{listed:?}");
    let gone = stack.http.delete(stack.url(&path)).send().await.unwrap();
    assert_eq!(gone.status().as_u16(), 204);
    get(&stack, &path).await.assert_problem(404, "not-found");
    patch(&stack, &path, json!({"limit_tokens": 9}))
        .await
        .assert_problem(404, "not-found");
    stack.cleanup().await;
}

/// A usage report of `tokens` (all input) at `time`, as version `version`
/// of the attempt's process stream.
fn usage_entry(
    runner: Uuid,
    version: u64,
    tokens: u64,
    time: chrono::DateTime<chrono::Utc>,
) -> NewEntry {
    let event = ProcessEvent::UsageReported(UsageReported {
        runner_id: runner,
        attempt: 1,
        turn: u32::try_from(version).unwrap(),
        input_tokens: tokens,
        output_tokens: 0,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        cost_usd: 0.01,
        model: Some("sonnet".into()),
        session_id: "s-1".into(),
    });
    NewEntry::of(
        &event,
        "/stratavore/runner-supervisor/node-1",
        format!("process-{runner}-1"),
        version,
        runner.to_string(),
        time,
    )
}

/// Publish `entry` to the events exchange, as a node's relay would.
async fn publish_event(env: &TestEnv, entry: &NewEntry) {
    let publisher = stratavore_bus::Publisher::open_owning(env.broker.connect().await.unwrap())
        .await
        .unwrap();
    let out = stratavore_bus::OutgoingMessage {
        exchange: env.broker.topology().events_exchange(),
        routing_key: entry.routing_key.clone(),
        message: stratavore_bus::encode_event(entry.envelope.to_cloudevent().unwrap()).unwrap(),
        persistent: true,
    };
    publisher.publish_batch(&[out]).await.unwrap();
}

/// A runner of project `web` placed and running on the fake node.
async fn running_runner(node: &mut FakeNode, env: &TestEnv) -> Uuid {
    let runner = Uuid::now_v7();
    node.send(&launch(runner, "web")).await;
    node.next_offer().await;
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    node.report(runner, 1, node.started(runner, 1)).await;
    wait_state(env, runner, "running").await;
    runner
}

/// Wait until the budget's API view satisfies `done`; return it.
async fn wait_budget(stack: &Stack, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/budgets/{id}");
    wait_until(what, WITHIN, || async {
        let view = get(stack, &path).await.body;
        Ok(done(&view).then_some(view))
    })
    .await
    .unwrap()
}

fn alert_kinds(view: &Value) -> Vec<String> {
    view["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["kind"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_api_the_same_usage_delivered_twice_counts_once_and_a_rebuild_gives_the_same_totals()
 {
    let stack = stack_with_project().await;
    let mut node = FakeNode::register(&stack.env).await;
    let _beats = node.heartbeats(Duration::from_secs(1));
    let created = post(
        &stack,
        "/api/v1/budgets",
        json!({"scope": "global", "period": "monthly", "limit_tokens": 10000, "warn_percent": 50}),
        None,
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let runner = running_runner(&mut node, &stack.env).await;

    let first = usage_entry(runner, 2, 3000, chrono::Utc::now());
    publish_event(&stack.env, &first).await;
    publish_event(&stack.env, &first).await;
    let second = usage_entry(runner, 3, 3000, chrono::Utc::now());
    publish_event(&stack.env, &second).await;
    publish_event(&stack.env, &first).await;
    let view = wait_budget(&stack, &id, "both reports counted", |v| {
        v["used"]["tokens"] == 6000 && alert_kinds(v) == ["threshold_reached"]
    })
    .await;
    assert!(
        (view["used"]["usd"].as_f64().unwrap() - 0.02).abs() < 1e-9,
        "{view}"
    );
    assert_eq!(view["state"], "warning");
    assert_eq!(view["remaining"]["tokens"], 4000);
    assert_eq!(view["overshoot"]["largest_turn"]["tokens"], 3000);
    assert_eq!(view["overshoot"]["active_runners"], 1);
    assert!(
        view["overshoot"]["note"]
            .as_str()
            .unwrap()
            .contains("in flight")
    );

    // The orchestrator counted each report once too, and raised one alert.
    let pool = stack.env.db.admin_pool().await.unwrap();
    let (rows, tokens): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(tokens)::bigint FROM orchestrator.budget_spend")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, tokens), (2, 6000));
    let alerts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orchestrator.log WHERE type = 'io.stratavore.budget.threshold_reached.v1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(alerts, 1);
    pool.close().await;
    crate::rebuild::assert_rebuilds_match_live(&stack.env).await;
    let after = wait_budget(&stack, &id, "the rebuilt budget", |v| {
        v["used"] == view["used"]
    })
    .await;
    assert_eq!(after["alerts"], view["alerts"]);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_api_a_warn_budget_only_warns_refuses_launches_once_spent_and_a_raised_limit_lets_them_in()
 {
    let stack = stack_with_project().await;
    let mut node = FakeNode::register(&stack.env).await;
    let _beats = node.heartbeats(Duration::from_secs(1));
    let created = post(
        &stack,
        "/api/v1/budgets",
        json!({"scope": "project", "target": "web", "period": "monthly",
               "limit_tokens": 1000, "action": "warn"}),
        None,
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let runner = running_runner(&mut node, &stack.env).await;
    publish_event(
        &stack.env,
        &usage_entry(runner, 2, 1200, chrono::Utc::now()),
    )
    .await;
    let view = wait_budget(&stack, &id, "both alerts", |v| alert_kinds(v).len() == 2).await;
    assert_eq!(alert_kinds(&view), ["threshold_reached", "exceeded"]);
    assert_eq!(view["state"], "exceeded");
    assert_eq!(view["alerts"][1]["stopped_runners"], json!([]));
    assert_eq!(view["remaining"]["tokens"], 0);
    // A warn budget leaves its runners running...
    crate::launch_saga::wait_orchestrator_idle(&stack.env).await;
    assert_eq!(
        crate::launch_saga::runner_state(&stack.env, runner)
            .await
            .as_deref(),
        Some("running")
    );
    // ...but no new one starts in its scope while it is spent.
    let refused = post(
        &stack,
        "/api/v1/runners",
        json!({"project": "web", "profile": "demo", "prompt": "more"}),
        None,
    )
    .await;
    refused.assert_problem(409, "conflict");
    assert_eq!(refused.body["reason"], "budget_exceeded");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains(&id), "{detail}");
    let period_end =
        chrono::DateTime::parse_from_rfc3339(view["current_period"]["end"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(detail.contains(&period_end), "{detail} names {period_end}");

    // Raising the limit lets launches in again.
    let raised = patch(
        &stack,
        &format!("/api/v1/budgets/{id}"),
        json!({"limit_tokens": 5000}),
    )
    .await;
    assert_eq!(raised.status.as_u16(), 200, "{raised:?}");
    assert_eq!(raised.body["state"], "ok");
    let accepted = post(
        &stack,
        "/api/v1/runners",
        json!({"project": "web", "profile": "demo", "prompt": "more"}),
        None,
    )
    .await;
    assert_eq!(accepted.status.as_u16(), 201, "{accepted:?}");
    stack.cleanup().await;
}

/// A stack with a real node, every process on one injected clock set so
/// that it reads five minutes past an hour (an hourly budget then has most
/// of its hour ahead); returns the node, the clock file and its offset.
async fn node_on_injected_clock() -> (Node, PathBuf, chrono::Duration) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.local/tmp")
        .join(format!("budgets-clock-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clock-offset");
    let now = chrono::Utc::now();
    let into_hour = chrono::Duration::seconds(i64::from(
        chrono::Timelike::minute(&now) * 60 + chrono::Timelike::second(&now),
    ));
    let offset = chrono::Duration::minutes(5) - into_hour;
    stratavore_runtime::write_offset_file(&file, offset).unwrap();
    let node = Node::start_with(NodeOptions {
        clock_offset_file: Some(file.clone()),
        ..NodeOptions::default()
    })
    .await;
    (node, file, offset)
}

async fn api(node: &Node, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let mut req =
        reqwest::Client::new().request(method, format!("http://{}{path}", node.gateway_addr));
    if let Some(body) = body {
        req = req.json(&body);
    }
    Reply::of(req.send().await.unwrap()).await
}

async fn launch_via_api(node: &Node, prompt: &str) -> Reply {
    api(
        node,
        reqwest::Method::POST,
        "/api/v1/runners?wait=20",
        Some(json!({"project": "web", "profile": "demo", "prompt": prompt})),
    )
    .await
}

/// The runner's terminal event in the orchestrator's log: (type, reason).
async fn runner_end(env: &TestEnv, runner: &str) -> (String, String) {
    let pool = env.db.admin_pool().await.unwrap();
    let row: (String, Value) = sqlx::query_as(
        "SELECT type, data FROM orchestrator.log WHERE stream = $1
         ORDER BY stream_version DESC LIMIT 1",
    )
    .bind(format!("runner-{runner}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (row.0, row.1["reason"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_e2e_a_stop_budget_stops_the_runner_that_crosses_it_and_a_new_period_lets_launches_in()
 {
    let (node, clock_file, offset) = node_on_injected_clock().await;
    let created = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/budgets",
        Some(
            json!({"scope": "project", "target": "web", "period": "hourly",
                    "limit_tokens": 1000, "action": "stop"}),
        ),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let launched = launch_via_api(
        &node,
        r#"sim:{"turns":40,"turn_delay_ms":300,"tokens_per_turn":{"input":100,"output":100}} spend"#,
    )
    .await;
    assert_eq!(launched.status.as_u16(), 201, "{launched:?}");
    let runner = launched.body["id"].as_str().unwrap().to_owned();
    let runner_id = Uuid::parse_str(&runner).unwrap();
    node.wait_runner(runner_id, "exited").await;

    // Stopped gracefully, as a user's stop would, before its 40 turns.
    assert_eq!(
        runner_end(&node.env, &runner).await,
        (
            "io.stratavore.runner.exited.v1".to_owned(),
            "stopped".to_owned()
        )
    );
    let events = node.process_events(runner_id).await;
    let turns = events
        .iter()
        .filter(|(t, _)| t == "io.stratavore.process.usage_reported.v1")
        .count();
    // The simulated agent reports cache tokens beside input and output,
    // so the limit falls after a few turns, well before the last.
    assert!((1..40).contains(&turns), "{turns} turns");
    let path = format!("/api/v1/budgets/{id}");
    let view = api(&node, reqwest::Method::GET, &path, None).await.body;
    assert_eq!(
        alert_kinds(&view),
        ["threshold_reached", "exceeded"],
        "{view}"
    );
    assert_eq!(view["alerts"][1]["stopped_runners"], json!([runner]));
    assert!(view["used"]["tokens"].as_u64().unwrap() >= 1000, "{view}");
    assert_eq!(view["state"], "exceeded");
    // Its session stays resumable.
    let session = api(
        &node,
        reqwest::Method::GET,
        &format!("/api/v1/runners/{runner}"),
        None,
    )
    .await
    .body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool = node.env.db.admin_pool().await.unwrap();
    let bound: bool =
        sqlx::query_scalar("SELECT bound FROM orchestrator.sessions WHERE session_id = $1")
            .bind(&session)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(bound, "the stopped runner's session is resumable");

    let refused = launch_via_api(&node, r#"sim:{"turns":1} more"#).await;
    refused.assert_problem(409, "conflict");
    assert_eq!(refused.body["reason"], "budget_exceeded");
    let detail = refused.body["detail"].as_str().unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(view["current_period"]["end"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(detail.contains(&id) && detail.contains(&end), "{detail}");

    // The next hour has its own allowance.
    stratavore_runtime::write_offset_file(&clock_file, offset + chrono::Duration::hours(1))
        .unwrap();
    wait_until("the gateway to see the next hour", WITHIN, || async {
        let v = api(&node, reqwest::Method::GET, &path, None).await.body;
        Ok(
            (v["state"] == "ok" && v["current_period"]["start"] == view["current_period"]["end"])
                .then_some(()),
        )
    })
    .await
    .unwrap();
    // The orchestrator rereads the same file on its own schedule: a launch
    // it decided a moment before it did is refused, and the next accepted.
    let accepted = wait_until("a launch in the next hour", WITHIN, || async {
        let r = launch_via_api(&node, r#"sim:{"turns":1} next hour"#).await;
        Ok((r.status.as_u16() == 201).then_some(r))
    })
    .await
    .unwrap();
    let next = Uuid::parse_str(accepted.body["id"].as_str().unwrap()).unwrap();
    node.wait_runner(next, "exited").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_e2e_a_usd_budget_stops_the_runner_on_priced_cost_before_its_result() {
    let (node, _clock_file, _offset) = node_on_injected_clock().await;
    // Claude Sonnet's table price: 100k input + 100k output tokens is
    // 0.30 + 1.50 = 1.80 USD a turn, so the limit falls in the second turn.
    let created = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/budgets",
        Some(json!({"scope": "global", "period": "hourly", "limit_usd": 3.0, "action": "stop"})),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let launched = launch_via_api(
        &node,
        r#"sim:{"turns":15,"turn_delay_ms":700,"tokens_per_turn":{"input":100000,"output":100000}} spend"#,
    )
    .await;
    assert_eq!(launched.status.as_u16(), 201, "{launched:?}");
    let runner = launched.body["id"].as_str().unwrap().to_owned();
    let runner_id = Uuid::parse_str(&runner).unwrap();
    node.wait_runner(runner_id, "exited").await;
    assert_eq!(runner_end(&node.env, &runner).await.1, "stopped");

    let events = node.process_events(runner_id).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        !types.contains(&"io.stratavore.process.cost_reconciled.v1"),
        "stopped before the agent's own result: {types:?}"
    );
    let path = format!("/api/v1/budgets/{id}");
    let view = api(&node, reqwest::Method::GET, &path, None).await.body;
    assert_eq!(
        alert_kinds(&view),
        ["threshold_reached", "exceeded"],
        "{view}"
    );
    let exceeded = &view["alerts"][1];
    assert!(exceeded["used_usd"].as_f64().unwrap() >= 3.0, "{view}");
    assert_eq!(exceeded["stopped_runners"], json!([runner]));
    assert!(view["used"]["usd"].as_f64().unwrap() >= 3.0);
    node.stop().await;
}
