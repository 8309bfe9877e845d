//! Config sections every service composes into its own config struct, under
//! the conventional names `database`, `broker`, `http`, `telemetry`, `clock`
//! (the keys in validation errors assume those names).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Validate};

/// How to reach Postgres. Each service connects with its own role.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DatabaseSection {
    /// Admin/base URL of the Postgres server and database; `None` means the
    /// locally provisioned instance, so a fresh laptop needs no setup.
    pub url: Option<String>,
    /// Password of the service's own role. A secret: set it only in the
    /// environment or a file, never in a committed default.
    pub role_password: Option<String>,
    /// Pool size; small by default because five services may share one
    /// Postgres in the all-in-one process.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before failing, so a
    /// stuck pool surfaces as an error instead of a hang.
    pub acquire_timeout_ms: u64,
    /// The longest an append waits for its log's lock before it fails (and
    /// is retried): only this wait is bounded, not the whole transaction.
    pub append_lock_wait_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: None,
            role_password: None,
            max_connections: 8,
            acquire_timeout_ms: 30_000,
            append_lock_wait_ms: 5_000,
        }
    }
}

impl DatabaseSection {
    /// `append_lock_wait_ms` as a `Duration`.
    pub fn append_lock_wait(&self) -> Duration {
        Duration::from_millis(self.append_lock_wait_ms)
    }

    /// `acquire_timeout_ms` as a `Duration`.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

// Hand-written so that printing a config (logs, panics) never shows a secret.
impl fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "role_password",
                &self.role_password.as_ref().map(|_| "<redacted>"),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("append_lock_wait_ms", &self.append_lock_wait_ms)
            .finish()
    }
}

impl Validate for DatabaseSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// How to reach RabbitMQ, and the namespace of every exchange and queue.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BrokerSection {
    /// AMQP URL of the broker; the default is a local RabbitMQ's guest user.
    pub url: String,
    /// Prefix of every exchange and queue name, so tests (and tenants) can
    /// share one broker without seeing each other's messages.
    pub prefix: String,
    /// Quorum-queue delivery limit: a safety net against crash loops, set
    /// high because RabbitMQ 3.10 counts every return toward it (the whole
    /// unacknowledged window of a consumer that dies included). Every
    /// declarer must use the same value, or the broker refuses the queue.
    pub delivery_limit: u32,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            prefix: "stratavore".to_owned(),
            delivery_limit: 100,
        }
    }
}

impl fmt::Debug for BrokerSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSection")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

impl Validate for BrokerSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                "broker.url",
                "must start with amqp:// or amqps://",
            ));
        }
        if self.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "broker.delivery_limit",
                "must be positive",
            ));
        }
        validate_prefix(&self.prefix)
            .map_err(|reason| ConfigError::invalid("broker.prefix", reason))
    }
}

/// Rules for a broker prefix: it becomes part of AMQP names and of routing
/// patterns, so it must not contain `*`, `#` or spaces.
fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err("must be 1 to 64 characters long");
    }
    if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may contain only a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// Where a service's HTTP server listens. There is no `Default`: each
/// service has its own port (DESIGN.md section 7) and sets it in its config's
/// `Default`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpSection {
    /// Address to bind; port 0 picks a free port (tests learn it from the
    /// bound server).
    pub listen: SocketAddr,
}

impl HttpSection {
    /// Listens on loopback at `port`: services are not exposed unless asked.
    pub fn loopback(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Validate for HttpSection {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Output format of the logs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Multi-line human-readable output, for a developer's terminal.
    Pretty,
}

/// Logging settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TelemetrySection {
    /// JSON by default because production logs are read by machines.
    pub log_format: LogFormat,
    /// `tracing` filter directives used when `RUST_LOG` is not set.
    pub log_filter: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
        }
    }
}

impl Validate for TelemetrySection {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map(|_| ())
            .map_err(|err| ConfigError::invalid("telemetry.log_filter", err.to_string()))
    }
}

/// Source of wall time (DESIGN.md section 7).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClockSection {
    /// File holding an offset in milliseconds added to system time, so tests
    /// can move wall time in every process at once; `None` means system time.
    pub offset_file: Option<PathBuf>,
}

impl Validate for ClockSection {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

use stratavore_bus::connection::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_prefix_rules_name_the_key() {
        for bad in ["", "9lives", "Upper", "has space", "star*", &"a".repeat(65)] {
            let section = BrokerSection {
                prefix: bad.to_owned(),
                ..BrokerSection::default()
            };
            let err = section.validate().err();
            assert_eq!(
                err.as_ref().and_then(ConfigError::key),
                Some("broker.prefix"),
                "{bad:?}"
            );
        }
        for good in ["stratavore", "t-1.a_b", &"a".repeat(64)] {
            let section = BrokerSection {
                prefix: good.to_owned(),
                ..BrokerSection::default()
            };
            assert!(section.validate().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(DatabaseSection::default().validate().is_ok());
        assert!(BrokerSection::default().validate().is_ok());
        assert!(TelemetrySection::default().validate().is_ok());
    }

    #[test]
    fn a_zero_pool_is_rejected_with_its_key() {
        let section = DatabaseSection {
            max_connections: 0,
            ..DatabaseSection::default()
        };
        let err = section.validate().err();
        assert_eq!(
            err.as_ref().and_then(ConfigError::key),
            Some("database.max_connections")
        );
    }

    #[test]
    fn a_bad_log_filter_is_rejected_with_its_key() {
        let section = TelemetrySection {
            log_filter: "info,[".to_owned(),
            ..TelemetrySection::default()
        };
        let err = section.validate().err();
        assert_eq!(
            err.as_ref().and_then(ConfigError::key),
            Some("telemetry.log_filter")
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let section = DatabaseSection {
            url: Some("postgres://svc:hunter2@db:5432/app".to_owned()),
            role_password: Some("s3cret".to_owned()),
            ..DatabaseSection::default()
        };
        let printed = format!("{section:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("postgres://svc:<redacted>@db:5432/app"),
            "{printed}"
        );
        let broker = format!("{:?}", BrokerSection::default());
        assert!(
            broker.contains("amqp://guest:<redacted>@127.0.0.1:5672/%2f"),
            "{broker}"
        );
    }
}
