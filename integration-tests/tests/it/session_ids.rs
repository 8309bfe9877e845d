//! Sessions keyed by the agent's own id, with a fake node playing the
//! supervisor so the test can make the agent name any session it likes.

use crate::launch_saga::{FakeNode, exited, started, usage};
use crate::sessions_api::launched;
use crate::supervisor_e2e::LAUNCH_WITHIN;
use crate::support::{ROOT, Stack, get, post};
use serde_json::{Value, json};
use stratavore_events::process::{
    ProcessEvent, ProcessSessionBound, ProcessSessionStarted, TextChunked,
};
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// An agent (Codex, say) that names its own session: the launch's id leaves
/// no session behind, and a resume the agent answers under yet another id
/// records the session it came from. A fake node plays the supervisor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_keyed_by_the_agents_own_id_and_a_forked_resume_records_its_origin() {
    let stack = Stack::start().await;
    let created = post(
        &stack,
        "/api/v1/projects",
        json!({"name": "web", "path": format!("{ROOT}/web")}),
        None,
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let mut node = FakeNode::register(&stack.env).await;
    let agent_names = |runner: Uuid, session: &str| {
        [
            ProcessEvent::SessionStarted(ProcessSessionStarted {
                runner_id: runner,
                attempt: 1,
                session_id: session.to_owned(),
                model: None,
            }),
            ProcessEvent::SessionBound(ProcessSessionBound {
                runner_id: runner,
                attempt: 1,
                session_id: session.to_owned(),
            }),
        ]
    };
    let text = |runner: Uuid, session: &str, role: &str, text: &str| {
        ProcessEvent::TextChunked(TextChunked {
            runner_id: runner,
            attempt: 1,
            session_id: session.to_owned(),
            role: role.to_owned(),
            text: text.to_owned(),
        })
    };
    let wait_exited = |id: String| {
        let stack = &stack;
        async move {
            wait_until("the runner to exit", LAUNCH_WITHIN, || async {
                let r = get(stack, &format!("/api/v1/runners/{id}")).await;
                Ok((r.body["state"] == "exited").then_some(()))
            })
            .await
            .unwrap();
        }
    };

    let body = json!({"project": "web", "profile": "demo", "prompt": "start"});
    let r = post(&stack, "/api/v1/runners?wait=20", body, None).await;
    let first = launched(&r);
    let runner = Uuid::parse_str(&first).unwrap();
    let (_, offer) = node.next_offer().await;
    let launch_session = offer["session_id"].as_str().unwrap().to_owned();
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    for event in [started(runner, 1)]
        .into_iter()
        .chain(agent_names(runner, "thread-a"))
        .chain([
            text(runner, "thread-a", "assistant", "looking"),
            usage(runner, 1, 1, "thread-a", 10),
            text(runner, "thread-a", "result", "done"),
            exited(runner, 1, "succeeded", 0),
        ])
    {
        node.report(runner, 1, event).await;
    }
    wait_exited(first.clone()).await;
    let a = wait_until("session thread-a", LAUNCH_WITHIN, || async {
        let r = get(&stack, "/api/v1/sessions/thread-a").await;
        Ok((r.status.as_u16() == 200 && r.body["final_result"] == "done").then_some(r.body))
    })
    .await
    .unwrap();
    assert_eq!(a["bound"], true, "{a}");
    assert_eq!(a["resumable"], true, "{a}");
    assert_eq!(
        (a["message_count"].clone(), a["turn_count"].clone()),
        (json!(2), json!(1))
    );
    assert!(a["resumed_from"].is_null());
    get(&stack, &format!("/api/v1/sessions/{launch_session}"))
        .await
        .assert_problem(404, "not-found");

    let r = post(
        &stack,
        "/api/v1/sessions/thread-a/resume?wait=20",
        json!({"prompt": "go on"}),
        None,
    )
    .await;
    let second = launched(&r);
    let runner = Uuid::parse_str(&second).unwrap();
    let (_, offer) = node.next_offer().await;
    assert_eq!(
        (offer["session_id"].clone(), offer["resume"].clone()),
        (json!("thread-a"), json!(true))
    );
    node.report(runner, 1, node.claim(runner, 1)).await;
    node.next_control().await;
    for event in [started(runner, 1)]
        .into_iter()
        .chain(agent_names(runner, "thread-b"))
        .chain([exited(runner, 1, "succeeded", 0)])
    {
        node.report(runner, 1, event).await;
    }
    wait_exited(second.clone()).await;
    let b = wait_until("session thread-b", LAUNCH_WITHIN, || async {
        let r = get(&stack, "/api/v1/sessions/thread-b").await;
        Ok((r.status.as_u16() == 200 && !r.body["ended_at"].is_null()).then_some(r.body))
    })
    .await
    .unwrap();
    assert_eq!(b["resumed_from"], "thread-a", "{b}");
    assert_eq!(b["first_prompt"], "go on");
    assert_eq!(b["runs"][0]["runner_id"], second.as_str());
    let a = get(&stack, "/api/v1/sessions/thread-a").await.body;
    let runs: Vec<&Value> = a["runs"].as_array().unwrap().iter().collect();
    assert_eq!(runs.len(), 1, "the fork's run is not thread-a's: {a}");
    assert_eq!(a["first_prompt"], "start");

    crate::rebuild::assert_rebuilds_match_live(&stack.env).await;
    stack.cleanup().await;
}
