//! Runner logs through the gateway: `GET /api/v1/runners/{id}/logs` reads
//! an attempt's transcript from the node that ran it (with the node token),
//! and `?follow=true` streams the history, then live lines from the live
//! exchange, until the runner ends.

use crate::supervisor_e2e::{LAUNCH_WITHIN, NODE_TOKEN, Node, NodeOptions};
use futures::StreamExt;
use std::pin::Pin;
use std::time::Duration;
use stratavore_events::process::{DrainNode, NodeCommand};
use stratavore_events::runner::{ControlRunner, RunnerCommand, Want};
use stratavore_testkit::wait_until;
use uuid::Uuid;

/// Takes a turn every 300 ms until stopped.
const STEADY: &str = r#"sim:{"run_for_ms":120000,"turn_delay_ms":300} keep writing"#;

async fn get(node: &Node, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}{path}", node.gateway_addr))
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The bytes of `attempt`'s part of its session transcript, as the node's
/// disk has them now (to its recorded end once it ended).
async fn part_on_disk(node: &Node, runner: Uuid, attempt: u32) -> Vec<u8> {
    let pool = node.env.db.admin_pool().await.unwrap();
    let (path, start, end): (String, i64, Option<i64>) = sqlx::query_as(
        "SELECT path, start_offset, end_size FROM supervisor.attempt_transcripts
         WHERE runner_id = $1 AND attempt = $2",
    )
    .bind(runner)
    .bind(i64::from(attempt))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(start).unwrap();
    let end = end.map_or(bytes.len(), |e| usize::try_from(e).unwrap());
    bytes[start..end].to_vec()
}

/// The node holding the current attempt, by the gateway's runner view.
async fn node_of(node: &Node, runner: Uuid) -> Option<String> {
    let view: serde_json::Value = get(node, &format!("/api/v1/runners/{runner}"))
        .await
        .json()
        .await
        .unwrap();
    view["node"].as_str().map(str::to_owned)
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    data: serde_json::Value,
}

/// Reads a `text/event-stream` body event by event.
struct SseReader {
    chunks: Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            chunks: Box::pin(response.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); None at the end.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".to_owned(),
                    data: serde_json::Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = name.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
            let chunk = tokio::time::timeout(LAUNCH_WITHIN, self.chunks.next())
                .await
                .expect("an event in time")?
                .unwrap();
            self.buffer.push_str(&String::from_utf8(chunk).unwrap());
        }
    }
}

/// Checks that `lines` (`line` events' data) are one attempt's part from
/// its start, each line once and in order, and returns them joined as the
/// transcript has them.
fn contiguous(lines: &[serde_json::Value], attempt: u64) -> Vec<u8> {
    let mut joined = Vec::new();
    for line in lines {
        assert_eq!(line["attempt"], attempt, "{line}");
        assert_eq!(
            line["offset"].as_u64().unwrap(),
            joined.len() as u64,
            "each line once, in order, none missing: {line}"
        );
        joined.extend_from_slice(line["line"].as_str().unwrap().as_bytes());
        joined.push(b'\n');
    }
    joined
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_runner_logs_of_runners_on_a_second_node_are_read_and_followed_through_the_gateway()
{
    let mut cluster = Node::start_with(NodeOptions::default()).await;
    let a = cluster.node.clone();
    let root = cluster.root.clone();
    let b = cluster.add_node(&[root], Vec::new()).await;
    // A drains, so every runner of this test runs on B.
    cluster
        .send_command(&NodeCommand::Drain(DrainNode {
            node: a.clone(),
            draining: true,
        }))
        .await;
    let pool = cluster.env.db.admin_pool().await.unwrap();
    wait_until("A to drain", LAUNCH_WITHIN, || async {
        let draining: Option<bool> =
            sqlx::query_scalar("SELECT draining FROM supervisor.node_drain WHERE node = $1")
                .bind(&a)
                .fetch_optional(&pool)
                .await?;
        Ok(draining.filter(|d| *d).map(|_| ()))
    })
    .await
    .unwrap();
    pool.close().await;
    // A's offer consumers close at its next scan.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A finished runner: its whole part, as the node's disk has it.
    let finished = Uuid::now_v7();
    cluster
        .launch(
            finished,
            r#"sim:{"turns":3,"tokens_per_turn":{"input":10,"output":5}} three turns"#,
        )
        .await;
    cluster.wait_runner(finished, "exited").await;
    assert_eq!(
        node_of(&cluster, finished).await.as_deref(),
        Some(b.as_str())
    );
    let logs = get(&cluster, &format!("/api/v1/runners/{finished}/logs")).await;
    assert_eq!(logs.status().as_u16(), 200);
    assert_eq!(header(&logs, "stratavore-node"), b);
    assert_eq!(header(&logs, "stratavore-attempt"), "1");
    assert_eq!(header(&logs, "stratavore-attempt-ended"), "true");
    let (next, size) = (
        header(&logs, "stratavore-next-offset"),
        header(&logs, "stratavore-size"),
    );
    let body = logs.bytes().await.unwrap().to_vec();
    let expected = part_on_disk(&cluster, finished, 1).await;
    assert!(!expected.is_empty());
    assert_eq!(body, expected);
    assert_eq!(next, expected.len().to_string());
    assert_eq!(size, next, "all of it");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "the agent's JSON lines, unchanged"
    );
    // Paged by offset and limit.
    let tail = get(
        &cluster,
        &format!("/api/v1/runners/{finished}/logs?attempt=1&offset=1&limit=1000000"),
    )
    .await;
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &expected[1..]);

    // A running one: whole lines only, the part so far.
    let running = Uuid::now_v7();
    cluster.launch(running, STEADY).await;
    cluster.wait_runner(running, "running").await;
    assert_eq!(
        node_of(&cluster, running).await.as_deref(),
        Some(b.as_str())
    );
    let history = wait_until("two lines of the running agent", LAUNCH_WITHIN, || async {
        let logs = get(&cluster, &format!("/api/v1/runners/{running}/logs")).await;
        assert_eq!(logs.status().as_u16(), 200);
        assert_eq!(header(&logs, "stratavore-attempt-ended"), "false");
        let body = logs.bytes().await.unwrap().to_vec();
        Ok((body.iter().filter(|b| **b == b'\n').count() >= 2).then_some(body))
    })
    .await
    .unwrap();
    assert!(history.ends_with(b"\n"), "whole lines only");
    let on_disk = part_on_disk(&cluster, running, 1).await;
    assert_eq!(history, on_disk[..history.len()]);

    // Followed: the history, then lines written meanwhile, then the end.
    let follow = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/runners/{running}/logs?follow=true",
            cluster.gateway_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status().as_u16(), 200);
    assert!(header(&follow, "content-type").starts_with("text/event-stream"));
    let mut events = SseReader::new(follow);
    let mut lines = Vec::new();
    // Until lines arrive that the history read before did not have.
    while contiguous(&lines, 1).len() < history.len() + 200 {
        let event = events.next().await.expect("the stream goes on");
        assert_eq!(event.event, "line", "{event:?}");
        lines.push(event.data);
    }
    cluster
        .send(&RunnerCommand::Control(ControlRunner {
            runner_id: running,
            want: Want::Stopped,
        }))
        .await;
    let end = loop {
        let event = events.next().await.expect("an end event");
        match event.event.as_str() {
            "line" => lines.push(event.data),
            "end" => break event.data,
            other => panic!("unexpected {other} event: {event:?}"),
        }
    };
    assert_eq!(end["state"], "exited");
    assert!(events.next().await.is_none(), "the stream ends after `end`");
    let followed = contiguous(&lines, 1);
    let whole = part_on_disk(&cluster, running, 1).await;
    let whole = if whole.ends_with(b"\n") {
        whole
    } else {
        [whole, b"\n".to_vec()].concat()
    };
    assert_eq!(
        String::from_utf8_lossy(&followed),
        String::from_utf8_lossy(&whole),
        "every line of the attempt, once"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_logs_answer_404_for_an_unknown_runner_and_the_node_wants_its_token() {
    let node = Node::start().await;
    let runner = Uuid::now_v7();
    node.launch(runner, r#"sim:{"turns":1} one turn"#).await;
    node.wait_runner(runner, "exited").await;

    for unknown in [Uuid::now_v7().to_string(), "not-a-runner".to_owned()] {
        let response = get(&node, &format!("/api/v1/runners/{unknown}/logs")).await;
        assert_eq!(response.status().as_u16(), 404, "{unknown}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
    }
    let response = get(&node, &format!("/api/v1/runners/{runner}/logs?attempt=2")).await;
    assert_eq!(response.status().as_u16(), 404, "no second attempt");

    // Following a runner that already ended: its lines, then the end.
    let follow = get(&node, &format!("/api/v1/runners/{runner}/logs?follow=true")).await;
    let mut events = SseReader::new(follow);
    let mut lines = Vec::new();
    let end = loop {
        let event = events.next().await.expect("an end event");
        match event.event.as_str() {
            "line" => lines.push(event.data),
            "end" => break event.data,
            other => panic!("unexpected {other} event: {event:?}"),
        }
    };
    assert_eq!(end["state"], "exited");
    let on_disk = part_on_disk(&node, runner, 1).await;
    assert_eq!(
        String::from_utf8_lossy(&contiguous(&lines, 1)).trim_end(),
        String::from_utf8_lossy(&on_disk).trim_end()
    );

    // The node itself, at the address it registered: only with the token.
    let view: serde_json::Value = get(&node, &format!("/api/v1/nodes/{}", node.node))
        .await
        .json()
        .await
        .unwrap();
    let address = view["address"].as_str().unwrap().to_owned();
    let url = format!("http://{address}/internal/v1/transcripts/{runner}/1");
    let client = reqwest::Client::new();
    let without = client.get(&url).send().await.unwrap();
    assert_eq!(without.status().as_u16(), 401);
    assert_eq!(header(&without, "www-authenticate"), "Bearer");
    let wrong = client
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client
        .get(&url)
        .bearer_auth(NODE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(right.bytes().await.unwrap().as_ref(), on_disk.as_slice());
    let missing = client
        .get(format!(
            "http://{address}/internal/v1/transcripts/{}/1",
            Uuid::now_v7()
        ))
        .bearer_auth(NODE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    node.stop().await;
}
