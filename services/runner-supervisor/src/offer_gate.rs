//! The node's offer consumers, consumed only while it has room: at
//! capacity they stop (their unacknowledged offer returns to the queue for
//! another node), and start again when a runner ends. The control queue is
//! consumed always, elsewhere.
//!
//! With a prefetch of 1 per offer queue, a node can exceed its capacity by
//! at most one runner per offer queue, between two checks.

use crate::handlers::Supervisor;
use std::time::Duration;
use stratavore_bus::Topology;
use stratavore_consumer::{Consumer, ConsumerSettings, Drainer};
use stratavore_runtime::{Readiness, Shutdown};

/// Starts and stops the offer consumers.
pub struct OfferGate {
    /// The node's offer queues (its own and one per root).
    pub queues: Vec<String>,
    /// Applies what was received.
    pub drainer: Drainer<Supervisor>,
    /// AMQP URL.
    pub broker_url: String,
    /// Names.
    pub topology: Topology,
    /// Settings of a consumer (the queue and prefetch are set per queue).
    pub settings: ConsumerSettings,
    /// Health.
    pub readiness: Readiness,
    /// The service's shutdown: the consumers are its tasks.
    pub shutdown: Shutdown,
    running: Option<Shutdown>,
}

impl OfferGate {
    /// A gate, closed.
    pub fn new(
        queues: Vec<String>,
        drainer: Drainer<Supervisor>,
        broker_url: String,
        topology: Topology,
        settings: ConsumerSettings,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            queues,
            drainer,
            broker_url,
            topology,
            settings,
            readiness,
            shutdown,
            running: None,
        }
    }

    /// Open or close the gate for `used` of `capacity` slots.
    pub fn adjust(&mut self, used: u64, capacity: u64) {
        if used >= capacity {
            self.close();
        } else {
            self.open();
        }
    }

    fn open(&mut self) {
        if self.running.is_some() || self.shutdown.is_triggered() {
            return;
        }
        let scope = self.shutdown.child();
        for queue in &self.queues {
            let consumer = Consumer {
                drainer: self.drainer.clone(),
                broker_url: self.broker_url.clone(),
                topology: self.topology.clone(),
                settings: ConsumerSettings {
                    queue: queue.clone(),
                    // One offer at a time: what this node holds unclaimed is
                    // invisible to every other node of the root.
                    batch_size: 1,
                    ..self.settings.clone()
                },
                readiness: self.readiness.clone(),
            };
            let scope = scope.clone();
            self.shutdown.spawn(format!("{queue} consumer"), async move {
                consumer.run(scope.clone()).await;
                // The consumer's sweeper and dead-letter consumer belong to
                // the scope: wait for them too.
                if let Err(e) = scope.wait_for_tasks(Duration::from_secs(10)).await {
                    tracing::warn!(error = %e, "an offer consumer's tasks did not stop in time");
                }
            });
        }
        tracing::info!(queues = ?self.queues, "consuming offers");
        self.running = Some(scope);
    }

    fn close(&mut self) {
        if let Some(scope) = self.running.take() {
            tracing::info!("at capacity: no more offers until a runner ends");
            scope.trigger();
        }
    }
}
