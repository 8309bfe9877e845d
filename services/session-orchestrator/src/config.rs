//! The orchestrator's configuration: the shared sections, the consumer,
//! and where projects may live.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use stratavore_consumer::ConsumerSection;
use stratavore_runtime::{ConfigError, ConfigLoader, ServiceConfig, Validate};

/// Everything the orchestrator reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrchestratorConfig {
    /// Database, broker, health server, logs, clock.
    #[serde(flatten)]
    pub base: ServiceConfig,
    /// How it consumes its queue.
    #[serde(default)]
    pub consumer: ConsumerSection,
    /// Projects.
    #[serde(default)]
    pub projects: ProjectsSection,
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
        let mut loader = ConfigLoader::new().list_key("projects.allowed_roots");
        if let Some(file) = file {
            loader = loader.file(file);
        }
        let config: Self = loader.load()?;
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
