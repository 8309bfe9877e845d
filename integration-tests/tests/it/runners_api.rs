//! Runners through the REST API, with a fake node playing the supervisor.

use crate::launch_saga::{FakeNode, exited, started};
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use stratavore_events::process::{ProcessEvent, UsageReported};
use stratavore_testkit::wait_until;
use uuid::Uuid;

async fn project(stack: &Stack) {
    let r = post(
        stack,
        "/api/v1/projects",
        json!({"name": "web", "path": format!("{ROOT}/web")}),
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 201, "{r:?}");
}

fn launch_body() -> serde_json::Value {
    json!({"project": "web", "profile": "demo", "prompt": "write the tests"})
}

async fn wait_runner(
    stack: &Stack,
    id: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_until(
        "the runner's read model",
        Duration::from_secs(20),
        || async {
            let r = get(stack, &format!("/api/v1/runners/{id}")).await;
            Ok((r.status.as_u16() == 200 && check(&r.body)).then_some(r.body))
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_answers_201_with_the_runner_whose_state_tokens_and_exit_follow_the_nodes_facts() {
    let stack = Stack::start().await;
    project(&stack).await;
    let mut node = FakeNode::register(&stack.env).await;
    let r = post(&stack, "/api/v1/runners", launch_body(), Some("launch-1")).await;
    assert_eq!(r.status.as_u16(), 201, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/api/v1/runners/{id}")
    );
    assert!(
        ["requested", "starting"].contains(&r.body["state"].as_str().unwrap()),
        "{r:?}"
    );
    let again = post(&stack, "/api/v1/runners", launch_body(), Some("launch-1")).await;
    assert_eq!(
        again.body["id"],
        id.as_str(),
        "the same key returns the same runner"
    );

    let runner = Uuid::parse_str(&id).unwrap();
    node.next_offer().await;
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    node.report(runner, 1, started(runner, 1)).await;
    let running = wait_runner(&stack, &id, |b| b["state"] == "running" && b["pid"] == 4242).await;
    assert_eq!(running["node"], "node-1");
    for turn in 1..=2 {
        node.report(
            runner,
            1,
            ProcessEvent::UsageReported(UsageReported {
                runner_id: runner,
                attempt: 1,
                turn,
                input_tokens: 100,
                output_tokens: 50,
                cache_creation_input_tokens: 10,
                cache_read_input_tokens: 1000,
                cost_usd: 0.25,
                model: Some("claude-sonnet-4".into()),
            }),
        )
        .await;
    }
    node.report(runner, 1, exited(runner, 1, "succeeded", 0))
        .await;
    let done = wait_runner(&stack, &id, |b| b["state"] == "exited").await;
    assert_eq!(
        done["tokens"],
        json!({"input": 200, "output": 100, "cache_creation": 20, "cache_read": 2000})
    );
    assert_eq!(done["cost_usd"], 0.5);
    assert_eq!(done["exit_code"], 0);
    // The orchestrator counts what it decided and what was spent.
    let metrics = stratavore_runtime::prometheus_handle().render();
    let line = |name: &str, needle: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        line("stratavore_tokens_total", "kind=\"input\""),
        Some(200.0),
        "{metrics}"
    );
    assert_eq!(
        line("stratavore_cost_micro_usd_total", "project=\"web\""),
        Some(500_000.0)
    );
    assert_eq!(
        line("stratavore_launches_total", "outcome=\"approved\""),
        Some(1.0)
    );
    wait_until("the runners gauge", Duration::from_secs(15), || async {
        let text = stratavore_runtime::prometheus_handle().render();
        Ok(text
            .lines()
            .any(|l| l == "stratavore_runners{state=\"exited\"} 1")
            .then_some(()))
    })
    .await
    .unwrap();
    // An ended runner refuses a pause.
    post(
        &stack,
        &format!("/api/v1/runners/{id}/pause"),
        json!({}),
        None,
    )
    .await
    .assert_problem(409, "conflict");

    let listed = get(&stack, "/api/v1/runners?project=web&state=exited").await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{listed:?}"
    );
    let none = get(&stack, "/api/v1/runners?state=running").await;
    assert_eq!(none.body["items"].as_array().unwrap().len(), 0);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_launches_and_controls_are_refused_with_problems_naming_the_field_or_reason() {
    let stack = Stack::start().await;
    project(&stack).await;
    let cases = [
        (
            json!({"project": "nope", "profile": "demo", "prompt": "x"}),
            422,
            "project",
        ),
        (
            json!({"project": "web", "profile": "nope", "prompt": "x"}),
            422,
            "profile",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "  "}),
            422,
            "prompt",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "mode": "sideways"}),
            422,
            "mode",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "mode": "resume"}),
            422,
            "session_id",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "colour": 1}),
            422,
            "colour",
        ),
        (
            json!({"project": "Bad", "profile": "demo", "prompt": "x"}),
            422,
            "project",
        ),
    ];
    for (body, status, field) in cases {
        let r = post(&stack, "/api/v1/runners", body.clone(), None).await;
        r.assert_problem(status, "validation-failed");
        assert!(r.fields().iter().any(|f| f == field), "{body}: {r:?}");
    }
    get(&stack, &format!("/api/v1/runners/{}", Uuid::now_v7()))
        .await
        .assert_problem(404, "not-found");
    get(&stack, "/api/v1/runners/not-an-id")
        .await
        .assert_problem(404, "not-found");
    post(
        &stack,
        &format!("/api/v1/runners/{}/stop", Uuid::now_v7()),
        json!({}),
        None,
    )
    .await
    .assert_problem(404, "not-found");
    get(&stack, "/api/v1/runners?state=asleep")
        .await
        .assert_problem(422, "validation-failed");

    // A runner that is not running yet cannot be paused.
    let r = post(&stack, "/api/v1/runners", launch_body(), None).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let refused = post(
        &stack,
        &format!("/api/v1/runners/{id}/pause"),
        json!({}),
        None,
    )
    .await;
    refused.assert_problem(409, "conflict");
    assert_eq!(refused.body["reason"], "illegal_transition");
    // Stopping it before any node claimed it cancels it.
    let stopped = post(
        &stack,
        &format!("/api/v1/runners/{id}/stop"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(stopped.status.as_u16(), 200, "{stopped:?}");
    wait_runner(&stack, &id, |b| b["state"] == "cancelled").await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_quota_is_patchable_and_a_launch_beyond_it_is_refused_409() {
    let stack = Stack::start().await;
    project(&stack).await;
    let patched = patch(
        &stack,
        "/api/v1/projects/web",
        json!({"max_concurrent_runners": 1}),
    )
    .await;
    assert_eq!(patched.body["max_concurrent_runners"], 1, "{patched:?}");
    patch(
        &stack,
        "/api/v1/projects/web",
        json!({"max_concurrent_runners": 0}),
    )
    .await
    .assert_problem(422, "validation-failed");
    let first = post(&stack, "/api/v1/runners", launch_body(), None).await;
    assert_eq!(first.status.as_u16(), 201, "{first:?}");
    let second = post(&stack, "/api/v1/runners", launch_body(), None).await;
    second.assert_problem(409, "conflict");
    assert_eq!(second.body["reason"], "quota_reached");
    // Ending the first frees the slot.
    let id = first.body["id"].as_str().unwrap();
    post(
        &stack,
        &format!("/api/v1/runners/{id}/stop"),
        json!({}),
        None,
    )
    .await;
    wait_runner(&stack, id, |b| b["state"] == "cancelled").await;
    let third = post(&stack, "/api/v1/runners", launch_body(), None).await;
    assert_eq!(third.status.as_u16(), 201, "{third:?}");
    stack.cleanup().await;
}
