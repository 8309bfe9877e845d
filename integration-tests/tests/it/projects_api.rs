//! Projects end to end through the REST API: gateway → its log → relay →
//! orchestrator → its log → relay → gateway's read model.

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_is_created_read_listed_updated_archived_and_unarchived_through_the_api() {
    let stack = Stack::start().await;
    let created = post(
        &stack,
        "/api/v1/projects",
        json!({"name": "web", "path": "/srv/projects/./web/", "description": "the site", "tags": ["a"]}),
        Some("create-web"),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    assert_eq!(created.headers["location"], "/api/v1/projects/web");
    assert_eq!(
        created.body["path"], "/srv/projects/web",
        "the path is normalised"
    );
    assert_eq!(created.body["archived"], false);

    let read = get(&stack, "/api/v1/projects/web").await;
    assert_eq!(read.status.as_u16(), 200);
    assert_eq!(read.body, created.body);

    let updated = patch(&stack, "/api/v1/projects/web", json!({"tags": ["a", "b"]})).await;
    assert_eq!(updated.status.as_u16(), 200, "{updated:?}");
    assert_eq!(updated.body["tags"], json!(["a", "b"]));
    assert_eq!(
        updated.body["description"], "the site",
        "what a PATCH does not name stays"
    );

    let archived = post(&stack, "/api/v1/projects/web/archive", json!({}), None).await;
    assert_eq!(archived.body["archived"], true, "{archived:?}");
    post(&stack, "/api/v1/projects/web/archive", json!({}), None)
        .await
        .assert_problem(409, "conflict");
    let unarchived = post(&stack, "/api/v1/projects/web/unarchive", json!({}), None).await;
    assert_eq!(unarchived.body["archived"], false, "{unarchived:?}");

    for name in ["b-two", "c-three", "a-one"] {
        let r = post(
            &stack,
            "/api/v1/projects",
            json!({"name": name, "path": format!("{ROOT}/{name}")}),
            None,
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{r:?}");
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/projects?limit=3".to_owned();
    loop {
        let page = get(&stack, &path).await;
        assert_eq!(page.status.as_u16(), 200, "{page:?}");
        for item in page.body["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/projects?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names, ["a-one", "b-two", "c-three", "web"]);
    stack.cleanup().await;
}

/// A waiting request reads its outcome again as soon as this gateway's
/// drain commits, not at its next poll: with the poll at a minute, creates
/// still answer 201 within their wait (they would answer 202 at its end
/// if only the poll read again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_answered_when_its_gateway_applies_the_outcome() {
    let env = stratavore_testkit::TestEnv::new().await.unwrap();
    let stack = Stack::start_tuned(env, |g| g.api.outcome_poll_ms = 60_000).await;
    for name in ["one", "two", "three"] {
        let started = Instant::now();
        let r = post(
            &stack,
            "/api/v1/projects?wait=20",
            json!({"name": name, "path": format!("{ROOT}/{name}")}),
            None,
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // A rejection is an outcome too.
    post(
        &stack,
        "/api/v1/projects?wait=20",
        json!({"name": "one", "path": format!("{ROOT}/other")}),
        None,
    )
    .await
    .assert_problem(409, "conflict");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_not_decided_within_its_wait_answers_202_and_its_status_can_be_read() {
    let stack = Stack::start().await;
    let r = post(
        &stack,
        "/api/v1/projects?wait=0",
        json!({"name": "later", "path": "/srv/projects/later"}),
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 202, "{r:?}");
    let location = r.headers["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/v1/commands/"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let c = get(&stack, &location).await;
        assert_eq!(c.status.as_u16(), 200, "{c:?}");
        if c.body["status"] != "pending" || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.body["status"], "succeeded", "{status:?}");
    assert_eq!(status.body["resource"], "/api/v1/projects/later");
    assert_eq!(
        status.body["type"],
        "io.stratavore.command.project.create.v1"
    );
    get(&stack, "/api/v1/commands/not-a-uuid")
        .await
        .assert_problem(404, "not-found");
    get(
        &stack,
        &format!("/api/v1/commands/{}", uuid::Uuid::now_v7()),
    )
    .await
    .assert_problem(404, "not-found");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_answered_4xx_problem_json_naming_the_field_and_changes_nothing() {
    let stack = Stack::start().await;
    let first = post(
        &stack,
        "/api/v1/projects",
        json!({"name": "web", "path": "/srv/projects/web"}),
        None,
    )
    .await;
    assert_eq!(first.status.as_u16(), 201, "{first:?}");
    let before = get(&stack, "/api/v1/projects/web").await.body;
    let (log_before, projects_before) = gateway_counts(&stack).await;

    // Refused at the gateway's edge: not even a command is recorded.
    let edge = [
        (
            json!({"name": "Bad Name", "path": "/srv/projects/x"}),
            422,
            "validation-failed",
            Some("name"),
        ),
        (
            json!({"name": "rel", "path": "srv/projects/rel"}),
            422,
            "validation-failed",
            Some("path"),
        ),
        (
            json!({"name": "x", "path": "/srv/projects/x", "colour": "red"}),
            422,
            "validation-failed",
            Some("colour"),
        ),
        (
            json!({"name": "x", "path": 42}),
            422,
            "validation-failed",
            Some("path"),
        ),
        (
            json!({"path": "/srv/projects/x"}),
            422,
            "validation-failed",
            Some("name"),
        ),
    ];
    for (body, status, slug, field) in edge {
        let r = post(&stack, "/api/v1/projects", body.clone(), None).await;
        r.assert_problem(status, slug);
        if let Some(field) = field {
            assert!(r.fields().iter().any(|f| f == field), "{body}: {r:?}");
        }
    }
    let malformed = Reply::of(
        stack
            .http
            .post(stack.url("/api/v1/projects"))
            .header("content-type", "application/json")
            .body("{\"name\": \"x\",")
            .send()
            .await
            .unwrap(),
    )
    .await;
    malformed.assert_problem(400, "invalid-request");
    let not_json = Reply::of(
        stack
            .http
            .post(stack.url("/api/v1/projects"))
            .header("content-type", "text/plain")
            .body("name=x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    not_json.assert_problem(415, "unsupported-media-type");
    let evil_host = Reply::of(
        stack
            .http
            .post(stack.url("/api/v1/projects"))
            .header("host", "evil.example")
            .json(&json!({"name": "x", "path": "/srv/projects/x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    evil_host.assert_problem(403, "forbidden-host");
    let evil_origin = Reply::of(
        stack
            .http
            .post(stack.url("/api/v1/projects"))
            .header("origin", "http://evil.example")
            .json(&json!({"name": "x", "path": "/srv/projects/x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    evil_origin.assert_problem(403, "forbidden-host");
    get(&stack, "/api/v1/projects/nope")
        .await
        .assert_problem(404, "not-found");
    get(&stack, "/api/v1/projects?limit=0")
        .await
        .assert_problem(422, "validation-failed");
    get(&stack, "/api/v1/projects?cursor=%%%")
        .await
        .assert_problem(400, "invalid-request");
    get(&stack, "/api/v1/nothing-here")
        .await
        .assert_problem(404, "not-found");
    assert_eq!(
        gateway_counts(&stack).await,
        (log_before, projects_before),
        "edge refusals record nothing"
    );

    // Decided by the orchestrator: the command is recorded, the project
    // is not changed.
    let decided = [
        (
            json!({"name": "web", "path": "/srv/projects/other"}),
            409,
            "conflict",
            None,
        ),
        (
            json!({"name": "esc", "path": "/srv/projects/../../etc"}),
            422,
            "validation-failed",
            Some("path"),
        ),
        (
            json!({"name": "out", "path": "/etc/passwd"}),
            422,
            "validation-failed",
            Some("path"),
        ),
    ];
    for (body, status, slug, field) in decided {
        let r = post(&stack, "/api/v1/projects", body.clone(), None).await;
        r.assert_problem(status, slug);
        if let Some(field) = field {
            assert!(r.fields().iter().any(|f| f == field), "{body}: {r:?}");
        }
    }
    let conflict = post(
        &stack,
        "/api/v1/projects",
        json!({"name": "web", "path": "/srv/projects/o"}),
        None,
    )
    .await;
    assert_eq!(conflict.body["reason"], "name_taken", "{conflict:?}");
    patch(&stack, "/api/v1/projects/nope", json!({"description": "x"}))
        .await
        .assert_problem(404, "not-found");
    post(&stack, "/api/v1/projects/nope/archive", json!({}), None)
        .await
        .assert_problem(404, "not-found");
    assert_eq!(get(&stack, "/api/v1/projects/web").await.body, before);
    let (_, projects_after) = gateway_counts(&stack).await;
    assert_eq!(
        projects_after, projects_before,
        "no rejected command made a project"
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_twice_creates_one_project_and_a_reused_key_is_refused() {
    let stack = Stack::start().await;
    let body = json!({"name": "once", "path": "/srv/projects/once"});
    let a = post(&stack, "/api/v1/projects", body.clone(), Some("key-1")).await;
    let b = post(&stack, "/api/v1/projects", body.clone(), Some("key-1")).await;
    assert_eq!(a.status.as_u16(), 201, "{a:?}");
    assert_eq!(
        b.status.as_u16(),
        201,
        "the retry gets the same outcome: {b:?}"
    );
    assert_eq!(a.body, b.body);
    let pool = stack.env.db.service_pool("api-gateway").await.unwrap();
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(commands, 1, "one command for one key");
    post(
        &stack,
        "/api/v1/projects",
        json!({"name": "other", "path": "/srv/projects/o"}),
        Some("key-1"),
    )
    .await
    .assert_problem(409, "conflict");
    // Concurrent retries with a new key race for it; still one command.
    let body = json!({"name": "raced", "path": "/srv/projects/raced"});
    let (x, y, z) = tokio::join!(
        post(&stack, "/api/v1/projects", body.clone(), Some("key-2")),
        post(&stack, "/api/v1/projects", body.clone(), Some("key-2")),
        post(&stack, "/api/v1/projects", body.clone(), Some("key-2")),
    );
    for r in [&x, &y, &z] {
        assert_eq!(r.status.as_u16(), 201, "{r:?}");
    }
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway.log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(commands, 2);
    pool.close().await;
    stack.cleanup().await;
}

/// Prints p50 and p99 of POST → 201 (a figure, not a pass mark; the
/// benchmark measures it properly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_post_to_201_latency_is_measured_over_a_hundred_creates() {
    let stack = Stack::start().await;
    let mut samples = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let r = post(
            &stack,
            "/api/v1/projects",
            json!({"name": format!("p{i}"), "path": format!("{ROOT}/p{i}")}),
            None,
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{r:?}");
        samples.push(started.elapsed());
    }
    samples.sort();
    eprintln!(
        "POST /api/v1/projects to 201 over 100 sequential creates: p50 {:?}, p99 {:?}, max {:?}",
        samples[49], samples[98], samples[99]
    );
    stack.cleanup().await;
}
