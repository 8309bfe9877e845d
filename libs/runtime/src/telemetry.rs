//! Log output: one process-wide `tracing` subscriber writing to stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySection};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter from `RUST_LOG` or `telemetry.log_filter` does not parse.
    #[error("invalid log filter {filter:?} (from {origin})")]
    Filter {
        /// The directives as given.
        filter: String,
        /// Where they came from: `RUST_LOG` or `telemetry.log_filter`.
        origin: &'static str,
        /// The parser's error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber: filter from `RUST_LOG` if set, else from
/// `section.log_filter`; JSON or pretty lines on stderr.
///
/// A second call is a no-op, not an error: the all-in-one process and the
/// tests start several services in one process, and the first one wins.
pub fn init_tracing(section: &TelemetrySection, service: &str) -> Result<(), TelemetryError> {
    let (filter, origin) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.is_empty() => (value, "RUST_LOG"),
        _ => (section.log_filter.clone(), "telemetry.log_filter"),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|source| TelemetryError::Filter {
        filter: filter.clone(),
        origin,
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match section.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    match installed {
        Ok(()) => tracing::info!(service, filter, "logging initialised"),
        Err(_) => tracing::debug!(
            service,
            "a global subscriber was already installed; keeping it"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialising_twice_is_not_an_error() {
        let section = TelemetrySection::default();
        init_tracing(&section, "one").unwrap();
        init_tracing(&section, "two").unwrap();
    }

    #[test]
    fn a_bad_filter_is_reported_with_its_origin() {
        // Only meaningful when the test run does not set RUST_LOG itself.
        if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
            return;
        }
        let section = TelemetrySection {
            log_filter: "info,[".to_owned(),
            ..TelemetrySection::default()
        };
        let err = init_tracing(&section, "bad").unwrap_err();
        assert!(matches!(
            err,
            TelemetryError::Filter {
                origin: "telemetry.log_filter",
                ..
            }
        ));
    }
}
