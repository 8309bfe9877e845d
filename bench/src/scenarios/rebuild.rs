//! Scenario 6, rebuild: the gateway's projections rebuilt (the operator's
//! `rebuild-projections`: one transaction, the shared rebuild of
//! `libs/consumer`) from a history of a million events, written straight
//! into the gateway's log and inbox by SQL: going through the bus would
//! measure the pipeline again, at a thousandth of the speed.
//!
//! The history is what a busy installation's gateway holds for its
//! projects: per project, the client's `project.create` command in the
//! gateway's own log, then `project.created` and eight `project.updated`
//! received from the orchestrator and applied. Messages are built by the
//! real catalogue (one template per type, serialised as the inbox stores
//! a delivery) and varied per row in SQL.

use crate::report::{Figure, ScenarioResult, Size, Target};
use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use stratavore_events::project::{
    CreateProject, ProjectCommand, ProjectCreated, ProjectEvent, ProjectUpdated,
};
use stratavore_store::{Log, NewEntry};
use stratavore_testkit::TestEnv;

/// Messages per project: one command, one created, eight updates.
const PER_PROJECT: i64 = 10;
/// Projects written per INSERT, so no statement holds the whole history.
const PROJECTS_PER_INSERT: i64 = 10_000;

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let projects = match size {
        Size::Full => 100_000,
        Size::Smoke => 100,
    };
    let env = TestEnv::new().await?;
    let outcome = measure(&env, projects, r).await;
    env.cleanup().await?;
    outcome
}

async fn measure(env: &TestEnv, projects: i64, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let admin = env.db.admin_pool().await?;
    let written = Instant::now();
    write_history(&admin, projects).await?;
    sqlx::query("ANALYZE gateway.log").execute(&admin).await?;
    sqlx::query("ANALYZE gateway.inbox").execute(&admin).await?;
    let write_time = written.elapsed();
    admin.close().await;

    let pool = env.db.service_pool("api-gateway").await?;
    let log = Log::new(api_gateway::SCHEMA, Duration::from_secs(5))
        .ok_or_else(|| anyhow::anyhow!("the gateway's schema is a plain name"))?;
    let started = Instant::now();
    let report = stratavore_consumer::rebuild::rebuild(
        &pool,
        &log,
        &api_gateway::service::GatewayService,
        api_gateway::SERVICE,
    )
    .await?;
    let elapsed = started.elapsed();
    let rebuilt: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let events = (report.own + report.received) as u64;
    anyhow::ensure!(
        events == u64::try_from(projects * PER_PROJECT)?,
        "the rebuild replayed {events} messages of {}",
        projects * PER_PROJECT
    );
    anyhow::ensure!(
        rebuilt == projects,
        "the rebuild left {rebuilt} of {projects} projects"
    );
    let rate = crate::stats::rate(events, elapsed)
        .ok_or_else(|| anyhow::anyhow!("the rebuild took no time"))?;
    r.param("events", events)
        .param("own_log_commands", report.own as u64)
        .param("received_events", report.received as u64)
        .param("projects", u64::try_from(projects)?)
        .param("history", "per project: project.create (own log), project.created + 8 project.updated (inbox, applied)")
        .param("history_written_in_s", write_time.as_secs_f64());
    r.push(Figure::plain("rebuild", rate, "events/s").target(Target::AtLeast(20_000.0)));
    r.push(Figure::plain(
        "rebuild wall time",
        elapsed.as_secs_f64(),
        "s",
    ));
    r.note("the history holds no session text, so the embedding worker has nothing to redo; its cache tables are outside the rebuilt set either way");
    Ok(())
}

/// The history of `projects` projects, written in slices.
async fn write_history(admin: &PgPool, projects: i64) -> anyhow::Result<()> {
    let templates = Templates::new()?;
    let mut from = 0;
    while from < projects {
        let to = (from + PROJECTS_PER_INSERT).min(projects);
        insert_commands(admin, &templates, from, to).await?;
        insert_received(admin, &templates, from, to).await?;
        from = to;
    }
    Ok(())
}

/// One stored form per message type, as the real catalogue writes it.
struct Templates {
    command_extensions: Value,
    created: Value,
    updated: Value,
}

impl Templates {
    fn new() -> anyhow::Result<Self> {
        let now = Utc::now();
        let command = NewEntry::of(
            &ProjectCommand::Create(CreateProject {
                name: "p".into(),
                path: "/srv/projects/p".into(),
                description: None,
                tags: vec![],
                max_concurrent_runners: None,
            }),
            "/stratavore/api-gateway",
            "command-x",
            1,
            "p",
            now,
        );
        let created = ProjectEvent::Created(ProjectCreated {
            command_id: uuid::Uuid::now_v7(),
            name: "p".into(),
            path: "/srv/projects/p".into(),
            description: None,
            tags: vec![],
            max_concurrent_runners: 5,
        });
        let updated = ProjectEvent::Updated(ProjectUpdated {
            command_id: uuid::Uuid::now_v7(),
            name: "p".into(),
            description: None,
            tags: vec![],
            max_concurrent_runners: 5,
        });
        let stored = |event: &ProjectEvent| -> anyhow::Result<Value> {
            let entry = NewEntry::of(
                event,
                "/stratavore/session-orchestrator",
                "project-p",
                1,
                "p",
                now,
            );
            Ok(serde_json::to_value(entry.envelope.to_cloudevent()?)?)
        };
        Ok(Self {
            command_extensions: command.envelope.extensions_json(),
            created: stored(&created)?,
            updated: stored(&updated)?,
        })
    }
}

/// Each project's `project.create` in the gateway's log.
async fn insert_commands(admin: &PgPool, t: &Templates, from: i64, to: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gateway.log (position, message_id, kind, stream, stream_version, type, subject,
                                  source, routing_key, time, data, extensions)
         SELECT nextval('gateway.log_position'), id, 'command', 'command-' || id, 1,
                'io.stratavore.command.project.create.v1', 'p' || i, '/stratavore/api-gateway',
                'session-orchestrator.project.create', now(),
                jsonb_build_object('name', 'p' || i, 'path', '/srv/projects/p' || i,
                                   'description', 'project number ' || i, 'tags', '[]'::jsonb),
                $1::jsonb || jsonb_build_object('correlationid', id)
         FROM (SELECT i, md5('command-' || i)::uuid AS id FROM generate_series($2 + 1, $3) AS i) s
         ORDER BY i",
    )
    .bind(&t.command_extensions)
    .bind(from)
    .bind(to)
    .execute(admin)
    .await?;
    Ok(())
}

/// Each project's created and updates, applied in the gateway's inbox.
async fn insert_received(admin: &PgPool, t: &Templates, from: i64, to: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO gateway.inbox (message_id, source_log, stream, stream_version, type, status,
                                    applied_seq, message)
         SELECT id, 'orchestrator', 'project-p' || i, v, type, 'applied',
                nextval('gateway.inbox_applied_seq'),
                (CASE WHEN v = 1 THEN $1::jsonb ELSE $2::jsonb END) || jsonb_build_object(
                    'id', id, 'subject', 'p' || i, 'stream', 'project-p' || i,
                    'sequence', lpad(v::text, 20, '0'),
                    'data', jsonb_build_object(
                        'command_id', CASE WHEN v = 1 THEN md5('command-' || i)::uuid
                                           ELSE md5('command-' || i || '-' || v)::uuid END,
                        'name', 'p' || i,
                        'description', 'revision ' || v || ' of project ' || i,
                        'tags', '[]'::jsonb, 'max_concurrent_runners', 5)
                        || CASE WHEN v = 1 THEN jsonb_build_object('path', '/srv/projects/p' || i)
                                ELSE '{}'::jsonb END)
         FROM (SELECT i, v, md5('event-' || i || '-' || v)::uuid AS id,
                      CASE WHEN v = 1 THEN 'io.stratavore.project.created.v1'
                           ELSE 'io.stratavore.project.updated.v1' END AS type
               FROM generate_series($3 + 1, $4) AS i, generate_series(1, $5) AS v) s
         ORDER BY i, v",
    )
    .bind(&t.created)
    .bind(&t.updated)
    .bind(from)
    .bind(to)
    .bind(PER_PROJECT - 1)
    .execute(admin)
    .await?;
    Ok(())
}
