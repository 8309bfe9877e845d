//! Scenario 1, the event pipeline: events appended to the orchestrator's
//! log (as the orchestrator appends them) go through the relay and
//! RabbitMQ into the gateway's inbox and its `projects` read model. The
//! relay and the gateway run as their own processes, as they are
//! deployed: in this process they would share one runtime's two workers
//! with the writer, whose every round trip would then wait behind their
//! batches.
//! Sustained throughput first (as fast as it goes), then end-to-end
//! latency at half of that rate, then the broker's and the database's own
//! limits for the same message and batch sizes, and the bare pipeline
//! (`bare_pipeline`): the same parts with nothing else, at its peak and at
//! the latency phase's load.

use super::bare_pipeline::{self, BareShape};
use super::baselines::{self, BrokerShape};
use crate::machine::{CpuMeter, CpuSource};
use crate::report::{Figure, ScenarioResult, Size, Target};
use crate::stack::Binaries;
use crate::stats::{self, Pacer};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use stratavore_events::project::{ProjectCreated, ProjectEvent};
use stratavore_store::{Log, NewEntry};
use uuid::Uuid;

/// What the bare pipeline is called where a figure is set beside it.
const BARE_NAME: &str = "bare pipeline: outbox → relay → quorum queue → inbox, nothing else";
/// The longest the pipeline may take to deliver everything.
const DRAIN_WITHIN: Duration = Duration::from_secs(600);
/// How often progress is counted (outside the throughput phase): a
/// tenth of a second.
const POLL: Duration = Duration::from_millis(100);
/// How often the throughput phase looks the last event's row up: a
/// lookup by key costs next to nothing, so it can be fine.
const LAST_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Events of the throughput phase (and of each baseline).
    events: u64,
    /// Events per append transaction (and rows per baseline INSERT).
    batch: usize,
    /// How long the latency phase offers its load.
    latency_span: Duration,
    /// Length of each project's description: sets the message size.
    description_len: usize,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                events: 20_000,
                batch: 10,
                latency_span: Duration::from_secs(20),
                description_len: 200,
            },
            Size::Smoke => Self {
                events: 200,
                batch: 10,
                latency_span: Duration::from_millis(500),
                description_len: 200,
            },
        }
    }
}

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let stack = Binaries::start(&["api-gateway", "outbox-relay"]).await?;
    let outcome = measure(&stack, Shape::of(size), r).await;
    stack.finish(outcome, r).await
}

async fn measure(stack: &Binaries, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let admin = stack.env.db.admin_pool().await?;
    let writer = stack.env.db.service_pool("session-orchestrator").await?;
    let log = Log::new("orchestrator", Duration::from_secs(5))
        .ok_or_else(|| anyhow::anyhow!("orchestrator is a schema name"))?;
    let description = "x".repeat(shape.description_len);
    let writes = Writer {
        pool: &writer,
        log: &log,
        description: &description,
        batch: shape.batch,
    };
    sqlx::query("CREATE SCHEMA bench").execute(&admin).await?;

    // Warm up: connections, the relay's lease, the consumer's channel.
    let (warm, _) = writes.append_all("warm", shape.batch as u64).await?;
    wait_applied(&admin, warm).await?;

    let meter = CpuMeter::start(cpu_sources(stack)?)?;
    let phase = throughput(&writes, &admin, shape.events, warm).await?;
    let cpu = meter.read()?;
    let peak = phase.applied_rate;
    let half = peak / 2.0;
    let latencies = latency_at(&writes, &admin, half, shape.latency_span).await?;

    let sample = writes.entry("sample", 0, Utc::now());
    let message = stratavore_bus::encode_event(sample.envelope.to_cloudevent()?)?;
    let relay_batch = outbox_relay::config::RelaySection::default().batch_size as usize;
    let prefetch = stratavore_consumer::ConsumerSection::default().batch_size;
    let broker = baselines::broker_rate(
        stack.env.broker.url(),
        &format!("{}.bench-baseline", stack.env.broker.prefix()),
        &message,
        BrokerShape {
            messages: shape.events,
            publish_batch: relay_batch,
            prefetch,
        },
    )
    .await?;
    let database =
        baselines::database_rate(&admin, shape.events, shape.batch, &sample.envelope.data).await?;
    // The same parts with nothing else: its peak, then its latency at the
    // load Stratavore's latency phase offered (half of Stratavore's peak)
    // for as long, so that the two latencies answer the same question.
    let bare_queue = format!("{}.bench-bare", stack.env.broker.prefix());
    let bare_shape = |messages: u64, offered_per_s: Option<f64>| BareShape {
        broker: BrokerShape {
            messages,
            publish_batch: relay_batch,
            prefetch,
        },
        write_batch: shape.batch,
        offered_per_s,
    };
    let bare_peak = bare_pipeline::run(
        &admin,
        stack.env.broker.url(),
        &bare_queue,
        &message,
        bare_shape(shape.events, None),
    )
    .await?
    .rate;
    let bare_events = ((half * shape.latency_span.as_secs_f64()) as u64).max(shape.batch as u64);
    let bare_latency = bare_pipeline::run(
        &admin,
        stack.env.broker.url(),
        &bare_queue,
        &message,
        bare_shape(bare_events, Some(half)),
    )
    .await?;
    let bare_summary = stats::summarise(&bare_latency.latencies)
        .ok_or_else(|| anyhow::anyhow!("the bare pipeline's latency phase measured nothing"))?;
    let (lower_name, lower) = stats::lower(
        ("bare lapin publisher with confirms + consumer", broker),
        ("bare INSERT+COMMIT", database),
    );

    r.param("events", shape.events)
        .param("append_batch_events", shape.batch as u64)
        .param("database_baseline_rows_per_commit", shape.batch as u64)
        .param("relay_batch", relay_batch as u64)
        .param("broker_baseline_publish_batch", relay_batch as u64)
        .param("consumer_batch_and_prefetch", u64::from(prefetch))
        .param("message_body_bytes", message.body.len() as u64)
        .param("latency_offered_events_per_s", half)
        .param("latency_span_s", shape.latency_span.as_secs_f64())
        .param(
            "bare_pipeline",
            "outbox table (the append batch per INSERT+COMMIT) → one reader publishing with \
             confirms (the relay batch) and saving its cursor → quorum queue → one consumer \
             inserting what is ready (up to the prefetch) with ON CONFLICT DO NOTHING, acking \
             after COMMIT; all in the bench process",
        )
        .param(
            "services",
            "gateway and relay as their own processes (the built binaries); \
             the bench appends as the orchestrator",
        );
    r.push(
        Figure::plain("throughput", peak, "events/s")
            .against(lower_name, lower)
            .target(Target::RatioAtLeast(0.5)),
    );
    let summary = stats::summarise(&latencies.total)
        .ok_or_else(|| anyhow::anyhow!("the latency phase measured nothing"))?;
    let [p50, p99] = Figure::percentiles(&summary, |p| format!("latency {p} at half peak"));
    r.push(p50).push(p99.target(Target::AtMost(20.0)));
    // Where the latency goes: each part's own p50 and p99 (the parts'
    // percentiles do not add up to the whole's).
    for (hop, samples) in HOPS.iter().zip(&latencies.hops) {
        if let Some(part) = stats::summarise(samples) {
            let [p50, p99] = Figure::percentiles(&part, |p| format!("latency {p}, {hop}"));
            r.push(p50).push(p99);
        }
    }
    r.push(
        Figure::plain("throughput against the bare pipeline", peak, "events/s")
            .against(BARE_NAME, bare_peak),
    );
    r.push(
        Figure::plain("bare pipeline throughput", bare_peak, "events/s").against(lower_name, lower),
    );
    let [p50, p99] = Figure::percentiles(&bare_summary, |p| {
        format!("bare pipeline latency {p} at the same load")
    });
    r.push(p50).push(p99);
    r.push(Figure::plain("broker baseline", broker, "msgs/s"));
    r.push(Figure::plain("database baseline", database, "rows/s"));
    r.push(Figure::plain(
        "stage: append",
        phase.append_rate,
        "events/s",
    ));
    r.push(Figure::plain(
        "stage: relay + broker + inbox insert",
        phase.delivered_rate,
        "events/s",
    ));
    r.push(Figure::plain("stage: drain (apply)", peak, "events/s"));
    // Who used the two cores while the events went through: what bounds
    // the throughput once every stage keeps pace with the writer.
    for (name, cores) in &cpu.by_source {
        r.push(Figure::plain(&format!("CPU: {name}"), *cores, "cores"));
    }
    r.push(Figure::plain("CPU: whole machine", cpu.machine, "cores"));
    r.push(Figure::plain(
        "CPU per event, whole machine",
        cpu.machine_seconds * 1e6 / shape.events as f64,
        "µs",
    ));
    r.note(format!(
        "stages of the throughput phase: appended in {:.2} s, all in the gateway's inbox after \
         {:.2} s, all applied after {:.2} s; latency samples {}, max {:.1} ms",
        phase.appended.as_secs_f64(),
        phase.delivered.as_secs_f64(),
        phase.applied.as_secs_f64(),
        summary.count,
        summary.max_ms
    ));
    admin.close().await;
    writer.close().await;
    Ok(())
}

/// The processes the pipeline runs in, for a [`CpuMeter`]: the writer is
/// this process (the bench appends as the orchestrator).
fn cpu_sources(stack: &Binaries) -> anyhow::Result<Vec<(String, CpuSource)>> {
    let pid = |service: &str| {
        stack
            .pid(service)
            .map(CpuSource::Pid)
            .ok_or_else(|| anyhow::anyhow!("{service} is not running"))
    };
    Ok(vec![
        (
            "writer (the bench)".into(),
            CpuSource::Pid(std::process::id()),
        ),
        ("outbox-relay".into(), pid("outbox-relay")?),
        ("api-gateway".into(), pid("api-gateway")?),
        ("Postgres".into(), CpuSource::Command("postgres")),
        ("RabbitMQ".into(), CpuSource::Command("beam.smp")),
    ])
}

/// Appends project events the way the orchestrator does: a batch per
/// transaction under the log's lock.
struct Writer<'a> {
    pool: &'a sqlx::PgPool,
    log: &'a Log,
    description: &'a str,
    batch: usize,
}

impl Writer<'_> {
    fn entry(&self, tag: &str, i: u64, time: DateTime<Utc>) -> NewEntry {
        let name = format!("{tag}-{i}");
        let event = ProjectEvent::Created(ProjectCreated {
            command_id: uuid::Uuid::now_v7(),
            name: name.clone(),
            path: format!("/srv/projects/{name}"),
            description: Some(self.description.to_owned()),
            tags: vec![],
            max_concurrent_runners: 5,
        });
        NewEntry::of(
            &event,
            "/stratavore/session-orchestrator",
            format!("project-{name}"),
            1,
            name,
            time,
        )
    }

    async fn append(&self, entries: &[NewEntry]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        self.log.append(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Append `count` events named `tag-<i>` as fast as one connection
    /// can; returns how many there are and the last one's message id.
    async fn append_all(&self, tag: &str, count: u64) -> anyhow::Result<(u64, Option<Uuid>)> {
        let mut i = 0;
        let mut last = None;
        while i < count {
            let n = (count - i).min(self.batch as u64);
            let entries: Vec<NewEntry> =
                (i..i + n).map(|k| self.entry(tag, k, Utc::now())).collect();
            self.append(&entries).await?;
            last = entries.last().map(|e| e.envelope.id);
            i += n;
        }
        Ok((count, last))
    }
}

/// How the throughput phase went.
struct Phase {
    appended: Duration,
    delivered: Duration,
    applied: Duration,
    append_rate: f64,
    delivered_rate: f64,
    applied_rate: f64,
}

/// Append `events` as fast as possible while watching the gateway's inbox:
/// the time every event was received and every event applied.
async fn throughput(
    writes: &Writer<'_>,
    admin: &sqlx::PgPool,
    events: u64,
    already: u64,
) -> anyhow::Result<Phase> {
    let target = i64::try_from(already + events)?;
    let started = Instant::now();
    let (last_tx, last_rx) = tokio::sync::oneshot::channel();
    let (appended, watched) = tokio::join!(
        async {
            let (_, last) = writes.append_all("load", events).await?;
            let _ = last_tx.send(last);
            anyhow::Ok(started.elapsed())
        },
        async {
            // Nothing can be delivered before the writer is done, so the
            // watch starts then, and follows the last event's row by its
            // key (a lookup, where a count of the inbox took 14 ms of
            // Postgres a poll, a seventh of a core at ten a second, taken
            // from the pipeline it measures). Rows are applied in the
            // order they were appended unless a batch was delivered
            // again, so once the last is applied the whole count is read
            // once, and read again until it is complete.
            let Ok(Some(last)) = last_rx.await else {
                anyhow::bail!("the writer appended nothing");
            };
            let mut delivered = None;
            loop {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM gateway.inbox WHERE message_id = $1")
                        .bind(last)
                        .fetch_optional(admin)
                        .await?;
                if delivered.is_none() && status.is_some() {
                    delivered = Some(started.elapsed());
                }
                if status.as_deref() == Some("applied") {
                    let at = started.elapsed();
                    let (received, applied) = counts(admin).await?;
                    if applied >= target {
                        return anyhow::Ok((delivered.unwrap_or(at), at));
                    }
                    tracing::info!(
                        received,
                        applied,
                        target,
                        "the last event was applied before others; counting until all are"
                    );
                    wait_applied(admin, u64::try_from(target)?).await?;
                    let at = started.elapsed();
                    return anyhow::Ok((delivered.unwrap_or(at), at));
                }
                anyhow::ensure!(
                    started.elapsed() < DRAIN_WITHIN,
                    "the last event was not applied within {DRAIN_WITHIN:?}"
                );
                tokio::time::sleep(LAST_POLL).await;
            }
        }
    );
    let appended = appended?;
    let (delivered, applied) = watched?;
    let per = |d: Duration| {
        stats::rate(events, d).ok_or_else(|| anyhow::anyhow!("the throughput phase took no time"))
    };
    Ok(Phase {
        appended,
        delivered,
        applied,
        append_rate: per(appended)?,
        delivered_rate: per(delivered)?,
        applied_rate: per(applied)?,
    })
}

/// Offer `rate` events a second for `span`, a batch per transaction, each
/// event timed from when it was due; returns every event's time from due
/// to applied. The time it was applied is stamped by a trigger on the
/// gateway's inbox (`clock_timestamp()`, the same host clock as the
/// writer's), inside the transaction that applies it.
async fn latency_at(
    writes: &Writer<'_>,
    admin: &sqlx::PgPool,
    rate: f64,
    span: Duration,
) -> anyhow::Result<Latencies> {
    sqlx::query("CREATE TABLE bench.applied (at timestamptz NOT NULL, ids uuid[] NOT NULL)")
        .execute(admin)
        .await?;
    // A message is applied either on receipt (its row goes in applied) or
    // by the inbox's drain (its row turns applied). The stamp is taken once
    // per statement over its transition table, not by a function run for
    // every row, and written as one row with the statement's ids: it runs
    // inside the transaction it times, and a row per message (an index
    // entry, a unique check) cost Postgres about 7 µs a message alone,
    // several times that on a busy machine.
    sqlx::query(
        "CREATE FUNCTION bench.record_applied() RETURNS trigger LANGUAGE plpgsql
         SECURITY DEFINER SET search_path = bench AS $$
         BEGIN
             IF TG_OP = 'INSERT' THEN
                 INSERT INTO bench.applied
                 SELECT clock_timestamp(), array_agg(message_id)
                 FROM new_rows WHERE status = 'applied'
                 HAVING count(*) > 0;
             ELSE
                 INSERT INTO bench.applied
                 SELECT clock_timestamp(), array_agg(n.message_id)
                 FROM new_rows n JOIN old_rows o USING (message_id)
                 WHERE n.status = 'applied' AND o.status <> 'applied'
                 HAVING count(*) > 0;
             END IF;
             RETURN NULL;
         END $$",
    )
    .execute(admin)
    .await?;
    sqlx::query(
        "CREATE TRIGGER bench_applied AFTER UPDATE ON gateway.inbox
         REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION bench.record_applied()",
    )
    .execute(admin)
    .await?;
    sqlx::query(
        "CREATE TRIGGER bench_applied_on_receipt AFTER INSERT ON gateway.inbox
         REFERENCING NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION bench.record_applied()",
    )
    .execute(admin)
    .await?;
    let (before, _) = counts(admin).await?;
    let batch = writes.batch as u64;
    let pacer = Pacer::new(rate / batch as f64);
    let batches = pacer.count_in(span).max(1);
    let start = Instant::now();
    let start_wall = Utc::now();
    for k in 0..batches {
        let due = pacer.due(k);
        tokio::time::sleep_until((start + due).into()).await;
        let time = start_wall + chrono::Duration::from_std(due)?;
        let entries: Vec<NewEntry> = (k * batch..(k + 1) * batch)
            .map(|i| writes.entry("latency", i, time))
            .collect();
        writes.append(&entries).await?;
    }
    wait_applied(admin, u64::try_from(before)? + batches * batch).await?;
    // `recorded_at` is the append's transaction start, `received_at` the
    // consumer's (both `now()`), so each event's way splits in three.
    let rows: Vec<(f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM a.at - l.time)::float8,
                extract(epoch FROM l.recorded_at - l.time)::float8,
                extract(epoch FROM i.received_at - l.recorded_at)::float8,
                extract(epoch FROM a.at - i.received_at)::float8
         FROM (SELECT u.message_id, min(b.at) AS at
               FROM bench.applied b, unnest(b.ids) AS u(message_id)
               GROUP BY u.message_id) a
         JOIN orchestrator.log l USING (message_id)
         JOIN gateway.inbox i USING (message_id)",
    )
    .fetch_all(admin)
    .await?;
    let at = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let mut latencies = Latencies::default();
    for (total, append, delivery, apply) in rows {
        latencies.total.push(at(total));
        latencies.hops[0].push(at(append));
        latencies.hops[1].push(at(delivery));
        latencies.hops[2].push(at(apply));
    }
    Ok(latencies)
}

/// The latency phase's events: each one's whole way, and its parts.
#[derive(Default)]
struct Latencies {
    total: Vec<Duration>,
    /// In the order of [`HOPS`].
    hops: [Vec<Duration>; 3],
}

/// The parts of an event's way, as the latency phase splits it: from its
/// due time to its append's start (the writer's own lateness); on to the
/// consumer's transaction's start (the append and its commit, the relay,
/// the broker, and the consumer's wait for its turn); on to its applied
/// stamp (the consumer's transaction).
const HOPS: [&str; 3] = [
    "due → append",
    "append → consumer transaction",
    "consumer transaction → applied",
];

/// Messages in the gateway's inbox: (received in any state, applied). It
/// counts the whole inbox (14 ms of Postgres at 20,000 rows), so it is
/// polled only while no load is timed: after the warm-up and after the
/// latency phase's writes; the throughput phase reads it once at its end.
async fn counts(admin: &sqlx::PgPool) -> anyhow::Result<(i64, i64)> {
    let (total, waiting, other): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gateway.inbox),
                (SELECT count(*) FROM gateway.inbox WHERE status = 'received'),
                (SELECT count(*) FROM gateway.inbox WHERE status IN ('dead', 'skipped'))",
    )
    .fetch_one(admin)
    .await?;
    anyhow::ensure!(other == 0, "{other} inbox rows are dead or skipped");
    Ok((total, total - waiting))
}

async fn wait_applied(admin: &sqlx::PgPool, total: u64) -> anyhow::Result<()> {
    let total = i64::try_from(total)?;
    let started = Instant::now();
    loop {
        let (_, applied) = counts(admin).await?;
        if applied >= total {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_WITHIN,
            "only {applied} of {total} events applied within {DRAIN_WITHIN:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
