//! The orchestrator applies runs of nodes' reports that decide nothing
//! (usage under every budget's threshold, text, spawns) without deciding
//! and folding each: a few reads serve the run, and the message that takes
//! a budget past its threshold or limit is decided alone. Draining a
//! history that way and deciding and folding every message alone, in the
//! same order (the same batches of 100), must append the same alerts and
//! stops, caused by the same messages, and leave the same tables.

use chrono::{DateTime, Duration, Utc};
use session_orchestrator::handlers::{Orchestrator, SOURCE};
use sqlx::PgConnection;
use sqlx::{AssertSqlSafe, PgPool};
use std::sync::Arc;
use stratavore_consumer::{Decider, Drainer, HandleError, Projection, record_own};
use stratavore_events::budget::{
    BudgetAction, BudgetChanged, BudgetDefinition, BudgetEvent, BudgetPeriod, BudgetScope,
};
use stratavore_events::process::*;
use stratavore_events::runner::{LaunchApproved, RunnerEvent};
use stratavore_events::{Envelope, Message};
use stratavore_runtime::ManualClock;
use stratavore_store::{NewEntry, StoreError};
use stratavore_testkit::TestEnv;
use uuid::Uuid;

use crate::support::Lcg;

const PROJECTS: [&str; 2] = ["web", "api"];

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn budget(id: u128, scope: BudgetScope, target: Option<&str>) -> BudgetDefinition {
    BudgetDefinition {
        budget_id: Uuid::from_u128(id),
        scope,
        target: target.map(str::to_owned),
        period: BudgetPeriod::Daily,
        time_zone: "UTC".into(),
        limit_tokens: None,
        limit_usd: None,
        warn_percent: 50,
        action: BudgetAction::Warn,
    }
}

/// The orchestrator's own history: budgets (a warning global one on
/// tokens, a stopping one on `web`'s cost, a warning one on a profile)
/// and the runners' launches.
fn own_history(runners: &[(Uuid, &str)]) -> Vec<NewEntry> {
    let budgets = [
        BudgetDefinition {
            limit_tokens: Some(60_000),
            ..budget(1, BudgetScope::Global, None)
        },
        BudgetDefinition {
            limit_usd: Some(6.0),
            action: BudgetAction::Stop,
            warn_percent: 75,
            ..budget(2, BudgetScope::Project, Some("web"))
        },
        BudgetDefinition {
            limit_tokens: Some(45_000),
            period: BudgetPeriod::Hourly,
            ..budget(3, BudgetScope::Profile, Some("demo"))
        },
    ];
    let mut entries: Vec<NewEntry> = budgets
        .into_iter()
        .map(|b| {
            let id = b.budget_id;
            let event = BudgetEvent::Created(BudgetChanged {
                command_id: Uuid::from_u128(100 + id.as_u128()),
                budget: b,
            });
            NewEntry::of(
                &event,
                SOURCE,
                format!("budget-{id}"),
                1,
                id.to_string(),
                now(),
            )
        })
        .collect();
    for (n, (runner, project)) in runners.iter().enumerate() {
        let event = RunnerEvent::LaunchApproved(LaunchApproved {
            command_id: Uuid::from_u128(1000 + n as u128),
            runner_id: *runner,
            project: (*project).into(),
            path: format!("/tmp/{project}"),
            profile: if n % 2 == 0 { "demo" } else { "other" }.into(),
            session_id: format!("session-{n}"),
            resume: false,
            model: None,
            permission: None,
            max_restarts: 1,
            prompt: "go".into(),
            allowed_tools: vec![],
        });
        entries.push(NewEntry::of(
            &event,
            SOURCE,
            format!("runner-{runner}"),
            1,
            runner.to_string(),
            now(),
        ));
    }
    entries
}

/// What the nodes report, per process stream: usage (some of it
/// yesterday's, whose alerts stop nothing), text, spawns, stalls,
/// reconciliations, an exit, and one report that does not parse.
fn received_history(rng: &mut Lcg, runners: &[(Uuid, &str)]) -> Vec<Envelope> {
    let mut streams: Vec<Vec<Envelope>> = Vec::new();
    for (n, (runner, _)) in runners.iter().enumerate() {
        let runner = *runner;
        let stream = format!("process-{runner}-1");
        let session = format!("session-{n}");
        let mut events: Vec<(String, serde_json::Value, DateTime<Utc>)> = Vec::new();
        let mut push = |e: &ProcessEvent, at: DateTime<Utc>| {
            events.push((e.type_name().to_owned(), e.to_data(), at));
        };
        push(
            &ProcessEvent::Spawning(ProcessClaim {
                runner_id: runner,
                attempt: 1,
                node: "node-1".into(),
                incarnation: Uuid::from_u128(1),
            }),
            now(),
        );
        for turn in 1..=30_u32 {
            let yesterday = rng.below(8) == 0;
            let at = if yesterday {
                now() - Duration::hours(20)
            } else {
                now() - Duration::minutes(i64::try_from(rng.below(50)).unwrap())
            };
            push(
                &ProcessEvent::UsageReported(UsageReported {
                    runner_id: runner,
                    attempt: 1,
                    turn,
                    input_tokens: rng.below(400),
                    output_tokens: rng.below(200),
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: rng.below(100),
                    // Binary fractions: sums are exact in any order.
                    cost_usd: f64::from(u32::try_from(rng.below(8)).unwrap()) / 16.0,
                    model: Some("sonnet".into()),
                    session_id: session.clone(),
                }),
                at,
            );
            match rng.below(6) {
                0 => push(
                    &ProcessEvent::CostReconciled(ProcessCostReconciled {
                        runner_id: runner,
                        attempt: 1,
                        priced_cost_usd: 0.25,
                        reported_cost_usd: 0.5,
                    }),
                    at,
                ),
                1 => push(
                    &ProcessEvent::Stalled(ProcessStalled {
                        runner_id: runner,
                        attempt: 1,
                        idle_ms: 1000,
                        policy: "warn".into(),
                    }),
                    at,
                ),
                _ => push(
                    &ProcessEvent::TextChunked(TextChunked {
                        runner_id: runner,
                        attempt: 1,
                        session_id: session.clone(),
                        role: "assistant".into(),
                        text: format!("turn {turn}"),
                    }),
                    at,
                ),
            }
        }
        if n == 5 {
            push(
                &ProcessEvent::Exited(ProcessExited {
                    runner_id: runner,
                    attempt: 1,
                    node: "node-1".into(),
                    code: Some(0),
                    signal: None,
                    reason: "exited".into(),
                    outcome: "succeeded".into(),
                    message: None,
                    resets_at: None,
                    transcript: None,
                }),
                now(),
            );
        }
        if n == 3 {
            // Not a usage report: the run stops before it, and it is
            // refused (its stream waits) in both drains alike.
            events.insert(
                12,
                (
                    "io.stratavore.process.usage_reported.v1".into(),
                    serde_json::json!({"runner_id": runner, "turn": "many"}),
                    now(),
                ),
            );
        }
        streams.push(
            events
                .into_iter()
                .enumerate()
                .map(|(i, (type_name, data, time))| Envelope {
                    id: Uuid::now_v7(),
                    source: "/stratavore/runner-supervisor/node-1".into(),
                    type_name,
                    subject: runner.to_string(),
                    time,
                    data,
                    stream: stream.clone(),
                    sequence: i as u64 + 1,
                    correlation_id: None,
                    causation_id: None,
                    traceparent: None,
                    tracestate: None,
                    idempotency_key: None,
                })
                .collect(),
        );
    }
    streams.into_iter().flatten().collect()
}

/// The orchestrator, with (`quiet`) or without its quiet runs: without,
/// the drain decides and folds every message alone.
struct Probed {
    orchestrator: Orchestrator,
    quiet: bool,
}

impl Decider for Probed {
    async fn decide(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        self.orchestrator.decide(conn, message).await
    }

    fn on_skipped(&self, message: &Envelope) -> Vec<NewEntry> {
        self.orchestrator.on_skipped(message)
    }

    fn may_be_quiet(&self, type_name: &str) -> bool {
        self.quiet && self.orchestrator.may_be_quiet(type_name)
    }

    async fn quiet_prefix(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<usize, StoreError> {
        self.orchestrator.quiet_prefix(conn, messages).await
    }
}

impl Projection for Probed {
    fn tables(&self) -> &'static [&'static str] {
        self.orchestrator.tables()
    }

    async fn project_own(
        &self,
        conn: &mut PgConnection,
        entry: &Envelope,
    ) -> Result<(), StoreError> {
        self.orchestrator.project_own(conn, entry).await
    }

    async fn project_received(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<(), StoreError> {
        self.orchestrator.project_received(conn, message).await
    }

    async fn project_received_batch(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<(), StoreError> {
        if self.quiet {
            self.orchestrator
                .project_received_batch(conn, messages)
                .await
        } else {
            for message in messages {
                self.orchestrator.project_received(conn, message).await?;
            }
            Ok(())
        }
    }
}

/// The orchestrator on a clock fixed at `now()`, draining 100 at a time.
fn drainer(env: &TestEnv, pool: PgPool, quiet: bool) -> Drainer<Probed> {
    let drainer = session_orchestrator::drainer(&crate::support::orchestrator_config(env), pool);
    let mut orchestrator = (*drainer.service).clone();
    orchestrator.clock = Arc::new(ManualClock::new(now()));
    Drainer {
        pool: drainer.pool,
        log: drainer.log,
        service: Arc::new(Probed {
            orchestrator,
            quiet,
        }),
        max_attempts: drainer.max_attempts,
        batch: 100,
        name: drainer.name,
        owner: drainer.owner,
        lag: drainer.lag,
        commits: drainer.commits,
        turn: Default::default(),
    }
}

async fn seed(drainer: &Drainer<Probed>, own: &[NewEntry], received: &[Envelope]) {
    let mut tx = drainer.pool.begin().await.unwrap();
    record_own(&mut tx, &drainer.log, drainer.service.as_ref(), own)
        .await
        .unwrap();
    for m in received {
        sqlx::query(
            "INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, message)
             VALUES ($1, 'runner-supervisor', $2, $3, $4, 'received', $5)",
        )
        .bind(m.id)
        .bind(&m.stream)
        .bind(i64::try_from(m.sequence).unwrap())
        .bind(&m.type_name)
        .bind(serde_json::to_value(m.to_cloudevent().unwrap()).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// The tables, the log's entries (type, stream, version, cause and data)
/// and the inbox's outcomes, as JSON.
async fn snapshot(pool: &PgPool) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, query) in [
        (
            "budget_spend",
            "SELECT json_agg(t ORDER BY message_id) FROM budget_spend t",
        ),
        (
            "session_usage",
            "SELECT json_agg(t ORDER BY session_id) FROM session_usage t",
        ),
        (
            "budget_alerts",
            "SELECT json_agg(t ORDER BY budget_id, period_start, kind) FROM budget_alerts t",
        ),
        (
            "budgets",
            "SELECT json_agg(t ORDER BY budget_id) FROM budgets t",
        ),
        (
            "runners",
            "SELECT json_agg(json_build_array(runner_id, state, version) ORDER BY runner_id) FROM runners",
        ),
        (
            "log",
            "SELECT json_agg(json_build_array(type, stream, stream_version,
                 extensions->'causationid', data - 'command_id') ORDER BY stream, stream_version)
             FROM log",
        ),
        (
            "inbox",
            "SELECT json_agg(json_build_array(message_id, status, attempts) ORDER BY message_id) FROM inbox",
        ),
        (
            "stream_versions",
            "SELECT json_agg(t ORDER BY source_log, stream) FROM stream_versions t",
        ),
    ] {
        let rows: Option<serde_json::Value> = sqlx::query_scalar(AssertSqlSafe(query))
            .fetch_one(pool)
            .await
            .unwrap();
        out.insert(name.to_owned(), rows.unwrap_or_default());
    }
    serde_json::Value::Object(out)
}

async fn drained(
    env: &TestEnv,
    quiet: bool,
    own: &[NewEntry],
    received: &[Envelope],
) -> serde_json::Value {
    let pool = env.db.service_pool("session-orchestrator").await.unwrap();
    let drainer = drainer(env, pool.clone(), quiet);
    seed(&drainer, own, received).await;
    let mut streams: Vec<(String, String)> = received
        .iter()
        .map(|m| ("runner-supervisor".to_owned(), m.stream.clone()))
        .collect();
    streams.dedup();
    // The refused report is tried again each time; the rest drain at once.
    for _ in 0..2 {
        drainer.drain_streams(&streams).await.unwrap();
    }
    let rows = snapshot(&pool).await;
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_runs_applied_together_append_and_fold_what_deciding_each_alone_does() {
    let mut rng = Lcg(7);
    let runners: Vec<(Uuid, &str)> = (0..12).map(|n| (Uuid::now_v7(), PROJECTS[n % 2])).collect();
    let own = own_history(&runners);
    let received = received_history(&mut rng, &runners);

    let one = TestEnv::new().await.unwrap();
    let batched = TestEnv::new().await.unwrap();
    let one_at_a_time = drained(&one, false, &own, &received).await;
    let in_batches = drained(&batched, true, &own, &received).await;

    // The history is not trivial: every budget alerted, `web`'s stopped
    // its runners, yesterday's spending alerted without stopping, and the
    // malformed report was refused (and its stream waits behind it).
    let log = one_at_a_time["log"].as_array().unwrap();
    let of_type = |t: &str| log.iter().filter(|e| e[0] == t).count();
    let exceeded = of_type("io.stratavore.budget.exceeded.v1");
    let warned = of_type("io.stratavore.budget.threshold_reached.v1");
    assert!(
        exceeded >= 3 && warned >= 4,
        "{exceeded} exceeded, {warned} warnings"
    );
    assert!(
        log.iter()
            .any(|e| e[0] == "io.stratavore.budget.exceeded.v1"
                && !e[4]["stopped_runners"].as_array().unwrap().is_empty()),
        "a stop budget stopped runners"
    );
    let refused: Vec<&serde_json::Value> = one_at_a_time["inbox"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m[2].as_i64().unwrap() > 0)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0][1], "received", "{refused:?}");

    for (table, rows) in one_at_a_time.as_object().unwrap() {
        assert_eq!(&in_batches[table], rows, "{table} differs");
    }
    one.cleanup().await.unwrap();
    batched.cleanup().await.unwrap();
}
