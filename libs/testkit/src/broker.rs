//! A broker prefix per test: the whole topology declared under it, deleted
//! at the end; and an outside subscriber that uses no Stratavore code on its
//! receiving side (a plain queue bound to the events exchange).

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, message::Delivery};
use std::time::{Duration, Instant};
use stratavore_bus::{Topology, connect};

/// The broker URL tests use: `STRATAVORE_TEST_AMQP_URL`, else the machine's.
pub fn shared_amqp_url() -> String {
    std::env::var("STRATAVORE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A prefix of a test's own on a broker, with the topology declared.
#[derive(Debug)]
pub struct TestBroker {
    url: String,
    topology: Topology,
    extra_queues: std::sync::Mutex<Vec<String>>,
    cleaned: bool,
}

/// The delivery limit tests declare queues with: the services' default, so
/// a service started by a test declares the same queue arguments.
pub fn test_delivery_limit() -> u32 {
    stratavore_runtime::BrokerSection::default().delivery_limit
}

impl TestBroker {
    /// A fresh prefix on the shared broker, topology declared.
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_on(&shared_amqp_url()).await
    }

    /// A fresh prefix on the broker at `url`, topology declared.
    pub async fn create_on(url: &str) -> anyhow::Result<Self> {
        Self::create_with_delivery_limit(url, test_delivery_limit()).await
    }

    /// A fresh prefix whose queues have their own delivery limit (the
    /// services of the test must be configured with the same).
    pub async fn create_with_delivery_limit(
        url: &str,
        delivery_limit: u32,
    ) -> anyhow::Result<Self> {
        let prefix = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let topology = Topology::new(prefix, delivery_limit);
        let conn = connect(url, "testkit").await?;
        let channel = conn.create_channel().await?;
        topology.declare_all(&channel).await?;
        conn.close(200, "declared".into()).await?;
        Ok(Self {
            url: url.to_owned(),
            topology,
            extra_queues: Default::default(),
            cleaned: false,
        })
    }

    /// The AMQP URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The topology (names under this test's prefix).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        self.topology.prefix()
    }

    /// A new connection to the broker.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Ok(connect(&self.url, "testkit").await?)
    }

    /// Bind a subscriber queue of the test's own to the events exchange.
    pub async fn subscribe_events(&self, binding: &str) -> anyhow::Result<Subscriber> {
        self.subscribe(&self.topology.events_exchange(), binding)
            .await
    }

    /// Bind a subscriber queue of the test's own to `exchange`.
    pub async fn subscribe(&self, exchange: &str, binding: &str) -> anyhow::Result<Subscriber> {
        let name = format!(
            "{}.test-subscriber.{}",
            self.prefix(),
            uuid::Uuid::new_v4().simple()
        );
        let conn = self.connect().await?;
        let channel = conn.create_channel().await?;
        // A plain durable classic queue, as an outside subscriber would
        // declare: it keeps messages across a subscriber reconnect.
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                name.as_str().into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if let Ok(mut q) = self.extra_queues.lock() {
            q.push(name.clone());
        }
        let consumer = channel
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Subscriber {
            _conn: conn,
            _channel: channel,
            consumer,
            queue: name,
        })
    }

    /// Delete these queues too at the end (queues a test or a service
    /// declared beyond the provisioned topology, such as a node's).
    pub fn track_queues(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut q) = self.extra_queues.lock() {
            q.extend(names);
        }
    }

    /// Track the queues a supervisor node declares for itself.
    pub fn track_node(&self, node: &str, root_keys: &[String]) {
        let names = self
            .topology
            .node_queues(node, root_keys)
            .into_iter()
            .flat_map(|spec| {
                let dlq = Topology::dead_letter_queue(&spec.name);
                [spec.name, dlq]
            });
        self.track_queues(names);
    }

    /// Delete every queue and exchange of this prefix.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.cleaned = true;
        delete_all(&self.url, &self.topology, &self.extra()).await
    }

    fn extra(&self) -> Vec<String> {
        self.extra_queues
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (url, topology, extra) = (self.url.clone(), self.topology.clone(), self.extra());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(delete_all(&url, &topology, &extra));
            }
        })
        .join();
    }
}

async fn delete_all(url: &str, topology: &Topology, extra: &[String]) -> anyhow::Result<()> {
    let conn = connect(url, "testkit-cleanup").await?;
    let mut channel = conn.create_channel().await?;
    for queue in topology.all_queue_names().iter().chain(extra) {
        // A missing queue closes the channel; open a new one and go on.
        if channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .is_err()
        {
            channel = conn.create_channel().await?;
        }
    }
    for exchange in topology.all_exchange_names() {
        if channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .is_err()
        {
            channel = conn.create_channel().await?;
        }
    }
    conn.close(200, "cleaned".into()).await?;
    Ok(())
}

/// A plain consumer of a queue of the test's own.
pub struct Subscriber {
    _conn: Connection,
    _channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
}

impl Subscriber {
    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery (acked), or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<Delivery>> {
        match tokio::time::timeout(timeout, self.consumer.next()).await {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(delivery)) => {
                let delivery = delivery?;
                delivery.ack(BasicAckOptions::default()).await?;
                Ok(Some(delivery))
            }
        }
    }

    /// Collect deliveries until `done` says enough, or fail after `timeout`.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Delivery]) -> bool,
    ) -> anyhow::Result<Vec<Delivery>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!("timed out after {timeout:?} with {} deliveries", got.len());
            }
            if let Some(d) = self.next(left).await? {
                got.push(d);
            }
        }
        Ok(got)
    }
}
