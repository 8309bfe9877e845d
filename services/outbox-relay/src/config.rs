//! The relay's configuration: the shared sections plus what it relays and
//! how fast it polls.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use stratavore_runtime::{
    BrokerSection, ClockSection, ConfigError, DatabaseSection, HttpSection, TelemetrySection,
    Validate,
};

/// Everything the relay reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Postgres.
    pub database: DatabaseSection,
    /// RabbitMQ.
    pub broker: BrokerSection,
    /// Health and metrics server (127.0.0.1:7484 by default).
    pub http: HttpSection,
    /// Logs.
    pub telemetry: TelemetrySection,
    /// Wall clock.
    pub clock: ClockSection,
    /// Relay behaviour.
    pub relay: RelaySection,
}

/// What to relay and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelaySection {
    /// Schemas whose logs are relayed.
    pub sources: Vec<String>,
    /// Rows read and published per batch.
    pub batch_size: u32,
    /// First wait after the log runs dry.
    pub idle_poll_min_ms: u64,
    /// Longest wait while the log is idle.
    pub idle_poll_max_ms: u64,
    /// How often a standby tries to take the lease.
    pub lease_retry_ms: u64,
    /// Wait before retrying after the broker or database failed.
    pub retry_backoff_ms: u64,
    /// How often lag and the unroutable queue are measured.
    pub measure_interval_ms: u64,
    /// The longest a batch waits for the broker's confirms before it is
    /// published again on a fresh channel.
    pub publish_timeout_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            database: DatabaseSection::default(),
            broker: BrokerSection::default(),
            http: HttpSection::loopback(7484),
            telemetry: TelemetrySection::default(),
            clock: ClockSection::default(),
            relay: RelaySection::default(),
        }
    }
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            sources: stratavore_store::services::log_schemas()
                .map(str::to_owned)
                .collect(),
            batch_size: 500,
            idle_poll_min_ms: 1,
            idle_poll_max_ms: 10,
            lease_retry_ms: 1000,
            retry_backoff_ms: 500,
            measure_interval_ms: 1000,
            publish_timeout_ms: 30_000,
        }
    }
}

impl RelaySection {
    /// Milliseconds to a Duration.
    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }
}

impl RelayConfig {
    /// Load from defaults, the file and the environment
    /// (`STRATAVORE__RELAY__SOURCES=a,b` for the list of sources), then
    /// validate.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut loader = stratavore_runtime::ConfigLoader::new().list_key("relay.sources");
        if let Some(file) = file {
            loader = loader.file(file);
        }
        let config: Self = loader.load()?;
        config.validate()?;
        Ok(config)
    }
}

impl Validate for RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.broker.validate()?;
        let r = &self.relay;
        if r.sources.is_empty() {
            return Err(ConfigError::invalid(
                "relay.sources",
                "must name at least one schema",
            ));
        }
        for s in &r.sources {
            if !stratavore_store::services::is_plain_identifier(s) {
                return Err(ConfigError::invalid(
                    "relay.sources",
                    format!("{s:?} is not a schema name"),
                ));
            }
        }
        if r.batch_size == 0 || r.batch_size > 10_000 {
            return Err(ConfigError::invalid(
                "relay.batch_size",
                "must be 1..=10000",
            ));
        }
        if r.idle_poll_min_ms == 0 || r.idle_poll_min_ms > r.idle_poll_max_ms {
            return Err(ConfigError::invalid(
                "relay.idle_poll_min_ms",
                "must be at least 1 and at most relay.idle_poll_max_ms",
            ));
        }
        if r.lease_retry_ms == 0
            || r.retry_backoff_ms == 0
            || r.measure_interval_ms == 0
            || r.publish_timeout_ms == 0
        {
            return Err(ConfigError::invalid(
                "relay.lease_retry_ms",
                "intervals must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_loads_and_validates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/stratavore.example.toml");
        let config: RelayConfig = stratavore_runtime::ConfigLoader::new()
            .file(&path)
            .env(Default::default())
            .list_key("relay.sources")
            .load()
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.relay.batch_size, 500);
        assert_eq!(config.http.listen.port(), 7484);
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_key() {
        let mut config = RelayConfig::default();
        config.relay.batch_size = 0;
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), Some("relay.batch_size"));
    }
}
