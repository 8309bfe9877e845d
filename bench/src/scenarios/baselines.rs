//! The machine's own limits for the work the event pipeline does, measured
//! in the same run on the same servers: a bare lapin publisher with
//! confirms and a bare consumer (the broker's limit), and bare INSERT +
//! COMMIT (the database's limit). Both use the pipeline's message, batch
//! and prefetch sizes, so a ratio compares like with like.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use std::time::{Duration, Instant};
use stratavore_bus::AmqpMessage;

/// How the broker baseline publishes and consumes.
#[derive(Debug, Clone, Copy)]
pub struct BrokerShape {
    /// Messages in all.
    pub messages: u64,
    /// Messages published before their confirms are awaited together (the
    /// relay's batch).
    pub publish_batch: usize,
    /// The consumer's prefetch, acked as one multiple-ack per window (the
    /// consumer's batch).
    pub prefetch: u16,
}

/// Declare `queue` as a durable quorum queue, what a service queue is.
pub async fn declare_quorum_queue(channel: &lapin::Channel, queue: &str) -> anyhow::Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    Ok(())
}

/// Both ends of a quorum queue, each on a connection of its own: a
/// channel with publisher confirms, and a consumer with `prefetch`.
pub struct QueueEnds {
    /// The publisher's connection.
    pub publisher: lapin::Connection,
    /// The consumer's connection.
    pub consumer: lapin::Connection,
    /// The publisher's channel, in confirm mode.
    pub channel: lapin::Channel,
    /// The consumer's channel, kept open for as long as the deliveries
    /// are read (a dropped lapin channel closes).
    pub consumer_channel: lapin::Channel,
    /// The deliveries.
    pub deliveries: lapin::Consumer,
}

impl QueueEnds {
    /// Declare `queue` and open both ends; `name` names the connections
    /// and the consumer.
    pub async fn open(url: &str, queue: &str, prefetch: u16, name: &str) -> anyhow::Result<Self> {
        let publisher = stratavore_bus::connect(url, &format!("{name}-publisher")).await?;
        let consumer = stratavore_bus::connect(url, &format!("{name}-consumer")).await?;
        let channel = publisher.create_channel().await?;
        declare_quorum_queue(&channel, queue).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer_channel = consumer.create_channel().await?;
        consumer_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = consumer_channel
            .basic_consume(
                queue.into(),
                name.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            publisher,
            consumer,
            channel,
            consumer_channel,
            deliveries,
        })
    }

    /// Close both connections and delete `queue` through the publisher's
    /// `channel`. The consumer goes first: deleting a queue under a live
    /// consumer makes the broker cancel it, which lapin takes for a
    /// protocol error.
    pub async fn close(
        publisher: lapin::Connection,
        consumer: lapin::Connection,
        channel: &lapin::Channel,
        queue: &str,
    ) -> anyhow::Result<()> {
        let _ = consumer.close(200, "done".into()).await;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        publisher.close(200, "done".into()).await?;
        Ok(())
    }
}

/// Messages per second through a durable quorum queue (what a service
/// queue is), from the first publish until the last delivery is acked.
pub async fn broker_rate(
    url: &str,
    queue: &str,
    message: &AmqpMessage,
    shape: BrokerShape,
) -> anyhow::Result<f64> {
    let QueueEnds {
        publisher,
        consumer,
        channel: pub_channel,
        consumer_channel: _consumer_channel,
        mut deliveries,
    } = QueueEnds::open(url, queue, shape.prefetch, "bench-baseline").await?;
    let total = shape.messages;
    let window = u64::from(shape.prefetch);
    let consume = tokio::spawn(async move {
        let mut received = 0u64;
        while received < total {
            let delivery = tokio::time::timeout(Duration::from_secs(60), deliveries.next())
                .await
                .map_err(|_| anyhow::anyhow!("no delivery for 60 s after {received}"))?
                .ok_or_else(|| anyhow::anyhow!("the consumer ended after {received}"))??;
            received += 1;
            if received.is_multiple_of(window) || received == total {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        anyhow::Ok(Instant::now())
    });
    let properties = message.properties.clone().with_delivery_mode(2);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(shape.publish_batch as u64);
        let mut confirms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            confirms.push(
                pub_channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &message.body,
                        properties.clone(),
                    )
                    .await?,
            );
        }
        for c in confirms {
            anyhow::ensure!(c.await?.is_ack(), "the broker refused a baseline message");
        }
        sent += n;
    }
    let finished = consume.await??;
    QueueEnds::close(publisher, consumer, &pub_channel, queue).await?;
    crate::stats::rate(total, finished - started)
        .ok_or_else(|| anyhow::anyhow!("the broker baseline took no time"))
}

/// Rows per second committed by one connection, `batch` rows per INSERT
/// and COMMIT, each row carrying `payload` as jsonb (the log's own
/// shape: an id, a stream, the data), into a plain table of the same
/// database.
pub async fn database_rate(
    admin: &sqlx::PgPool,
    rows: u64,
    batch: usize,
    payload: &serde_json::Value,
) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench.baseline_rows (
             id uuid PRIMARY KEY, stream text NOT NULL, data jsonb NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(admin)
    .await?;
    let mut conn = admin.acquire().await?;
    let started = Instant::now();
    let mut done = 0u64;
    while done < rows {
        let n = (rows - done).min(batch as u64) as usize;
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let streams: Vec<String> = ids.iter().map(|id| format!("baseline-{id}")).collect();
        let datas = vec![payload.clone(); n];
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO bench.baseline_rows (id, stream, data)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])",
        )
        .bind(&ids)
        .bind(&streams)
        .bind(&datas)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += n as u64;
    }
    crate::stats::rate(rows, started.elapsed())
        .ok_or_else(|| anyhow::anyhow!("the database baseline took no time"))
}
