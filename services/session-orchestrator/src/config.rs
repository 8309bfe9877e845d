//! The orchestrator's configuration: the shared sections, the consumer,
//! where projects may live, the launch saga's timings, and the agent
//! profiles (`[profiles.<name>]`, the same sections every node reads).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use stratavore_consumer::ConsumerSection;
use stratavore_profiles::Profiles;
use stratavore_runtime::{ConfigError, ConfigLoader, ServiceConfig, Validate, load_service_config};

/// Everything the orchestrator reads at start.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Database, broker, health server, logs, clock.
    pub base: ServiceConfig,
    /// How it consumes its queue.
    pub consumer: ConsumerSection,
    /// Projects.
    pub projects: ProjectsSection,
    /// Runners: launches, restarts, timers.
    pub runners: RunnersSection,
    /// Budgets: the time zone their periods are reckoned in.
    pub budgets: BudgetsSection,
    /// Agent profiles by name: a launch names one and chooses from its
    /// allowlists.
    pub profiles: Profiles,
}

/// The orchestrator's own sections, loaded beside the common ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct OwnSections {
    consumer: ConsumerSection,
    projects: ProjectsSection,
    runners: RunnersSection,
    budgets: BudgetsSection,
}

/// `[runners]`: every timeout and backoff of the launch saga, long by
/// default (only tests about timing shorten them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RunnersSection {
    /// A launch no node starts within this fails.
    pub launch_timeout_ms: u64,
    /// The first restart backoff; it doubles with each restart.
    pub restart_base_ms: u64,
    /// The longest restart backoff.
    pub restart_max_ms: u64,
    /// Restarts when a launch does not say.
    pub default_max_restarts: u32,
    /// Runners a project may have at once.
    pub max_concurrent_per_project: u32,
    /// The liveness TTL carried in every `start` (nodes' leases derive from it).
    pub liveness_ttl_ms: u64,
    /// How often each replica ticks (nodes heartbeat at about this rate):
    /// missed heartbeats are counted in these ticks.
    pub heartbeat_interval_ms: u64,
    /// Added to the TTL before a node that stopped heartbeating is declared
    /// lost, so a node is never declared lost while its agents' leases may
    /// still run.
    pub liveness_grace_ms: u64,
    /// Whether the nodes share the agents' session storage (a volume every
    /// node mounts): a session can then be resumed on any node, and a runner
    /// lost with its node is relaunched even when its session is bound.
    pub shared_session_storage: bool,
    /// How long a quota wait lasts when the agent did not say when it resets.
    pub quota_wait_default_ms: u64,
    /// How long a runner whose quota wait is over waits before looking
    /// again for a free slot in its project (it gave its slot up while
    /// waiting).
    pub quota_slot_retry_ms: u64,
    /// How often due timers are looked for.
    pub timer_poll_ms: u64,
}

impl RunnersSection {
    /// Ticks without a heartbeat after which a node is lost: the least K
    /// with (K - 1) x interval at least the TTL plus the grace.
    pub fn ticks_to_convict(&self) -> u32 {
        crate::domain::liveness::ticks_to_convict(
            self.heartbeat_interval_ms,
            self.liveness_ttl_ms.saturating_add(self.liveness_grace_ms),
        )
    }
}

impl Default for RunnersSection {
    fn default() -> Self {
        Self {
            launch_timeout_ms: 120_000,
            restart_base_ms: 2_000,
            restart_max_ms: 300_000,
            default_max_restarts: 3,
            max_concurrent_per_project: 5,
            liveness_ttl_ms: 30_000,
            heartbeat_interval_ms: 2_000,
            liveness_grace_ms: 5_000,
            shared_session_storage: false,
            quota_wait_default_ms: 3_600_000,
            quota_slot_retry_ms: 5_000,
            timer_poll_ms: 500,
        }
    }
}

/// `[budgets]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BudgetsSection {
    /// The IANA time zone (`UTC`, `Europe/Paris`) whose calendar hours,
    /// days (from midnight), weeks (from Monday) and months budgets count
    /// in. A budget records the zone in force when it is created, so a
    /// later change applies to budgets created after it.
    pub time_zone: String,
}

impl Default for BudgetsSection {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_owned(),
        }
    }
}

/// `[projects]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProjectsSection {
    /// Absolute folders a project's path must lie inside
    /// (`STRATAVORE__PROJECTS__ALLOWED_ROOTS=/srv/a,/srv/b`). By default the
    /// home folder of the user running the orchestrator, or `/srv/projects`.
    pub allowed_roots: Vec<PathBuf>,
}

impl Default for ProjectsSection {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute());
        Self {
            allowed_roots: vec![home.unwrap_or_else(|| PathBuf::from("/srv/projects"))],
        }
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            base: ServiceConfig::with_port(7481),
            consumer: ConsumerSection::default(),
            projects: ProjectsSection::default(),
            runners: RunnersSection::default(),
            budgets: BudgetsSection::default(),
            profiles: Profiles::default(),
        }
    }
}

impl OrchestratorConfig {
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
        let mut loader = loader.list_key("projects.allowed_roots");
        let builtin = Profiles::default();
        for key in builtin.env_list_keys() {
            loader = loader.list_key(key);
        }
        let (base, own): (ServiceConfig, OwnSections) = load_service_config(&loader, 7481)?;
        // Loaded over the built-in profiles rather than as a section of
        // `OwnSections`, so a source that sets one key of a built-in profile
        // keeps the rest of it.
        let profiles = loader.load_with_defaults(&builtin)?;
        let config = Self {
            base,
            consumer: own.consumer,
            projects: own.projects,
            runners: own.runners,
            budgets: own.budgets,
            profiles,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Validate for OrchestratorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        self.consumer.validate()?;
        self.profiles
            .validate()
            .map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        let r = &self.runners;
        for (key, value) in [
            ("runners.launch_timeout_ms", r.launch_timeout_ms),
            ("runners.restart_base_ms", r.restart_base_ms),
            ("runners.liveness_ttl_ms", r.liveness_ttl_ms),
            ("runners.heartbeat_interval_ms", r.heartbeat_interval_ms),
            ("runners.timer_poll_ms", r.timer_poll_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be positive"));
            }
        }
        if r.restart_max_ms < r.restart_base_ms {
            return Err(ConfigError::invalid(
                "runners.restart_max_ms",
                "must be at least runners.restart_base_ms",
            ));
        }
        if r.heartbeat_interval_ms >= r.liveness_ttl_ms {
            return Err(ConfigError::invalid(
                "runners.heartbeat_interval_ms",
                "must be shorter than runners.liveness_ttl_ms",
            ));
        }
        if r.max_concurrent_per_project == 0 {
            return Err(ConfigError::invalid(
                "runners.max_concurrent_per_project",
                "must be positive",
            ));
        }
        if let Err(e) = stratavore_budgets::time_zone(&self.budgets.time_zone) {
            return Err(ConfigError::invalid("budgets.time_zone", e.to_string()));
        }
        if self.projects.allowed_roots.is_empty() {
            return Err(ConfigError::invalid(
                "projects.allowed_roots",
                "name at least one folder",
            ));
        }
        if let Some(bad) = self
            .projects
            .allowed_roots
            .iter()
            .find(|r| !r.is_absolute())
        {
            return Err(ConfigError::invalid(
                "projects.allowed_roots",
                format!("{} is not an absolute path", bad.display()),
            ));
        }
        Ok(())
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
    fn environment_values_reach_the_common_and_the_own_sections() {
        let config = OrchestratorConfig::load_with(env(&[
            ("STRATAVORE__RETRY_BACKOFF_MS", "100"),
            ("STRATAVORE__CONSUMER__MAX_ATTEMPTS", "7"),
            ("STRATAVORE__PROJECTS__ALLOWED_ROOTS", "/srv/a,/srv/b"),
            ("STRATAVORE__BROKER__PREFIX", "t-1"),
        ]))
        .unwrap();
        assert_eq!(config.base.retry_backoff_ms, 100);
        assert_eq!(config.base.http.listen.port(), 7481);
        assert_eq!(config.consumer.max_attempts, 7);
        assert_eq!(
            config.projects.allowed_roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(config.base.broker.prefix, "t-1");
    }

    #[test]
    fn a_relative_root_or_a_bad_number_is_refused_naming_the_key() {
        let err =
            OrchestratorConfig::load_with(env(&[("STRATAVORE__PROJECTS__ALLOWED_ROOTS", "srv")]))
                .unwrap_err();
        assert_eq!(err.key(), Some("projects.allowed_roots"));
        let err =
            OrchestratorConfig::load_with(env(&[("STRATAVORE__CONSUMER__MAX_ATTEMPTS", "many")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("max_attempts") || err.key() == Some("consumer.max_attempts"),
            "{err}"
        );
    }

    #[test]
    fn the_budget_time_zone_defaults_to_utc_and_an_unknown_one_is_refused_naming_the_key() {
        let config = OrchestratorConfig::load_with(env(&[])).unwrap();
        assert_eq!(config.budgets.time_zone, "UTC");
        let config = OrchestratorConfig::load_with(env(&[(
            "STRATAVORE__BUDGETS__TIME_ZONE",
            "Europe/Paris",
        )]))
        .unwrap();
        assert_eq!(config.budgets.time_zone, "Europe/Paris");
        let err =
            OrchestratorConfig::load_with(env(&[("STRATAVORE__BUDGETS__TIME_ZONE", "Mars/Base")]))
                .unwrap_err();
        assert_eq!(err.key(), Some("budgets.time_zone"));
    }

    #[test]
    fn overriding_one_key_of_a_builtin_profile_keeps_its_other_keys() {
        let config = OrchestratorConfig::load_with(env(&[
            ("STRATAVORE__PROFILES__CODEX__STALL_TIMEOUT_MS", "60000"),
            ("STRATAVORE__PROFILES__DEMO__MODELS", "sonnet,haiku"),
        ]))
        .unwrap();
        let builtin = Profiles::default();
        let codex = &config.profiles.profiles["codex"];
        assert_eq!(codex.stall_timeout_ms, 60_000);
        assert_eq!(
            codex,
            &stratavore_profiles::ProfileSection {
                stall_timeout_ms: 60_000,
                ..builtin.profiles["codex"].clone()
            }
        );
        let demo = &config.profiles.profiles["demo"];
        assert_eq!(demo.models, ["sonnet", "haiku"]);
        assert_eq!(demo.executable, builtin.profiles["demo"].executable);
        assert_eq!(
            config.profiles.profiles.keys().collect::<Vec<_>>(),
            builtin.profiles.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_list_in_the_file_replaces_the_builtin_list_whole() {
        let file = std::env::temp_dir().join(format!(
            "stratavore-orchestrator-{}.toml",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(
            &file,
            "[profiles.demo]\nmodels = [\"haiku\"]\ndefault_tools = []\n",
        )
        .unwrap();
        let config = OrchestratorConfig::load_with(env(&[]).file(&file));
        std::fs::remove_file(&file).unwrap();
        let demo = &config.unwrap().profiles.profiles["demo"];
        assert_eq!(demo.models, ["haiku"]);
        assert!(demo.default_tools.is_empty());
        assert_eq!(demo.permissions, ["default", "acceptEdits", "plan"]);
    }

    #[test]
    fn a_profile_named_only_in_config_starts_from_the_bare_defaults_and_is_validated() {
        let config = OrchestratorConfig::load_with(env(&[(
            "STRATAVORE__PROFILES__AIDER__EXECUTABLE",
            "aider",
        )]))
        .unwrap();
        let aider = &config.profiles.profiles["aider"];
        assert_eq!(aider.executable, "aider");
        assert!(!aider.can_resume());
        let err = OrchestratorConfig::load_with(env(&[(
            "STRATAVORE__PROFILES__DEMO__DEFAULT_PERMISSION",
            "bypassPermissions",
        )]))
        .unwrap_err();
        assert_eq!(err.key(), Some("profiles.demo.default_permission"));
    }

    #[test]
    fn liveness_defaults_convict_after_the_ttl_and_grace_and_a_slow_heartbeat_is_refused() {
        let config = OrchestratorConfig::load_with(env(&[])).unwrap();
        let r = &config.runners;
        assert_eq!(
            (r.heartbeat_interval_ms, r.liveness_grace_ms),
            (2_000, 5_000)
        );
        assert!(!r.shared_session_storage);
        assert_eq!(r.ticks_to_convict(), 19);
        let config = OrchestratorConfig::load_with(env(&[
            ("STRATAVORE__RUNNERS__HEARTBEAT_INTERVAL_MS", "200"),
            ("STRATAVORE__RUNNERS__LIVENESS_TTL_MS", "1000"),
            ("STRATAVORE__RUNNERS__LIVENESS_GRACE_MS", "200"),
            ("STRATAVORE__RUNNERS__SHARED_SESSION_STORAGE", "true"),
        ]))
        .unwrap();
        assert_eq!(config.runners.ticks_to_convict(), 7);
        assert!(config.runners.shared_session_storage);
        let err = OrchestratorConfig::load_with(env(&[(
            "STRATAVORE__RUNNERS__HEARTBEAT_INTERVAL_MS",
            "30000",
        )]))
        .unwrap_err();
        assert_eq!(err.key(), Some("runners.heartbeat_interval_ms"));
    }
}
