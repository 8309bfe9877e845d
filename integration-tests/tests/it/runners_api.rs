//! Runners through the REST API, with a fake node playing the supervisor.

use crate::launch_saga::{FakeNode, exited, started, usage};
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use stratavore_events::process::{
    ProcessCostReconciled, ProcessErrorReported, ProcessEvent, ProcessSessionStarted,
    ProcessStalled, TextChunked, UsageReported,
};
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
    // Nothing chosen: the demo profile's defaults (Claude Code's).
    assert_eq!(r.body["model"], json!(null));
    assert_eq!(r.body["permission"], "acceptEdits");
    assert_eq!(
        r.body["allowed_tools"],
        json!([
            "Read",
            "Edit",
            "MultiEdit",
            "Write",
            "Glob",
            "Grep",
            "LS",
            "Bash"
        ])
    );
    assert_eq!(r.body["stalled_at"], json!(null));
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
                session_id: String::new(),
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
        // Choices outside the profile's allowlists, refused by the
        // orchestrator naming the field.
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "model": "claude-sonnet-4"}),
            422,
            "model",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x",
                   "permission": "bypassPermissions"}),
            422,
            "permission",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x",
                   "allowed_tools": ["Read", "Shell"]}),
            422,
            "allowed_tools",
        ),
        (
            json!({"project": "web", "profile": "generic", "prompt": "x", "mode": "continue"}),
            422,
            "mode",
        ),
        // Tools of the wrong type, refused by the gateway.
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "allowed_tools": "Read"}),
            422,
            "allowed_tools",
        ),
        (
            json!({"project": "web", "profile": "demo", "prompt": "x", "allowed_tools": ["Read", 5]}),
            422,
            "allowed_tools[1]",
        ),
    ];
    for (body, status, field) in cases {
        let r = post(&stack, "/api/v1/runners", body.clone(), None).await;
        r.assert_problem(status, "validation-failed");
        assert!(r.fields().iter().any(|f| f == field), "{body}: {r:?}");
    }
    let listed = get(&stack, "/api/v1/runners").await;
    assert_eq!(
        listed.body["items"],
        json!([]),
        "nothing was launched: {listed:?}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_shows_its_choices_and_the_agents_session_errors_stalls_and_reconciled_cost() {
    let stack = Stack::start().await;
    project(&stack).await;
    let mut node = FakeNode::register(&stack.env).await;
    let body = json!({"project": "web", "profile": "demo", "prompt": "write the tests",
        "model": "sonnet", "permission": "plan", "allowed_tools": ["Read", "Grep", "Read"]});
    let r = post(&stack, "/api/v1/runners", body, None).await;
    assert_eq!(r.status.as_u16(), 201, "{r:?}");
    assert_eq!(r.body["model"], "sonnet");
    assert_eq!(r.body["permission"], "plan");
    assert_eq!(r.body["allowed_tools"], json!(["Read", "Grep"]));
    let id = r.body["id"].as_str().unwrap().to_owned();
    let runner = Uuid::parse_str(&id).unwrap();
    let (_, offer) = node.next_offer().await;
    assert_eq!(
        (
            &offer["model"],
            &offer["permission"],
            &offer["allowed_tools"]
        ),
        (&json!("sonnet"), &json!("plan"), &json!(["Read", "Grep"]))
    );
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    node.report(runner, 1, started(runner, 1)).await;

    // The agent names its own session (a Codex thread id) before any turn.
    node.report(
        runner,
        1,
        ProcessEvent::SessionStarted(ProcessSessionStarted {
            runner_id: runner,
            attempt: 1,
            session_id: "thread-7".into(),
            model: Some("sonnet".into()),
        }),
    )
    .await;
    wait_runner(&stack, &id, |b| b["session_id"] == "thread-7").await;
    node.report(
        runner,
        1,
        ProcessEvent::ErrorReported(ProcessErrorReported {
            runner_id: runner,
            attempt: 1,
            message: "connection reset; retrying".into(),
        }),
    )
    .await;
    wait_runner(&stack, &id, |b| {
        b["last_error"] == "connection reset; retrying"
    })
    .await;

    let stalled = |idle_ms| {
        ProcessEvent::Stalled(ProcessStalled {
            runner_id: runner,
            attempt: 1,
            idle_ms,
            policy: "flag".into(),
        })
    };
    node.report(runner, 1, stalled(1_800_000)).await;
    let flagged = wait_runner(&stack, &id, |b| !b["stalled_at"].is_null()).await;
    assert_eq!(flagged["stalled_idle_ms"], 1_800_000);
    // Assistant text is progress: the flag goes.
    node.report(
        runner,
        1,
        ProcessEvent::TextChunked(TextChunked {
            runner_id: runner,
            attempt: 1,
            session_id: "thread-7".into(),
            role: "assistant".into(),
            text: "back at it".into(),
        }),
    )
    .await;
    let cleared = wait_runner(&stack, &id, |b| b["stalled_at"].is_null()).await;
    assert_eq!(cleared["stalled_idle_ms"], json!(null));
    // So is a turn's usage; its priced cost is then replaced by the
    // agent's own figure.
    node.report(runner, 1, stalled(1_900_000)).await;
    wait_runner(&stack, &id, |b| b["stalled_idle_ms"] == 1_900_000).await;
    let mut turn = usage(runner, 1, 1, "thread-7", 100);
    if let ProcessEvent::UsageReported(u) = &mut turn {
        u.cost_usd = 0.25;
    }
    node.report(runner, 1, turn).await;
    let used = wait_runner(&stack, &id, |b| b["stalled_at"].is_null()).await;
    assert_eq!(used["cost_usd"], 0.25);
    assert_eq!(used["tokens"]["input"], 100);
    node.report(
        runner,
        1,
        ProcessEvent::CostReconciled(ProcessCostReconciled {
            runner_id: runner,
            attempt: 1,
            priced_cost_usd: 0.25,
            reported_cost_usd: 0.5,
        }),
    )
    .await;
    wait_runner(&stack, &id, |b| b["cost_usd"] == 0.5).await;
    node.report(runner, 1, exited(runner, 1, "succeeded", 0))
        .await;
    let done = wait_runner(&stack, &id, |b| b["state"] == "exited").await;
    assert_eq!(done["cost_usd"], 0.5, "the reconciliation counted once");
    assert_eq!(done["allowed_tools"], json!(["Read", "Grep"]));
    stack.cleanup().await;
}
