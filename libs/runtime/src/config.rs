//! Layered, typed configuration shared by every service and the CLI.
//!
//! Layers, lowest first: the `Default` of the service's config struct, then
//! one TOML file, then the environment (`STRATAVORE__SECTION__KEY`, plus the
//! conventional `DATABASE_URL`). The file is the explicit path if given, else
//! the file named by `STRATAVORE_CONFIG`, else `./stratavore.toml` if it
//! exists. Services validate the result once at start with [`Validate`].

mod sections;

pub use sections::{
    BrokerSection, ClockSection, DatabaseSection, HttpSection, LogFormat, TelemetrySection,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "STRATAVORE";
/// Separator between prefix, section and key in environment variable names.
pub const ENV_SEPARATOR: &str = "__";
/// Environment variable naming the config file when no path is given.
pub const CONFIG_FILE_ENV: &str = "STRATAVORE_CONFIG";
/// File looked up in the current directory when no other file is named.
pub const DEFAULT_CONFIG_FILE: &str = "stratavore.toml";
/// Conventional variable that sets `database.url` unless the prefixed one does.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// Why configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value parsed but breaks a rule of the service.
    #[error("invalid configuration value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key of the offending value, e.g. `broker.prefix`.
        key: String,
        /// What is wrong with it, in words an operator can act on.
        reason: String,
    },
    /// A layer could not be read or a value has the wrong type.
    #[error("cannot load configuration{}", at_key(.key))]
    Load {
        /// Dotted key of the offending value, when the `config` crate knows it.
        key: Option<String>,
        /// The error of the `config` crate, kept for its full message
        /// (boxed: it is large, and errors travel in every `Result`).
        #[source]
        source: Box<::config::ConfigError>,
    },
    /// The config file was named explicitly but does not exist.
    #[error("configuration file {} does not exist", .path.display())]
    MissingFile {
        /// The path that was asked for.
        path: PathBuf,
    },
}

impl ConfigError {
    /// A rule violation for `key`, for implementations of [`Validate`].
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The dotted key this error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Load { key, .. } => key.as_deref(),
            Self::MissingFile { .. } => None,
        }
    }
}

fn at_key(key: &Option<String>) -> String {
    key.as_deref()
        .map(|k| format!(" at `{k}`"))
        .unwrap_or_default()
}

impl From<::config::ConfigError> for ConfigError {
    fn from(source: ::config::ConfigError) -> Self {
        let key = match &source {
            ::config::ConfigError::Type { key, .. } | ::config::ConfigError::At { key, .. } => {
                key.clone()
            }
            _ => None,
        };
        Self::Load {
            key,
            source: Box::new(source),
        }
    }
}

/// Checks a loaded config once at start, so a bad value fails fast with its key.
pub trait Validate {
    /// `Ok` if every value is acceptable, else the first offending key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from defaults, the config file and the process environment.
///
/// `file` wins over `STRATAVORE_CONFIG`, which wins over `./stratavore.toml`.
pub fn load_config<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut loader = ConfigLoader::new();
    if let Some(file) = file {
        loader = loader.file(file);
    }
    loader.load()
}

/// Builder for the less common cases of [`load_config`]: list-valued keys,
/// and an injected environment or working directory (tests use these so they
/// never touch the process environment, which all test threads share).
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: Option<HashMap<String, String>>,
    current_dir: Option<PathBuf>,
    list_keys: Vec<String>,
}

impl ConfigLoader {
    /// A loader that reads the process environment and the current directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this file, which must exist, instead of looking for one.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Uses these variables instead of the process environment.
    pub fn env(mut self, vars: HashMap<String, String>) -> Self {
        self.env = Some(vars);
        self
    }

    /// Looks for `stratavore.toml` in this directory instead of the current one.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Treats the environment value of this dotted key as a comma-separated list.
    pub fn list_key(mut self, key: impl Into<String>) -> Self {
        self.list_keys.push(key.into().to_lowercase());
        self
    }

    /// Loads `T` through every layer.
    pub fn load<T>(&self) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Serialize + Default,
    {
        self.load_with_defaults(&T::default())
    }

    /// Loads `T` through every layer, starting from `defaults`. Fields the
    /// sources have but `T` does not are ignored, so a service can load its
    /// common sections and its own from the same sources separately (serde's
    /// `flatten` would lose the string-to-number leniency environment
    /// values need).
    pub fn load_with_defaults<T>(&self, defaults: &T) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Serialize,
    {
        let env = match &self.env {
            Some(env) => env.clone(),
            None => process_env(),
        };
        let defaults = ::config::Config::try_from(defaults)?;
        let mut builder = ::config::Config::builder().add_source(defaults);
        if let Some(path) = self.config_file(&env)? {
            builder = builder.add_source(
                ::config::File::from(path)
                    .format(::config::FileFormat::Toml)
                    .required(true),
            );
        }

        let mut scalars = HashMap::new();
        let mut lists = Vec::new();
        let mut database_url = None;
        let mut prefixed_url_set = false;
        for (name, value) in env {
            match env_key(&name) {
                Some(key) if self.list_keys.contains(&key) => lists.push((key, value)),
                Some(key) => {
                    prefixed_url_set |= key == "database.url" && !value.is_empty();
                    scalars.insert(name, value);
                }
                None if name == DATABASE_URL_ENV && !value.is_empty() => database_url = Some(value),
                None => {}
            }
        }

        // Typed parsing is left to serde: guessing types here would turn a
        // password like `0123` into the number 123.
        builder = builder.add_source(
            ::config::Environment::with_prefix(ENV_PREFIX)
                .separator(ENV_SEPARATOR)
                .ignore_empty(true)
                .source(Some(scalars.into_iter().collect())),
        );
        if let Some(url) = database_url.filter(|_| !prefixed_url_set) {
            builder = builder.set_override("database.url", url)?;
        }
        for (key, value) in lists {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            builder = builder.set_override(key, items)?;
        }
        Ok(builder.build()?.try_deserialize()?)
    }

    fn config_file(&self, env: &HashMap<String, String>) -> Result<Option<PathBuf>, ConfigError> {
        let named = self.file.clone().or_else(|| {
            env.get(CONFIG_FILE_ENV)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = named {
            // Checked here because the `config` crate's message for a missing
            // required file does not say which layer asked for it.
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path });
            }
            return Ok(Some(path));
        }
        let dir = self
            .current_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let candidate = dir.join(DEFAULT_CONFIG_FILE);
        Ok(candidate.is_file().then_some(candidate))
    }
}

/// The dotted config key an environment variable sets, if it is one of ours.
fn env_key(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    let prefix = format!("{}{}", ENV_PREFIX.to_lowercase(), ENV_SEPARATOR);
    lower
        .strip_prefix(&prefix)
        .map(|rest| rest.replace(ENV_SEPARATOR, "."))
}

fn process_env() -> HashMap<String, String> {
    // Variables that are not Unicode cannot be ours; skip them rather than fail.
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests;
