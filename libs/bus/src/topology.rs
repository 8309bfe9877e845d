//! The broker topology of DESIGN.md section 2: every exchange and queue name
//! under one configurable prefix, declared idempotently by provisioning and
//! again by each service at start.

use crate::connection::BrokerError;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The services that own a durable inbox queue.
pub const QUEUED_SERVICES: &[&str] = &["session-orchestrator", "agent-registry", "api-gateway"];

/// A queue and what feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Full queue name.
    pub name: String,
    /// (exchange, binding key) pairs.
    pub bindings: Vec<(String, String)>,
    /// One active consumer at a time, so deliveries are handled in order and
    /// replicas stand by. False only for the shared offer queues.
    pub single_active_consumer: bool,
    /// Whether failed deliveries go to `<name>.dlq` through the DLX.
    pub dead_letters: bool,
}

/// The topology was refused by the broker (usually a queue declared before
/// with other arguments).
#[derive(Debug, thiserror::Error)]
#[error("declaring {what} failed: {source}")]
pub struct TopologyError {
    /// The exchange, queue or binding.
    pub what: String,
    /// lapin's error.
    #[source]
    pub source: lapin::Error,
}

impl From<TopologyError> for BrokerError {
    fn from(e: TopologyError) -> Self {
        BrokerError::Operation {
            operation: "topology declaration",
            source: e.source,
        }
    }
}

/// Names of every exchange and queue under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    /// The topology under `prefix`, with the given quorum-queue delivery limit
    /// (a safety net against crash loops; high, since RabbitMQ 3.10 counts
    /// every return toward it).
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Topic exchange for events (routing key `<aggregate>.<event>`).
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }
    /// Topic exchange for commands (routing key `<service>.<command>[.<node>]`).
    pub fn commands_exchange(&self) -> String {
        self.name("commands")
    }
    /// Topic exchange for telemetry; not persistent, no alternate exchange.
    pub fn live_exchange(&self) -> String {
        self.name("live")
    }
    /// Dead-letter exchange feeding every `<queue>.dlq`.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("dlx")
    }
    /// Fanout exchange that is the alternate exchange of events and commands.
    pub fn unroutable_exchange(&self) -> String {
        self.name("unroutable-ae")
    }
    /// The queue that keeps every message that matched no binding.
    pub fn unroutable_queue(&self) -> String {
        self.name("unroutable")
    }
    /// A service's inbox queue.
    pub fn service_queue(&self, service: &str) -> String {
        self.name(&format!("{service}.inbox"))
    }
    /// The dead-letter queue of a queue.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }
    /// A supervisor node's control queue.
    pub fn node_control_queue(&self, node: &str) -> String {
        self.name(&format!("runner-supervisor.control.{node}"))
    }

    /// The telemetry queue of one replica of a service (an orchestrator
    /// replica reads node heartbeats and its own ticks from it).
    pub fn replica_live_queue(&self, service: &str, replica: &str) -> String {
        self.name(&format!("{service}.live.{replica}"))
    }

    /// Declare a telemetry queue that belongs to the connection declaring
    /// it, bound to the live exchange with each of `keys`. Telemetry is not
    /// state, so the queue is not kept for anyone: classic, non-durable,
    /// exclusive (no other connection may consume it) and auto-delete (it
    /// goes with its connection; declare it again after a reconnect).
    /// Unread messages expire after `message_ttl_ms`, all alike, so a
    /// stalled reader loses old messages in the order they came rather
    /// than piling them up. Idempotent on the same connection.
    pub async fn declare_live_queue(
        &self,
        channel: &Channel,
        name: &str,
        keys: &[String],
        message_ttl_ms: u64,
    ) -> Result<(), TopologyError> {
        let options = QueueDeclareOptions {
            durable: false,
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(message_ttl_ms).unwrap_or(i64::MAX)),
        );
        channel
            .queue_declare(name.into(), options, args)
            .await
            .map_err(|source| TopologyError {
                what: format!("queue {name}"),
                source,
            })?;
        for key in keys {
            bind_queue(channel, name, &self.live_exchange(), key).await?;
        }
        Ok(())
    }

    /// The durable queues every installation has, with their bindings.
    pub fn service_queues(&self) -> Vec<QueueSpec> {
        let events = self.events_exchange();
        let commands = self.commands_exchange();
        let bind = |ex: &String, key: &str| (ex.clone(), key.to_owned());
        let spec = |service: &str, bindings: Vec<(String, String)>| QueueSpec {
            name: self.service_queue(service),
            bindings,
            single_active_consumer: true,
            dead_letters: true,
        };
        vec![
            // The orchestrator owns projects, runners, sessions and budgets:
            // it takes their commands and the facts supervisors report.
            spec(
                "session-orchestrator",
                vec![
                    bind(&commands, "session-orchestrator.#"),
                    bind(&events, "process.#"),
                    bind(&events, "node.#"),
                ],
            ),
            // The registry follows runners and sessions to move tasks along.
            spec(
                "agent-registry",
                vec![
                    bind(&commands, "agent-registry.#"),
                    bind(&events, "runner.#"),
                    bind(&events, "session.#"),
                ],
            ),
            // The gateway keeps read models of everything.
            spec(
                "api-gateway",
                vec![bind(&commands, "api-gateway.#"), bind(&events, "#")],
            ),
        ]
    }

    /// A node's own offer queue (offers for sessions whose files it holds).
    pub fn node_offer_queue(&self, node: &str) -> String {
        self.name(&format!("runner-supervisor.offer.{node}"))
    }

    /// The offer queue shared by every node serving a project root
    /// (`root_key` names the root).
    pub fn root_offer_queue(&self, root_key: &str) -> String {
        self.name(&format!("runner-supervisor.offer.{root_key}"))
    }

    /// The queues a supervisor node declares for itself when it registers:
    /// its control queue (start, revoke and desired states, in order), its
    /// own offer queue, and the shared offer queue of each root it serves
    /// (consumed by every node of that root with prefetch 1, so no single
    /// active consumer there).
    pub fn node_queues(&self, node: &str, root_keys: &[String]) -> Vec<QueueSpec> {
        let commands = self.commands_exchange();
        let control_keys = ["start", "revoke", "control", "drain"]
            .iter()
            .map(|c| {
                (
                    commands.clone(),
                    format!("runner-supervisor.process.{c}.{node}"),
                )
            })
            .collect();
        let mut queues = vec![
            QueueSpec {
                name: self.node_control_queue(node),
                bindings: control_keys,
                single_active_consumer: true,
                dead_letters: true,
            },
            QueueSpec {
                name: self.node_offer_queue(node),
                bindings: vec![(
                    commands.clone(),
                    format!("runner-supervisor.process.offer.{node}"),
                )],
                single_active_consumer: true,
                dead_letters: true,
            },
        ];
        for key in root_keys {
            queues.push(QueueSpec {
                name: self.root_offer_queue(key),
                bindings: vec![(
                    commands.clone(),
                    format!("runner-supervisor.process.offer.{key}"),
                )],
                single_active_consumer: false,
                dead_letters: true,
            });
        }
        queues
    }

    fn queue_arguments(&self, spec: &QueueSpec) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        if spec.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        if spec.dead_letters {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from(self.dead_letter_exchange())),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(Self::dead_letter_queue(&spec.name))),
            );
        }
        args
    }

    /// Declare the exchanges, the unroutable queue, and every service queue
    /// with its DLQ. Idempotent.
    pub async fn declare_all(&self, channel: &Channel) -> Result<(), TopologyError> {
        self.declare_exchanges(channel).await?;
        for spec in self.service_queues() {
            self.declare_queue(channel, &spec).await?;
        }
        Ok(())
    }

    /// Declare the exchanges and the unroutable queue. Idempotent.
    pub async fn declare_exchanges(&self, channel: &Channel) -> Result<(), TopologyError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let ae = self.unroutable_exchange();
        declare_exchange(
            channel,
            &ae,
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        let unroutable = QueueSpec {
            name: self.unroutable_queue(),
            bindings: vec![(ae.clone(), String::new())],
            single_active_consumer: false,
            dead_letters: false,
        };
        self.declare_queue(channel, &unroutable).await?;
        let mut with_ae = FieldTable::default();
        with_ae.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(LongString::from(ae)),
        );
        for ex in [self.events_exchange(), self.commands_exchange()] {
            declare_exchange(channel, &ex, ExchangeKind::Topic, durable, with_ae.clone()).await?;
        }
        declare_exchange(
            channel,
            &self.live_exchange(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        declare_exchange(
            channel,
            &self.dead_letter_exchange(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    /// Declare one queue, its bindings and (when it dead-letters) its DLQ.
    pub async fn declare_queue(
        &self,
        channel: &Channel,
        spec: &QueueSpec,
    ) -> Result<(), TopologyError> {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        if spec.dead_letters {
            let dlq = Self::dead_letter_queue(&spec.name);
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
            channel
                .queue_declare(dlq.as_str().into(), options, args)
                .await
                .map_err(|source| TopologyError {
                    what: format!("queue {dlq}"),
                    source,
                })?;
            bind_queue(channel, &dlq, &self.dead_letter_exchange(), &dlq).await?;
        }
        channel
            .queue_declare(
                spec.name.as_str().into(),
                options,
                self.queue_arguments(spec),
            )
            .await
            .map_err(|source| TopologyError {
                what: format!("queue {}", spec.name),
                source,
            })?;
        for (exchange, key) in &spec.bindings {
            bind_queue(channel, &spec.name, exchange, key).await?;
        }
        Ok(())
    }

    /// Every queue name this topology declares at provisioning, DLQs and the
    /// unroutable queue included (for clean-up of test prefixes).
    pub fn all_queue_names(&self) -> Vec<String> {
        let mut names = vec![self.unroutable_queue()];
        for spec in self.service_queues() {
            names.push(Self::dead_letter_queue(&spec.name));
            names.push(spec.name);
        }
        names
    }

    /// Every exchange name this topology declares.
    pub fn all_exchange_names(&self) -> Vec<String> {
        vec![
            self.events_exchange(),
            self.commands_exchange(),
            self.live_exchange(),
            self.dead_letter_exchange(),
            self.unroutable_exchange(),
        ]
    }
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> Result<(), TopologyError> {
    channel
        .exchange_declare(name.into(), kind, options, args)
        .await
        .map_err(|source| TopologyError {
            what: format!("exchange {name}"),
            source,
        })
}

async fn bind_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), TopologyError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| TopologyError {
            what: format!("binding {queue} <- {exchange} [{key}]"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix() {
        let t = Topology::new("t-42", 100);
        for name in t
            .all_queue_names()
            .into_iter()
            .chain(t.all_exchange_names())
        {
            assert!(name.starts_with("t-42."), "{name}");
        }
        assert_eq!(t.service_queue("api-gateway"), "t-42.api-gateway.inbox");
        assert_eq!(
            Topology::dead_letter_queue("t-42.api-gateway.inbox"),
            "t-42.api-gateway.inbox.dlq"
        );
    }

    #[test]
    fn a_node_gets_its_control_queue_its_offer_queue_and_a_shared_queue_per_root() {
        let t = Topology::new("p", 100);
        let queues = t.node_queues("n1", &["root-ab".to_owned()]);
        let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "p.runner-supervisor.control.n1",
                "p.runner-supervisor.offer.n1",
                "p.runner-supervisor.offer.root-ab"
            ]
        );
        assert!(
            !queues[2].single_active_consumer,
            "every node of a root consumes its offers"
        );
        let control_keys: Vec<&str> = queues[0].bindings.iter().map(|(_, k)| k.as_str()).collect();
        assert!(
            !control_keys.contains(&"runner-supervisor.process.offer.n1"),
            "offers never reach the control queue"
        );
        assert!(
            control_keys.contains(&"runner-supervisor.process.drain.n1"),
            "a drain reaches the node in order with its other commands"
        );
        assert_eq!(
            t.replica_live_queue("session-orchestrator", "r1"),
            "p.session-orchestrator.live.r1"
        );
    }

    #[test]
    fn every_service_queue_is_single_active_and_dead_letters() {
        for spec in Topology::new("s", 100).service_queues() {
            assert!(
                spec.single_active_consumer && spec.dead_letters,
                "{}",
                spec.name
            );
            assert!(!spec.bindings.is_empty());
        }
    }
}
