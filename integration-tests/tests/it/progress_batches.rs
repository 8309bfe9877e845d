//! The gateway folds runs of agents' progress (usage reports and text
//! pieces) a model at a time, a few statements per run. Folding a history
//! one message at a time, in slices of any sizes, and in one slice must
//! give the same rows: the live drain cuts its batches one way and a
//! rebuild pages another, and both must agree to the last bit of a cost.

use api_gateway::service::GatewayService;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use stratavore_agent_protocols::TEXT_CHUNK_MAX_BYTES;
use stratavore_consumer::Projection;
use stratavore_events::Envelope;
use stratavore_events::Message;
use stratavore_events::process::*;
use stratavore_events::project::{ProjectCreated, ProjectEvent, RunnerAdmitted};
use stratavore_events::runner::{AttemptOffered, LaunchApproved, RunnerEvent};
use stratavore_store::NewEntry;
use stratavore_testkit::TestEnv;
use uuid::Uuid;

use crate::support::Lcg;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
}

fn envelope<M: Message>(event: &M, stream: &str, version: u64, time: DateTime<Utc>) -> Envelope {
    NewEntry::of(event, "/stratavore/test", stream, version, stream, time).envelope
}

/// One runner's events, in its streams' order: the orchestrator's (launch,
/// offers) and the node's (process events).
fn runner_history(rng: &mut Lcg, n: usize) -> (Vec<Envelope>, Vec<Envelope>) {
    let runner = Uuid::now_v7();
    let launch_session = format!("launch-{n}");
    let agent_session = format!("agent-{n}");
    let mut clock = i64::try_from(n).unwrap() * 7;
    let mut tick = |rng: &mut Lcg| {
        clock += i64::try_from(rng.below(900)).unwrap() - 100; // times may go back
        at(clock)
    };
    let orch_stream = format!("runner-{runner}");
    let mut orch = vec![envelope(
        &RunnerEvent::LaunchApproved(LaunchApproved {
            command_id: Uuid::now_v7(),
            runner_id: runner,
            project: "p".into(),
            path: "/tmp/p".into(),
            profile: "demo".into(),
            session_id: launch_session.clone(),
            resume: false,
            model: None,
            permission: None,
            max_restarts: 2,
            prompt: format!("prompt {n}"),
            allowed_tools: vec![],
        }),
        &orch_stream,
        1,
        tick(rng),
    )];
    let node_stream = format!("process-{runner}");
    let mut node = Vec::new();
    let attempts = 1 + rng.below(2) as u32;
    for attempt in 1..=attempts {
        orch.push(envelope(
            &RunnerEvent::Offered(AttemptOffered {
                runner_id: runner,
                attempt,
                resume: attempt > 1,
                session_id: if attempt > 1 {
                    agent_session.clone()
                } else {
                    launch_session.clone()
                },
                launch_deadline_ms: 60_000,
            }),
            &orch_stream,
            u64::try_from(orch.len() + 1).unwrap(),
            tick(rng),
        ));
        let mut push = |event: ProcessEvent, rng: &mut Lcg, node: &mut Vec<Envelope>| {
            let version = u64::try_from(node.len() + 1).unwrap();
            node.push(envelope(&event, &node_stream, version, tick(rng)));
        };
        push(
            ProcessEvent::Started(ProcessStarted {
                runner_id: runner,
                attempt,
                node: "n1".into(),
                pid: 100 + attempt,
            }),
            rng,
            &mut node,
        );
        // Half the agents name a session of their own (a fork, a Codex
        // thread), which moves the attempt to another session.
        let named = n.is_multiple_of(2);
        if named {
            push(
                ProcessEvent::SessionStarted(ProcessSessionStarted {
                    runner_id: runner,
                    attempt,
                    session_id: agent_session.clone(),
                    model: None,
                }),
                rng,
                &mut node,
            );
        }
        let session_of_steps = if named {
            agent_session.clone()
        } else {
            String::new()
        };
        for step in 0..(10 + rng.below(30)) {
            let event = match rng.below(10) {
                0..=3 => ProcessEvent::UsageReported(UsageReported {
                    runner_id: runner,
                    attempt,
                    turn: u32::try_from(step).unwrap(),
                    input_tokens: rng.below(5000),
                    output_tokens: rng.below(800),
                    cache_creation_input_tokens: rng.below(100),
                    cache_read_input_tokens: rng.below(20_000),
                    // Figures that are not sums of binary fractions, so a
                    // reordered addition would show in the last bits.
                    cost_usd: rng.below(10_000) as f64 * 0.000_137,
                    model: None,
                    session_id: session_of_steps.clone(),
                }),
                4..=7 => {
                    let role = ["user", "assistant", "assistant", "result"]
                        [usize::try_from(rng.below(4)).unwrap()];
                    let text = if rng.below(3) == 0 {
                        // A full piece: the next of its role continues it.
                        "é".repeat(TEXT_CHUNK_MAX_BYTES / 2)
                    } else {
                        format!("{role} text {n}.{attempt}.{step}")
                    };
                    ProcessEvent::TextChunked(TextChunked {
                        runner_id: runner,
                        attempt,
                        session_id: session_of_steps.clone(),
                        role: role.into(),
                        text,
                    })
                }
                8 => ProcessEvent::Stalled(ProcessStalled {
                    runner_id: runner,
                    attempt,
                    idle_ms: 90_000,
                    policy: "notify".into(),
                }),
                _ => ProcessEvent::CostReconciled(ProcessCostReconciled {
                    runner_id: runner,
                    attempt,
                    priced_cost_usd: 0.013,
                    reported_cost_usd: 0.0171,
                }),
            };
            push(event, rng, &mut node);
        }
        push(
            ProcessEvent::Exited(ProcessExited {
                runner_id: runner,
                attempt,
                node: "n1".into(),
                code: Some(0),
                signal: None,
                reason: "exited".into(),
                outcome: "success".into(),
                message: None,
                resets_at: None,
                transcript: None,
            }),
            rng,
            &mut node,
        );
    }
    (orch, node)
}

/// Several runners' streams interleaved as a delivery might: each stream in
/// its order, the streams mixed (a node's events may come before the
/// launch that made its runner).
fn history() -> Vec<Envelope> {
    let mut rng = Lcg(20);
    let mut streams: Vec<std::collections::VecDeque<Envelope>> = Vec::new();
    // Projects' events change none of progress's tables, so runs go on
    // past them: they are mixed in among the runners'.
    let mut projects = std::collections::VecDeque::new();
    for n in 0..8 {
        let (orch, node) = runner_history(&mut rng, n);
        streams.push(orch.into());
        streams.push(node.into());
        let name = format!("p{n}");
        let created = ProjectEvent::Created(ProjectCreated {
            command_id: Uuid::now_v7(),
            name: name.clone(),
            path: format!("/tmp/{name}"),
            description: None,
            tags: vec![],
            max_concurrent_runners: 4,
        });
        let admitted = ProjectEvent::RunnerAdmitted(RunnerAdmitted {
            command_id: Uuid::now_v7(),
            name: name.clone(),
            runner_id: Uuid::now_v7(),
        });
        let stream = format!("project-{name}");
        projects.push_back(envelope(
            &created,
            &stream,
            1,
            at(i64::try_from(n).unwrap()),
        ));
        projects.push_back(envelope(
            &admitted,
            &stream,
            2,
            at(i64::try_from(n).unwrap()),
        ));
    }
    streams.push(projects);
    let mut out = Vec::new();
    while streams.iter().any(|s| !s.is_empty()) {
        let i = usize::try_from(rng.below(streams.len() as u64)).unwrap();
        // Take a few of one stream at a time, as a drain batch would.
        for _ in 0..=rng.below(6) {
            if let Some(e) = streams[i].pop_front() {
                out.push(e);
            }
        }
    }
    out
}

const TABLES: &[(&str, &str)] = &[
    ("runners", "runner_id"),
    ("session_runners", "runner_id"),
    ("session_attempts", "runner_id, attempt"),
    ("sessions", "session_id"),
    ("session_texts", "text_id"),
    ("budget_spend", "message_id"),
    ("projects", "name"),
    ("commands", "command_id"),
];

async fn snapshot(pool: &PgPool) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (table, order) in TABLES {
        let rows: Option<serde_json::Value> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT json_agg(t ORDER BY {order}) FROM {table} t"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert((*table).to_owned(), rows.unwrap_or_default());
    }
    serde_json::Value::Object(out)
}

/// Empty the read models, fold `history` in slices of the sizes `sizes`
/// gives (0: one message at a time with `project_received`), and return
/// the rows.
async fn fold(
    pool: &PgPool,
    history: &[Envelope],
    mut sizes: impl FnMut() -> usize,
) -> serde_json::Value {
    let mut tx = pool.begin().await.unwrap();
    for table in GatewayService.tables() {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let mut rest = history;
    while !rest.is_empty() {
        let size = sizes();
        if size == 0 {
            GatewayService
                .project_received(&mut tx, &rest[0])
                .await
                .unwrap();
            rest = &rest[1..];
            continue;
        }
        let (slice, after) = rest.split_at(size.min(rest.len()));
        GatewayService
            .project_received_batch(&mut tx, slice)
            .await
            .unwrap();
        rest = after;
    }
    tx.commit().await.unwrap();
    snapshot(pool).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_folded_one_at_a_time_in_any_slices_or_at_once_gives_the_same_rows() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool("api-gateway").await.unwrap();
    let history = history();
    let one_by_one = fold(&pool, &history, || 0).await;

    // The history is not trivial: every model has rows, turns add up to
    // the usage reports, texts were cut into pieces, results continued,
    // stalls ended, and some attempts moved to the session the agent named.
    let usage = history
        .iter()
        .filter(|e| e.type_name == "io.stratavore.process.usage_reported.v1")
        .count();
    let sums: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT sum(turns)::bigint, sum(messages)::bigint,
                count(*) FILTER (WHERE octet_length(result_text) > $1),
                count(DISTINCT session_id)
         FROM session_attempts",
    )
    .bind(i32::try_from(TEXT_CHUNK_MAX_BYTES).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sums.0, i64::try_from(usage).unwrap());
    assert!(
        sums.1 > 0 && sums.2 > 0,
        "messages and continued results: {sums:?}"
    );
    assert!(sums.3 >= 8, "sessions of launches and of agents: {sums:?}");
    for (table, _) in TABLES {
        assert!(
            one_by_one[*table].as_array().is_some_and(|r| !r.is_empty()),
            "{table} has rows"
        );
    }

    let mut rng = Lcg(7);
    let sliced = fold(&pool, &history, || {
        usize::try_from(1 + rng.below(40)).unwrap()
    })
    .await;
    assert_eq!(
        sliced, one_by_one,
        "slices of 1 to 40 give the rows of one at a time"
    );
    let mut rng = Lcg(11);
    let mixed = fold(&pool, &history, || usize::try_from(rng.below(3)).unwrap()).await;
    assert_eq!(mixed, one_by_one, "alone and in tiny slices, mixed");
    let whole = fold(&pool, &history, || history.len()).await;
    assert_eq!(whole, one_by_one, "the whole history at once");

    pool.close().await;
    env.cleanup().await.unwrap();
}
