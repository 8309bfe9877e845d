//! The least any pipeline of this design can do per event, built from the
//! same parts with nothing else in it: a writer commits rows into an outbox
//! table (the pipeline's batch per INSERT and COMMIT), a relay reads them
//! above its cursor, publishes each with confirms into a durable quorum
//! queue (the relay's batch) and saves its cursor, and a consumer inserts
//! each delivery batch into an inbox table (`ON CONFLICT DO NOTHING`, the
//! duplicate check any inbox needs) and acks it after the commit. All three
//! run at once in this process on one runtime, as in the broker baseline.
//!
//! No stream order, projection, envelope parsing, lease or retry: so its
//! rate is a ceiling for any outbox → broker → inbox pipeline on this
//! machine, and Stratavore's rate divided by it says how much of that
//! ceiling Stratavore's own work costs. Each of the two baselines uses the
//! whole machine alone; a pipeline does the work of both (and a second
//! write) on the same cores, which is what this figure measures.

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::ShortString;
use sqlx::{Acquire, PgPool};
use std::time::{Duration, Instant};
use stratavore_bus::AmqpMessage;
use uuid::Uuid;

use super::baselines::{BrokerShape, QueueEnds};
use crate::stats::Pacer;

/// How the bare pipeline is fed and sized.
#[derive(Debug, Clone, Copy)]
pub struct BareShape {
    /// The broker side: messages, the relay's batch, the consumer's
    /// prefetch (also its largest insert).
    pub broker: BrokerShape,
    /// Rows per outbox INSERT and COMMIT.
    pub write_batch: usize,
    /// None: the writer goes as fast as it can. Some(rate): it offers
    /// `rate` events a second, a batch at a time, each timed from when it
    /// was due.
    pub offered_per_s: Option<f64>,
}

/// What one run of the bare pipeline gave.
#[derive(Debug, Clone)]
pub struct BareRun {
    /// Events per second from the first write until the last was in the
    /// inbox.
    pub rate: f64,
    /// Each event's time from when it was due (or written, unpaced) to its
    /// inbox commit (stamped by `clock_timestamp()` in the inbox insert).
    pub latencies: Vec<Duration>,
}

/// The longest any stage may wait for the next piece of work before the
/// run counts as stuck.
const STALL: Duration = Duration::from_secs(60);
/// The relay's wait after a read that found less than a batch: the real
/// relay's first wait (`idle_poll_min_ms`). The real one backs off to
/// 10 ms while its log stays empty; this one never does, which can only
/// favour the bare pipeline's latency, as a ceiling should.
const IDLE: Duration = Duration::from_millis(1);

/// Run the bare pipeline once, in fresh tables and through `queue`.
pub async fn run(
    admin: &PgPool,
    url: &str,
    queue: &str,
    message: &AmqpMessage,
    shape: BareShape,
) -> anyhow::Result<BareRun> {
    sqlx::query("CREATE SCHEMA IF NOT EXISTS bench")
        .execute(admin)
        .await?;
    for ddl in SETUP {
        sqlx::query(ddl).execute(admin).await?;
    }
    let QueueEnds {
        publisher,
        consumer,
        channel: pub_channel,
        consumer_channel: _consumer_channel,
        deliveries,
    } = QueueEnds::open(url, queue, shape.broker.prefetch, "bench-bare").await?;

    let started = Instant::now();
    let total = shape.broker.messages;
    let consume = tokio::spawn(consume(
        admin.clone(),
        deliveries,
        total,
        shape.broker.prefetch,
    ));
    // The relay task takes the channel; the queue is deleted through a
    // clone of it once the task is done.
    let closing = pub_channel.clone();
    let relay = tokio::spawn(relay(
        admin.clone(),
        pub_channel,
        message.clone(),
        queue.to_owned(),
        total,
        shape.broker.publish_batch,
    ));
    write(admin, total, shape, message).await?;
    relay.await??;
    let finished = consume.await??;

    let latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM i.at - o.due)::float8
         FROM bench.bare_inbox i JOIN bench.bare_outbox o USING (id)",
    )
    .fetch_all(admin)
    .await?;
    anyhow::ensure!(
        latencies.len() as u64 == total,
        "the bare pipeline's inbox holds {} of {total} events",
        latencies.len()
    );
    QueueEnds::close(publisher, consumer, &closing, queue).await?;
    sqlx::query(SETUP[0]).execute(admin).await?;
    Ok(BareRun {
        rate: crate::stats::rate(total, finished - started)
            .ok_or_else(|| anyhow::anyhow!("the bare pipeline took no time"))?,
        latencies: latencies
            .into_iter()
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
            .collect(),
    })
}

/// The run's tables, in the `bench` schema of the scenario's own database
/// (made afresh for each run, so that runs do not see each other's rows).
const SETUP: [&str; 5] = [
    "DROP TABLE IF EXISTS bench.bare_outbox, bench.bare_inbox, bench.bare_cursor",
    "CREATE TABLE bench.bare_outbox (position bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE,
         stream text NOT NULL, data jsonb NOT NULL, due timestamptz NOT NULL,
         recorded_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE bench.bare_inbox (id uuid PRIMARY KEY, data jsonb NOT NULL,
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE bench.bare_cursor (position bigint NOT NULL)",
    "INSERT INTO bench.bare_cursor VALUES (0)",
];

/// The writer: `write_batch` rows per INSERT and COMMIT, paced or not.
async fn write(
    admin: &PgPool,
    total: u64,
    shape: BareShape,
    message: &AmqpMessage,
) -> anyhow::Result<()> {
    let data = String::from_utf8(message.body.clone())?;
    let batch = shape.write_batch.max(1) as u64;
    let pacer = shape.offered_per_s.map(|r| Pacer::new(r / batch as f64));
    let mut conn = admin.acquire().await?;
    let start = Instant::now();
    let start_wall = chrono::Utc::now();
    let mut done = 0u64;
    let mut k = 0u64;
    while done < total {
        let due = match pacer {
            Some(p) => {
                let due = p.due(k);
                tokio::time::sleep_until((start + due).into()).await;
                start_wall + chrono::Duration::from_std(due)?
            }
            None => chrono::Utc::now(),
        };
        let n = (total - done).min(batch) as usize;
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let streams: Vec<String> = ids.iter().map(|id| format!("bare-{id}")).collect();
        let datas = vec![data.clone(); n];
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO bench.bare_outbox (id, stream, data, due)
             SELECT id, stream, data::jsonb, $4 FROM unnest($1::uuid[], $2::text[], $3::text[])
                 AS r(id, stream, data)",
        )
        .bind(&ids)
        .bind(&streams)
        .bind(&datas)
        .bind(due)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += n as u64;
        k += 1;
    }
    Ok(())
}

/// The relay: read above the cursor, publish with confirms, save the
/// cursor; again at once after a full batch, after [`IDLE`] otherwise.
async fn relay(
    admin: PgPool,
    channel: lapin::Channel,
    message: AmqpMessage,
    queue: String,
    total: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let mut conn = admin.acquire().await?;
    let mut cursor = 0i64;
    let mut sent = 0u64;
    let mut idle_since = Instant::now();
    while sent < total {
        let rows: Vec<(i64, Uuid, String)> = sqlx::query_as(
            "SELECT position, id, data::text FROM bench.bare_outbox
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(cursor)
        .bind(batch as i64)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            anyhow::ensure!(
                idle_since.elapsed() < STALL,
                "the bare relay found nothing to publish for {STALL:?} after {sent}"
            );
            tokio::time::sleep(IDLE).await;
            continue;
        };
        let mut confirms = Vec::with_capacity(rows.len());
        for (_, id, data) in &rows {
            let properties = message
                .properties
                .clone()
                .with_message_id(ShortString::from(id.to_string()))
                .with_delivery_mode(2);
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        data.as_bytes(),
                        properties,
                    )
                    .await?,
            );
        }
        for c in confirms {
            anyhow::ensure!(c.await?.is_ack(), "the broker refused a bare message");
        }
        sqlx::query("UPDATE bench.bare_cursor SET position = $1")
            .bind(last)
            .execute(&mut *conn)
            .await?;
        cursor = last;
        sent += rows.len() as u64;
        idle_since = Instant::now();
        if rows.len() < batch {
            tokio::time::sleep(IDLE).await;
        }
    }
    Ok(())
}

/// The consumer: every delivery ready (up to the prefetch) inserted in one
/// transaction, acked together after its commit. Returns when the last
/// was committed.
async fn consume(
    admin: PgPool,
    mut deliveries: lapin::Consumer,
    total: u64,
    prefetch: u16,
) -> anyhow::Result<Instant> {
    let mut conn = admin.acquire().await?;
    let mut received = 0u64;
    while received < total {
        let first = tokio::time::timeout(STALL, deliveries.next())
            .await
            .map_err(|_| anyhow::anyhow!("no bare delivery for {STALL:?} after {received}"))?
            .ok_or_else(|| anyhow::anyhow!("the bare consumer ended after {received}"))??;
        let mut batch = vec![first];
        while batch.len() < usize::from(prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(d)) => batch.push(d?),
                _ => break,
            }
        }
        let mut ids = Vec::with_capacity(batch.len());
        let mut datas = Vec::with_capacity(batch.len());
        for d in &batch {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok())
                .ok_or_else(|| anyhow::anyhow!("a bare delivery has no message id"))?;
            ids.push(id);
            datas.push(String::from_utf8_lossy(&d.data).into_owned());
        }
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO bench.bare_inbox (id, data)
             SELECT id, data::jsonb FROM unnest($1::uuid[], $2::text[]) AS r(id, data)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&datas)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        received += batch.len() as u64;
    }
    Ok(Instant::now())
}
