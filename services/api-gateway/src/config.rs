//! The gateway's configuration: the shared sections, the consumer, and the
//! API's own settings.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
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
    /// Semantic search: the embedding model and its worker.
    pub search: SearchSection,
}

/// The gateway's own sections, loaded beside the common ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct OwnSections {
    consumer: ConsumerSection,
    api: ApiSection,
    search: SearchSection,
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
    /// model at least (every replica learns outcomes from it, not from
    /// deliveries). It also reads at once whenever this process's drain
    /// commits, which answers most requests: the poll is for the outcomes
    /// another replica's drain applies.
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
            outcome_poll_ms: 50,
            node_token: NodeToken::default(),
            node_timeout_ms: 10_000,
        }
    }
}

/// `[search]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SearchSection {
    /// The folder holding all-MiniLM-L6-v2 (`model.safetensors`,
    /// `tokenizer.json`, `config.json`), as provisioning unpacks it
    /// (`stratavore up` passes its own). Missing files are an error that
    /// `/readyz` and every search name; nothing falls back to another model.
    pub model_dir: PathBuf,
    /// How long the model stays in memory after its last use.
    pub idle_release_ms: u64,
    /// The largest chunk, in the model's tokens (it was trained on up to
    /// 256 with its two special tokens).
    pub chunk_tokens: usize,
    /// Pending texts one worker pass claims.
    pub batch_texts: u32,
    /// How long a claim holds a text before another worker may take it
    /// (a worker that died lets go after this).
    pub claim_ms: u64,
    /// How often an idle worker looks for pending text.
    pub poll_ms: u64,
    /// The share of the time, in percent, a worker with a backlog spends
    /// embedding: after each pass it rests in proportion, so indexing text
    /// for search (the model, and the vector index's inserts in Postgres)
    /// leaves the rest of the machine to the live read models. While those
    /// are behind (their drain applies messages over a second after their
    /// time) the worker takes a tenth of this share. 100: no rest, and no yielding
    /// (an operator catching up on a rebuilt history).
    pub busy_percent: u8,
    /// The k of reciprocal rank fusion: a hit at rank r in one ranking
    /// scores 1 / (k + r).
    pub rrf_k: u32,
}

impl Default for SearchSection {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from(".local/models/all-minilm-l6-v2"),
            idle_release_ms: 300_000,
            chunk_tokens: stratavore_embeddings::DEFAULT_CHUNK_TOKENS,
            batch_texts: 16,
            claim_ms: 120_000,
            poll_ms: 500,
            busy_percent: 50,
            rrf_k: 60,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            base: ServiceConfig::with_port(7480),
            consumer: ConsumerSection::default(),
            api: ApiSection::default(),
            search: SearchSection::default(),
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
            search: own.search,
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
            ("search.idle_release_ms", self.search.idle_release_ms),
            ("search.claim_ms", self.search.claim_ms),
            ("search.poll_ms", self.search.poll_ms),
            ("search.batch_texts", u64::from(self.search.batch_texts)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        if !(1..=100).contains(&self.search.busy_percent) {
            return Err(ConfigError::invalid(
                "search.busy_percent",
                "a share of the time from 1 to 100 percent",
            ));
        }
        let most = stratavore_embeddings::MAX_TOKENS_PER_CHUNK;
        if self.search.chunk_tokens == 0 || self.search.chunk_tokens > most {
            return Err(ConfigError::invalid(
                "search.chunk_tokens",
                format!("a chunk holds 1 to {most} tokens"),
            ));
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

    #[test]
    fn the_search_workers_busy_share_is_a_percentage() {
        let config =
            GatewayConfig::load_with(env(&[("STRATAVORE__SEARCH__BUSY_PERCENT", "100")])).unwrap();
        assert_eq!(config.search.busy_percent, 100);
        assert_eq!(GatewayConfig::default().search.busy_percent, 50);
        for bad in ["0", "101"] {
            let err = GatewayConfig::load_with(env(&[("STRATAVORE__SEARCH__BUSY_PERCENT", bad)]))
                .unwrap_err();
            assert_eq!(err.key(), Some("search.busy_percent"), "{bad}");
        }
    }
}
