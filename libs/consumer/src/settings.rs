//! The consumer's configuration section, shared by every consuming service.

use crate::amqp_loop::ConsumerSettings;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use stratavore_runtime::ConfigError;

/// `[consumer]` in a service's config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConsumerSection {
    /// Deliveries per batch (and the prefetch). 250, not 100: a consumer
    /// with a backlog spends a transaction's fixed statements (the fetch,
    /// each model's fold, the applied marks) on more messages; with 1,000
    /// agents reporting every second the gateway's usage lag p99 fell from
    /// 2.8-11 s to 1.7 s at 930 runners (`make bench`, supervision scale).
    /// A consumer without a backlog takes what is waiting, as before.
    pub batch_size: u16,
    /// How long a batch waits for more deliveries after its first.
    pub batch_linger_ms: u64,
    /// Messages applied per drain transaction at most: the waiting rows of
    /// every stream a delivery batch touched share one commit (250, as
    /// `batch_size`).
    pub drain_batch: u16,
    /// Attempts before a failing message is dead.
    pub max_attempts: i32,
    /// How often waiting streams are drained and the inbox measured.
    pub sweep_interval_ms: u64,
    /// A message waiting this long for its predecessor raises an alert.
    pub gap_alert_after_ms: u64,
}

impl Default for ConsumerSection {
    fn default() -> Self {
        Self {
            batch_size: 250,
            batch_linger_ms: 1,
            drain_batch: 250,
            max_attempts: 5,
            sweep_interval_ms: 2000,
            gap_alert_after_ms: 60_000,
        }
    }
}

impl ConsumerSection {
    /// Check the values, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::invalid(
                "consumer.batch_size",
                "must be positive",
            ));
        }
        if self.drain_batch == 0 {
            return Err(ConfigError::invalid(
                "consumer.drain_batch",
                "must be positive",
            ));
        }
        if self.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "consumer.max_attempts",
                "must be at least 1",
            ));
        }
        if self.sweep_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "consumer.sweep_interval_ms",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// The settings for consuming `queue`, retrying after `retry_backoff`.
    pub fn settings(&self, queue: String, retry_backoff: Duration) -> ConsumerSettings {
        ConsumerSettings {
            queue,
            batch_size: self.batch_size,
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            retry_backoff,
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            gap_alert_after: Duration::from_millis(self.gap_alert_after_ms),
        }
    }
}
