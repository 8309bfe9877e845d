//! The gateway's configuration: the shared sections, the consumer, and the
//! API's own settings.

use serde::{Deserialize, Serialize};
use stratavore_consumer::ConsumerSection;
use stratavore_runtime::{ConfigError, ConfigLoader, ServiceConfig, Validate, load_service_config};

/// Everything the gateway reads at start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Database, broker, HTTP server (API and health share it), logs, clock.
    pub base: ServiceConfig,
    /// How it consumes its queue.
    pub consumer: ConsumerSection,
    /// The REST API.
    pub api: ApiSection,
}

/// The gateway's own sections, loaded beside the common ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct OwnSections {
    consumer: ConsumerSection,
    api: ApiSection,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ApiSection {
    /// Host names (optionally `host:port`) the API answers to besides the
    /// loopback names; every request's Host and Origin must be one of them,
    /// so a web page cannot drive the API through DNS rebinding
    /// (`STRATAVORE__API__ALLOWED_HOSTS=a.example,b.example:8443`).
    pub allowed_hosts: Vec<String>,
    /// How often a request waiting for its command's outcome reads the read
    /// model (every replica learns outcomes from it, not from deliveries).
    pub outcome_poll_ms: u64,
    /// The secret the gateway presents to the supervisor nodes to read
    /// their transcripts (`STRATAVORE__API__NODE_TOKEN`; `stratavore up`
    /// generates one and gives the nodes the same). Empty: runner logs
    /// cannot be read.
    pub node_token: NodeToken,
    /// How long a node may take to answer a transcript request (connect,
    /// and each read), in milliseconds.
    pub node_timeout_ms: u64,
}

/// The shared secret of the gateway and the nodes; its `Debug` never
/// shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeToken(String);

impl NodeToken {
    /// A token of `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether one is configured.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl std::fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "<redacted>"
        } else {
            "<unset>"
        })
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            outcome_poll_ms: 5,
            node_token: NodeToken::default(),
            node_timeout_ms: 10_000,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            base: ServiceConfig::with_port(7480),
            consumer: ConsumerSection::default(),
            api: ApiSection::default(),
        }
    }
}

impl GatewayConfig {
    /// Load defaults, the file, the environment; validate.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut loader = ConfigLoader::new();
        if let Some(file) = file {
            loader = loader.file(file);
        }
        Self::load_with(loader)
    }

    /// Load through `loader` (tests inject an environment); validate.
    pub fn load_with(loader: ConfigLoader) -> Result<Self, ConfigError> {
        let loader = loader.list_key("api.allowed_hosts");
        let (base, own): (ServiceConfig, OwnSections) = load_service_config(&loader, 7480)?;
        let config = Self {
            base,
            consumer: own.consumer,
            api: own.api,
        };
        config.validate()?;
        Ok(config)
    }

    /// The hosts the API answers to: the loopback names on any port, and
    /// the configured ones.
    pub fn allowed_hosts(&self) -> Result<crate::http::AllowedHosts, ConfigError> {
        let names = ["127.0.0.1", "localhost", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .chain(self.api.allowed_hosts.iter().cloned());
        crate::http::AllowedHosts::new(names)
            .map_err(|e| ConfigError::invalid("api.allowed_hosts", e.to_string()))
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        self.consumer.validate()?;
        // Until API tokens exist, anyone who reaches the port drives the
        // whole system: refuse to be reachable from elsewhere.
        if !self.base.http.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "http.listen",
                "the gateway has no authentication yet, so it listens on loopback addresses only",
            ));
        }
        for (key, value) in [
            ("api.outcome_poll_ms", self.api.outcome_poll_ms),
            ("api.node_timeout_ms", self.api.node_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        self.allowed_hosts().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ConfigLoader {
        ConfigLoader::new().current_dir("/nonexistent").env(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_gateway_listens_on_7480_and_takes_extra_hosts_from_the_environment() {
        let config = GatewayConfig::load_with(env(&[
            (
                "STRATAVORE__API__ALLOWED_HOSTS",
                "stratavore.internal,ops.example:8443",
            ),
            ("STRATAVORE__API__OUTCOME_POLL_MS", "3"),
        ]))
        .unwrap();
        assert_eq!(config.base.http.listen.port(), 7480);
        assert_eq!(config.api.outcome_poll_ms, 3);
        assert_eq!(config.api.allowed_hosts.len(), 2);
        assert!(!config.api.node_token.is_set());
    }

    #[test]
    fn the_node_token_comes_from_the_environment_and_never_shows_in_debug() {
        let config =
            GatewayConfig::load_with(env(&[("STRATAVORE__API__NODE_TOKEN", "s3cret-token")]))
                .unwrap();
        assert_eq!(config.api.node_token.expose(), "s3cret-token");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn without_authentication_the_gateway_refuses_a_non_loopback_address() {
        let err = GatewayConfig::load_with(env(&[("STRATAVORE__HTTP__LISTEN", "0.0.0.0:7480")]))
            .unwrap_err();
        assert_eq!(err.key(), Some("http.listen"));
    }
}
