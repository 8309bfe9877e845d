//! The history the rebuild replays: what a gateway's log and inbox hold
//! after agents ran. Nodes registered; projects, each with a budget, made
//! through the API; then runners launched through the API ([`run`]), each
//! one attempt as a supervisor derives it from the agent's transcript
//! (`session_started`, per turn an assistant `text_chunked` and a
//! `usage_reported`, `session_bound` after the first turn, the result
//! text, `cost_reconciled`, `exited` with its transcript file), beside the
//! orchestrator's runner and project events about it. Some runners resume
//! an earlier session, some are Codex runs whose agent names its own
//! session, some print a reply long enough to be cut into pieces.
//!
//! Messages are built with the real catalogue (`NewEntry::of`, causation
//! as the services set it) and stored as the consumer stores a delivery
//! (the CloudEvent of the envelope, as JSON), applied in the order a
//! gateway would have applied them: the runners of a wave run at once, so
//! their events interleave. Commands go through the log's own append.

mod run;

use super::texts::Texts;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeMap;
use stratavore_events::Message;
use stratavore_events::budget::{
    BudgetAction, BudgetChanged, BudgetCommand, BudgetDefinition, BudgetEvent, BudgetPeriod,
    BudgetScope, CreateBudget,
};
use stratavore_events::process::{NodeEvent, NodeRegistered};
use stratavore_events::project::{CreateProject, ProjectCommand, ProjectCreated, ProjectEvent};
use stratavore_store::{Log, NewEntry};
use uuid::Uuid;

const ORCHESTRATOR: &str = "/stratavore/session-orchestrator";
const GATEWAY: &str = api_gateway::commands::SOURCE;

/// How big a history to write.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Messages in all, own and received (the last wave may pass it).
    pub events: u64,
    /// Projects the runners work in, each with a budget.
    pub projects: usize,
    /// Supervisor nodes.
    pub nodes: usize,
    /// Runners running at once (a wave): their events interleave.
    pub concurrent: usize,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    /// Commands in the gateway's own log.
    pub own: u64,
    /// Applied messages in its inbox.
    pub received: u64,
    /// Runners launched.
    pub runners: u64,
    /// Received messages by type (the type's last two words).
    pub by_type: BTreeMap<String, u64>,
}

/// A received message as the inbox holds it.
struct Received {
    id: Uuid,
    source_log: String,
    stream: String,
    version: i64,
    type_name: String,
    stored: Value,
}

impl Received {
    fn of(entry: NewEntry) -> anyhow::Result<Self> {
        let env = entry.envelope;
        let source_log = stratavore_consumer::received::source_log_of(&env.source)
            .ok_or_else(|| anyhow::anyhow!("source {} is not a service's", env.source))?
            .to_owned();
        Ok(Self {
            id: env.id,
            source_log,
            stream: env.stream.clone(),
            version: i64::try_from(env.sequence)?,
            type_name: env.type_name.clone(),
            // What the consumer stores: the envelope's CloudEvent as JSON.
            stored: serde_json::to_value(env.to_cloudevent()?)?,
        })
    }
}

/// Write the history.
pub async fn write(
    admin: &PgPool,
    log: &Log,
    shape: Shape,
    texts: &Texts,
) -> anyhow::Result<Written> {
    let mut history = History::new(shape, texts.clone());
    let mut written = Written::default();
    let (own, received) = history.prelude()?;
    insert(admin, log, &own, received, &mut written).await?;
    // Each wave is built on a blocking thread while the one before it is
    // inserted.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let builder = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        while history.events < shape.events {
            if tx.blocking_send(history.wave()?).is_err() {
                break;
            }
        }
        Ok(history.runners)
    });
    while let Some((own, received)) = rx.recv().await {
        insert(admin, log, &own, received, &mut written).await?;
    }
    written.runners = builder.await??;
    Ok(written)
}

/// `process.usage_reported` of `io.stratavore.process.usage_reported.v1`.
fn short_type(type_name: &str) -> String {
    let words: Vec<&str> = type_name.split('.').collect();
    match words.as_slice() {
        [.., family, event, _version] => format!("{family}.{event}"),
        _ => type_name.to_owned(),
    }
}

async fn insert(
    admin: &PgPool,
    log: &Log,
    own: &[NewEntry],
    received: Vec<Received>,
    written: &mut Written,
) -> anyhow::Result<()> {
    let mut tx = admin.begin().await?;
    log.append(&mut tx, own).await?;
    written.own += own.len() as u64;
    written.received += received.len() as u64;
    let n = received.len();
    let (mut ids, mut sources, mut streams) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut versions, mut types, mut stored) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in received {
        *written.by_type.entry(short_type(&r.type_name)).or_default() += 1;
        ids.push(r.id);
        sources.push(r.source_log);
        streams.push(r.stream);
        versions.push(r.version);
        types.push(r.type_name);
        stored.push(r.stored);
    }
    // Applied, numbered in the order given as the drain numbers them (a
    // volatile target expression is evaluated after the ORDER BY).
    sqlx::query(
        "INSERT INTO gateway.inbox (message_id, source_log, stream, stream_version, type, status,
                                    applied_seq, message)
         SELECT id, source, stream, version, type, 'applied', nextval('gateway.inbox_applied_seq'),
                message
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::jsonb[])
              WITH ORDINALITY AS t(id, source, stream, version, type, message, ord)
         ORDER BY ord",
    )
    .bind(&ids)
    .bind(&sources)
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&stored)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

struct Project {
    name: String,
    /// Its stream's version so far.
    version: u64,
    budget: Uuid,
    runners: u64,
    /// Sessions of its runners that ended, to resume.
    sessions: Vec<String>,
}

struct Node {
    name: String,
    incarnation: Uuid,
}

/// The history so far, and what the next wave continues from.
struct History {
    shape: Shape,
    texts: Texts,
    start: DateTime<Utc>,
    projects: Vec<Project>,
    nodes: Vec<Node>,
    /// Messages built so far, own and received.
    events: u64,
    runners: u64,
    waves: u32,
    /// Sessions of the current wave's runners (project index, id).
    ended: Vec<(usize, String)>,
}

/// One runner's messages: the client's launch, then what it received, in
/// the order the gateway applies them (times are set when the wave is
/// interleaved).
struct Run {
    launch: NewEntry,
    received: Vec<NewEntry>,
}

/// A fresh id for a message the services would have made.
fn id() -> Uuid {
    Uuid::now_v7()
}

impl History {
    fn new(shape: Shape, texts: Texts) -> Self {
        Self {
            shape,
            texts,
            start: Utc
                .with_ymd_and_hms(2026, 6, 1, 8, 0, 0)
                .single()
                .unwrap_or_else(Utc::now),
            projects: Vec::new(),
            nodes: Vec::new(),
            events: 0,
            runners: 0,
            waves: 0,
            ended: Vec::new(),
        }
    }

    /// A command as the gateway accepts it: its own stream, its id the
    /// conversation's.
    fn command<M: Message>(
        &mut self,
        command: &M,
        subject: &str,
        key: Option<String>,
        at: DateTime<Utc>,
    ) -> NewEntry {
        let id = id();
        let mut entry = NewEntry::of(command, GATEWAY, format!("command-{id}"), 1, subject, at);
        entry.envelope.id = id;
        entry.envelope.correlation_id = Some(id);
        entry.envelope.idempotency_key = key;
        self.events += 1;
        entry
    }

    /// Nodes registered, then each project created with its budget (and
    /// one global budget), through the API.
    fn prelude(&mut self) -> anyhow::Result<(Vec<NewEntry>, Vec<Received>)> {
        let mut at = self.start;
        let mut tick = || {
            at += TimeDelta::milliseconds(250);
            at
        };
        let mut own = Vec::new();
        let mut received = Vec::new();
        for n in 0..self.shape.nodes {
            let node = Node {
                name: format!("node-{n}"),
                incarnation: id(),
            };
            let event = NodeEvent::Registered(NodeRegistered {
                node: node.name.clone(),
                incarnation: node.incarnation,
                capacity: 16,
                roots: vec!["/srv/projects".into()],
                address: format!("10.0.0.{}:7482", 10 + n),
            });
            let source = format!("/stratavore/runner-supervisor/{}", node.name);
            let entry = NewEntry::of(
                &event,
                &source,
                format!("node-{}", node.name),
                1,
                &node.name,
                tick(),
            );
            received.push(Received::of(entry)?);
            self.nodes.push(node);
        }
        for p in 0..self.shape.projects {
            let name = format!("project-{p:04}");
            let path = format!("/srv/projects/{name}");
            let create = ProjectCommand::Create(CreateProject {
                name: name.clone(),
                path: path.clone(),
                description: Some(self.texts.prompt(p).to_owned()),
                tags: vec!["bench".into()],
                max_concurrent_runners: Some(8),
            });
            let command = self.command(&create, &name, Some(format!("create-{name}")), tick());
            let created = ProjectEvent::Created(ProjectCreated {
                command_id: command.envelope.id,
                name: name.clone(),
                path,
                description: Some(self.texts.prompt(p).to_owned()),
                tags: vec!["bench".into()],
                max_concurrent_runners: 8,
            });
            let event = NewEntry::of(
                &created,
                ORCHESTRATOR,
                format!("project-{name}"),
                1,
                &name,
                tick(),
            )
            .caused_by(&command.envelope);
            received.push(Received::of(event)?);
            own.push(command);
            let budget = id();
            let (command, event) = self.budget(budget, BudgetScope::Project, Some(&name), tick());
            own.push(command);
            received.push(Received::of(event)?);
            self.projects.push(Project {
                name,
                version: 1,
                budget,
                runners: 0,
                sessions: Vec::new(),
            });
        }
        let (command, event) = self.budget(id(), BudgetScope::Global, None, tick());
        own.push(command);
        received.push(Received::of(event)?);
        self.events += received.len() as u64;
        Ok((own, received))
    }

    /// A budget's `budget.create` and its `budget.created`.
    fn budget(
        &mut self,
        budget_id: Uuid,
        scope: BudgetScope,
        target: Option<&str>,
        at: DateTime<Utc>,
    ) -> (NewEntry, NewEntry) {
        let (period, limit_usd) = match scope {
            BudgetScope::Global => (BudgetPeriod::Monthly, 5_000.0),
            _ => (BudgetPeriod::Daily, 40.0),
        };
        let create = BudgetCommand::Create(CreateBudget {
            budget_id,
            scope,
            target: target.map(str::to_owned),
            period,
            limit_tokens: None,
            limit_usd: Some(limit_usd),
            warn_percent: 80,
            action: BudgetAction::Warn,
        });
        let command = self.command(&create, &budget_id.to_string(), None, at);
        let created = BudgetEvent::Created(BudgetChanged {
            command_id: command.envelope.id,
            budget: BudgetDefinition {
                budget_id,
                scope,
                target: target.map(str::to_owned),
                period,
                time_zone: "UTC".into(),
                limit_tokens: None,
                limit_usd: Some(limit_usd),
                warn_percent: 80,
                action: BudgetAction::Warn,
            },
        });
        let event = NewEntry::of(
            &created,
            ORCHESTRATOR,
            format!("budget-{budget_id}"),
            1,
            budget_id.to_string(),
            at,
        )
        .caused_by(&command.envelope);
        (command, event)
    }

    /// The next wave of runners, launched together and interleaved.
    fn wave(&mut self) -> anyhow::Result<(Vec<NewEntry>, Vec<Received>)> {
        let wave_start =
            self.start + TimeDelta::hours(1) + TimeDelta::minutes(10) * i32::try_from(self.waves)?;
        self.waves += 1;
        let mut runs = Vec::with_capacity(self.shape.concurrent);
        for slot in 0..self.shape.concurrent {
            runs.push(self.run(wave_start + TimeDelta::milliseconds(i64::try_from(slot)?))?);
        }
        let step = TimeDelta::milliseconds(250);
        let mut at = wave_start + TimeDelta::seconds(1);
        let mut own = Vec::with_capacity(runs.len());
        let mut received = Vec::new();
        let mut queues: Vec<std::vec::IntoIter<NewEntry>> = Vec::with_capacity(runs.len());
        for run in runs {
            own.push(run.launch);
            queues.push(run.received.into_iter());
        }
        loop {
            let mut any = false;
            for queue in &mut queues {
                if let Some(mut entry) = queue.next() {
                    at += step;
                    entry.envelope.time = at;
                    received.push(Received::of(entry)?);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        // Sessions that ended in this wave may be resumed in later ones.
        for (project, session) in std::mem::take(&mut self.ended) {
            self.projects[project].sessions.push(session);
        }
        self.events += received.len() as u64;
        Ok((own, received))
    }
}
