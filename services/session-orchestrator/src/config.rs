//! The orchestrator's configuration: the shared sections, the consumer,
//! and where projects may live.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use stratavore_consumer::ConsumerSection;
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
}

/// The orchestrator's own sections, loaded beside the common ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct OwnSections {
    consumer: ConsumerSection,
    projects: ProjectsSection,
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
        let loader = loader.list_key("projects.allowed_roots");
        let (base, own): (ServiceConfig, OwnSections) = load_service_config(&loader, 7481)?;
        let config = Self {
            base,
            consumer: own.consumer,
            projects: own.projects,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Validate for OrchestratorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        self.consumer.validate()?;
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
}
