//! The supervisor's configuration: the shared sections, the consumer, the
//! node (`[node]`), the agent profiles it can start (`[profiles.<name>]`,
//! shared with the orchestrator) and what tokens cost (`[pricing]`).

use crate::domain::pricing::PriceTable;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use stratavore_consumer::ConsumerSection;
use stratavore_profiles::Profiles;
use stratavore_runtime::{ConfigError, ConfigLoader, ServiceConfig, Validate, load_service_config};

/// The health server's default port.
pub const PORT: u16 = 7482;

/// Everything the supervisor reads at start.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Database, broker, health server, logs, clock.
    pub base: ServiceConfig,
    /// How it consumes its node's queues.
    pub consumer: ConsumerSection,
    /// This node.
    pub node: NodeSection,
    /// Agent profiles by name.
    pub profiles: Profiles,
    /// Prices per model.
    pub pricing: PriceTable,
}

/// The supervisor's own sections, loaded beside the common ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct OwnSections {
    consumer: ConsumerSection,
    node: NodeSection,
    pricing: PriceTable,
}

/// `[node]`: who this node is and how it runs agents. Every duration is
/// long by default; only tests about timing shorten them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NodeSection {
    /// The node's stable id (a routing-key word): the hostname by default.
    pub id: String,
    /// Where runner directories live (`<data_dir>/runners/<runner>/<attempt>/`);
    /// empty means `.local/supervisor/<id>`.
    pub data_dir: PathBuf,
    /// Project roots this node serves (`STRATAVORE__NODE__ROOTS=/a,/b`).
    pub roots: Vec<PathBuf>,
    /// Runners it takes at once.
    pub capacity: u32,
    /// The shim binary; empty means `stratavore-shim` next to this binary,
    /// else on `PATH`.
    pub shim_path: PathBuf,
    /// The liveness TTL until a `start` carries the orchestrator's: each
    /// shim's lease reaches half of it past the last confirmed heartbeat,
    /// and the node ends its incarnation when its last confirm is older
    /// than half of it.
    pub ttl_ms: u64,
    /// How often the node sends a heartbeat (mandatory, confirmed) on the
    /// live exchange; the orchestrator counts its ticks at its own interval,
    /// which should be the same.
    pub heartbeat_interval_ms: u64,
    /// How long a stopped agent may take after SIGTERM before SIGKILL.
    pub term_grace_ms: u64,
    /// How often runner directories are read.
    pub scan_interval_ms: u64,
    /// The secret the gateway presents to read this node's transcripts
    /// (`STRATAVORE__NODE__TOKEN`; `stratavore up` generates one). Empty:
    /// every transcript request is refused.
    pub token: NodeToken,
}

/// A shared secret between the gateway and the nodes. Its `Debug` never
/// shows it, and it is compared in constant time.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeToken(String);

impl NodeToken {
    /// A token of `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Whether a token is configured at all.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` is this token. Always false when none is
    /// configured. Both sides are hashed first and the digests compared
    /// byte by byte without an early exit, so the time taken says nothing
    /// about how much of the token was right, nor about its length.
    pub fn accepts(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        if !self.is_set() {
            return false;
        }
        let want = Sha256::digest(self.0.as_bytes());
        let got = Sha256::digest(presented.as_bytes());
        let difference = want
            .iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
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

impl Default for NodeSection {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute());
        Self {
            id: default_node_id(),
            data_dir: PathBuf::new(),
            roots: vec![home.unwrap_or_else(|| PathBuf::from("/srv/projects"))],
            capacity: 8,
            shim_path: PathBuf::new(),
            ttl_ms: 30_000,
            heartbeat_interval_ms: 2_000,
            term_grace_ms: 10_000,
            scan_interval_ms: 200,
            token: NodeToken::default(),
        }
    }
}

/// The hostname made into a routing-key word, else `node-1`.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| if is_id_char(c) { c } else { '-' })
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".to_owned())
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl NodeSection {
    /// Where this node's runner directories live.
    pub fn data_dir(&self) -> PathBuf {
        if self.data_dir.as_os_str().is_empty() {
            PathBuf::from(".local/supervisor").join(&self.id)
        } else {
            self.data_dir.clone()
        }
    }

    /// `ttl_ms` as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// `heartbeat_interval_ms` as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// `scan_interval_ms` as a duration.
    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }

    /// The roots as the strings offers are addressed by.
    pub fn root_names(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect()
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            base: ServiceConfig::with_port(PORT),
            consumer: ConsumerSection::default(),
            node: NodeSection::default(),
            profiles: Profiles::default(),
            pricing: PriceTable::default(),
        }
    }
}

impl SupervisorConfig {
    /// Load defaults, the file, the environment; validate.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut loader = ConfigLoader::new();
        if let Some(file) = file {
            loader = loader.file(file);
        }
        Self::load_with(loader)
    }

    /// Load through `loader` (tests inject an environment); validate.
    pub fn load_with(loader: ConfigLoader) -> Result<Self, ConfigError> {
        let mut loader = loader.list_key("node.roots");
        for key in Profiles::default().env_list_keys() {
            loader = loader.list_key(key);
        }
        let (base, own): (ServiceConfig, OwnSections) = load_service_config(&loader, PORT)?;
        // Layered over the built-in profiles key by key: overriding one
        // setting of `codex` keeps the rest of it.
        let profiles = loader.load_with_defaults(&Profiles::default())?;
        let config = Self {
            base,
            consumer: own.consumer,
            node: own.node,
            profiles,
            pricing: own.pricing,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Validate for SupervisorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        self.consumer.validate()?;
        let n = &self.node;
        if n.id.is_empty() || !n.id.chars().all(is_id_char) {
            return Err(ConfigError::invalid(
                "node.id",
                "use letters, digits, '-' and '_' only (it is a routing-key word)",
            ));
        }
        if n.roots.is_empty() {
            return Err(ConfigError::invalid(
                "node.roots",
                "name at least one folder",
            ));
        }
        if let Some(bad) = n.roots.iter().find(|r| !r.is_absolute()) {
            return Err(ConfigError::invalid(
                "node.roots",
                format!("{} is not an absolute path", bad.display()),
            ));
        }
        for (key, value) in [
            ("node.capacity", u64::from(n.capacity)),
            ("node.ttl_ms", n.ttl_ms),
            ("node.heartbeat_interval_ms", n.heartbeat_interval_ms),
            ("node.scan_interval_ms", n.scan_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        if n.heartbeat_interval_ms.saturating_mul(2) >= n.ttl_ms / 2 {
            return Err(ConfigError::invalid(
                "node.heartbeat_interval_ms",
                "must be under a quarter of node.ttl_ms, so a lease is renewed twice before it ends",
            ));
        }
        self.profiles
            .validate()
            .map_err(|e| ConfigError::invalid(e.key, e.reason))
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
    fn node_settings_and_profiles_come_from_the_environment() {
        let config = SupervisorConfig::load_with(env(&[
            ("STRATAVORE__NODE__ID", "n-7"),
            ("STRATAVORE__NODE__ROOTS", "/srv/a,/srv/b"),
            ("STRATAVORE__NODE__CAPACITY", "3"),
            ("STRATAVORE__PROFILES__DEMO__EXECUTABLE", "/opt/sim"),
        ]))
        .unwrap();
        assert_eq!(config.node.id, "n-7");
        assert_eq!(
            config.node.roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(config.node.capacity, 3);
        assert_eq!(
            config.node.data_dir(),
            PathBuf::from(".local/supervisor/n-7")
        );
        let demo = &config.profiles.profiles["demo"];
        assert_eq!(demo.executable, "/opt/sim");
        assert!(demo.new_args.contains(&"--session-id".to_owned()));
        assert_eq!(config.base.http.listen.port(), PORT);
    }

    #[test]
    fn one_key_of_a_builtin_profile_is_overridden_and_the_rest_kept() {
        let config = SupervisorConfig::load_with(env(&[
            ("STRATAVORE__PROFILES__CODEX__STALL_TIMEOUT_MS", "5000"),
            ("STRATAVORE__PROFILES__CODEX__STALL_POLICY", "flag"),
        ]))
        .unwrap();
        let codex = &config.profiles.profiles["codex"];
        assert_eq!(codex.stall_timeout_ms, 5000);
        assert_eq!(codex.stall_policy, stratavore_profiles::StallPolicy::Flag);
        assert_eq!(codex.executable, "codex");
        assert!(codex.new_args.contains(&"--skip-git-repo-check".to_owned()));
        let err = SupervisorConfig::load_with(env(&[(
            "STRATAVORE__PROFILES__CODEX__DEFAULT_PERMISSION",
            "danger-full-access",
        )]))
        .unwrap_err();
        assert_eq!(err.key(), Some("profiles.codex.default_permission"));
    }

    #[test]
    fn the_node_token_comes_from_the_environment_and_never_shows_in_debug() {
        let config =
            SupervisorConfig::load_with(env(&[("STRATAVORE__NODE__TOKEN", "s3cret-token")]))
                .unwrap();
        assert!(config.node.token.accepts("s3cret-token"));
        assert!(!format!("{config:?}").contains("s3cret"));
        let unset = SupervisorConfig::load_with(env(&[])).unwrap();
        assert!(!unset.node.token.is_set());
    }

    #[test]
    fn a_token_accepts_only_itself_and_an_empty_one_accepts_nothing() {
        let token = NodeToken::new("abc123");
        assert!(token.accepts("abc123"));
        for wrong in ["", "abc12", "abc1234", "ABC123", "abc124"] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        let empty = NodeToken::default();
        assert!(!empty.accepts(""));
        assert!(!empty.accepts("anything"));
    }

    #[test]
    fn a_node_id_that_is_no_routing_word_or_a_relative_root_is_refused() {
        let err = SupervisorConfig::load_with(env(&[("STRATAVORE__NODE__ID", "a.b")])).unwrap_err();
        assert_eq!(err.key(), Some("node.id"));
        let err =
            SupervisorConfig::load_with(env(&[("STRATAVORE__NODE__ROOTS", "srv")])).unwrap_err();
        assert_eq!(err.key(), Some("node.roots"));
    }
}
