//! Tests of the layering; every test injects its environment and directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct ServiceConfig {
    database: DatabaseSection,
    broker: BrokerSection,
    http: HttpSection,
    telemetry: TelemetrySection,
    clock: ClockSection,
    service: ServiceSection,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct ServiceSection {
    retries: u32,
    origins: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            database: DatabaseSection::default(),
            broker: BrokerSection::default(),
            http: HttpSection::loopback(7484),
            telemetry: TelemetrySection::default(),
            clock: ClockSection::default(),
            service: ServiceSection {
                retries: 3,
                origins: vec!["a".to_owned()],
            },
        }
    }
}

/// A fresh empty directory per test, so tests can run in parallel.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "stratavore-config-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn loader(dir: &std::path::Path, vars: &[(&str, &str)]) -> ConfigLoader {
    ConfigLoader::new().current_dir(dir).env(env(vars))
}

#[test]
fn defaults_apply_when_nothing_else_is_set() {
    let dir = scratch_dir();
    let config: ServiceConfig = loader(&dir, &[]).load().unwrap();
    assert_eq!(config.database.max_connections, 8);
    assert_eq!(config.broker.prefix, "stratavore");
    assert_eq!(config.http.listen.port(), 7484);
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.database.url, None);
    assert_eq!(config.service.retries, 3);
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let dir = scratch_dir();
    std::fs::write(
        dir.join(DEFAULT_CONFIG_FILE),
        "[database]\nmax_connections = 4\nacquire_timeout_ms = 500\n\
         [broker]\nprefix = \"fromfile\"\n[telemetry]\nlog_format = \"pretty\"\n\
         [http]\nlisten = \"0.0.0.0:9000\"\n",
    )
    .unwrap();
    let config: ServiceConfig = loader(
        &dir,
        &[
            ("STRATAVORE__DATABASE__MAX_CONNECTIONS", "16"),
            ("STRATAVORE__BROKER__PREFIX", "fromenv"),
            ("STRATAVORE__DATABASE__ROLE_PASSWORD", "0123"),
            ("UNRELATED", "x"),
        ],
    )
    .load()
    .unwrap();
    assert_eq!(config.database.max_connections, 16, "env wins over file");
    assert_eq!(
        config.database.acquire_timeout_ms, 500,
        "file wins over default"
    );
    assert_eq!(config.broker.prefix, "fromenv");
    assert_eq!(config.telemetry.log_format, LogFormat::Pretty);
    assert_eq!(config.http.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        config.telemetry.log_filter, "info",
        "untouched default stays"
    );
    assert_eq!(
        config.database.role_password.as_deref(),
        Some("0123"),
        "a numeric-looking secret keeps its leading zero"
    );
}

#[test]
fn explicit_path_wins_over_config_env_which_wins_over_current_dir() {
    let dir = scratch_dir();
    let write = |name: &str, prefix: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("[broker]\nprefix = \"{prefix}\"\n")).unwrap();
        path
    };
    write(DEFAULT_CONFIG_FILE, "cwd");
    let from_env = write("env.toml", "envfile");
    let explicit = write("explicit.toml", "explicit");
    let env_file = from_env.to_str().unwrap();

    let cwd: ServiceConfig = loader(&dir, &[]).load().unwrap();
    assert_eq!(cwd.broker.prefix, "cwd");
    let via_env: ServiceConfig = loader(&dir, &[(CONFIG_FILE_ENV, env_file)]).load().unwrap();
    assert_eq!(via_env.broker.prefix, "envfile");
    let via_path: ServiceConfig = loader(&dir, &[(CONFIG_FILE_ENV, env_file)])
        .file(&explicit)
        .load()
        .unwrap();
    assert_eq!(via_path.broker.prefix, "explicit");
}

#[test]
fn a_named_file_that_does_not_exist_is_an_error() {
    let dir = scratch_dir();
    let missing = dir.join("nope.toml");
    let err = loader(&dir, &[])
        .file(&missing)
        .load::<ServiceConfig>()
        .unwrap_err();
    assert!(matches!(err, ConfigError::MissingFile { path } if path == missing));
}

#[test]
fn database_url_env_applies_unless_the_prefixed_key_is_set() {
    let dir = scratch_dir();
    let plain = "postgres://plain@h/db";
    let config: ServiceConfig = loader(&dir, &[("DATABASE_URL", plain)]).load().unwrap();
    assert_eq!(config.database.url.as_deref(), Some(plain));

    let prefixed = "postgres://prefixed@h/db";
    let config: ServiceConfig = loader(
        &dir,
        &[
            ("DATABASE_URL", plain),
            ("STRATAVORE__DATABASE__URL", prefixed),
        ],
    )
    .load()
    .unwrap();
    assert_eq!(config.database.url.as_deref(), Some(prefixed));
}

#[test]
fn list_keys_split_on_commas() {
    let dir = scratch_dir();
    let config: ServiceConfig = loader(&dir, &[("STRATAVORE__SERVICE__ORIGINS", "x, y,,z")])
        .list_key("service.origins")
        .load()
        .unwrap();
    assert_eq!(config.service.origins, ["x", "y", "z"]);
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    let dir = scratch_dir();
    let err = loader(&dir, &[("STRATAVORE__DATABASE__MAX_CONNECTIONS", "many")])
        .load::<ServiceConfig>()
        .unwrap_err();
    assert_eq!(err.key(), Some("database.max_connections"), "{err:?}");
    assert!(
        err.to_string().contains("database.max_connections"),
        "{err}"
    );
}

#[test]
fn a_bad_value_in_the_file_names_its_key() {
    let dir = scratch_dir();
    std::fs::write(
        dir.join(DEFAULT_CONFIG_FILE),
        "[telemetry]\nlog_format = \"xml\"\n",
    )
    .unwrap();
    let err = loader(&dir, &[]).load::<ServiceConfig>().unwrap_err();
    assert_eq!(err.key(), Some("telemetry.log_format"), "{err:?}");
}
