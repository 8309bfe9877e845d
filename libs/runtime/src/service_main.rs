//! The body of every service's `main`: logging, signals, start, wait for
//! SIGTERM, then wait for every task to finish its in-flight work.

use crate::config::TelemetrySection;
use crate::{Shutdown, ShutdownError, TelemetryError, init_tracing, trigger_on_signals};
use std::future::Future;
use std::time::Duration;

/// How long a service may take to finish in-flight work after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A service's main failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Logging could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// Signals could not be hooked, or tasks did not finish in time.
    #[error(transparent)]
    Shutdown(#[from] ShutdownError),
    /// The service's own start failed.
    #[error("{service} failed to start: {source}")]
    Start {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Run a service until SIGTERM or SIGINT: `start` spawns its tasks under
/// the shutdown it is given and returns; then this waits for the signal and
/// for the tasks.
pub async fn run_until_signalled<F, Fut, T, E>(
    service: &str,
    telemetry: &TelemetrySection,
    start: F,
) -> Result<(), RunError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    init_tracing(telemetry, service)?;
    let shutdown = Shutdown::new();
    trigger_on_signals(&shutdown)?;
    start(shutdown.clone()).await.map_err(|e| RunError::Start {
        service: service.to_owned(),
        source: Box::new(e),
    })?;
    tracing::info!(service, "running");
    shutdown.wait().await;
    tracing::info!(service, "shutting down");
    shutdown.wait_for_tasks(SHUTDOWN_GRACE).await?;
    Ok(())
}

/// Declare a service's config type: the common sections, with the
/// service's own health port as the default, and a `load` that layers file
/// and environment over it and validates.
#[macro_export]
macro_rules! service_config {
    ($(#[$meta:meta])* $name:ident, port = $port:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $crate::ServiceConfig);

        impl Default for $name {
            fn default() -> Self {
                Self($crate::ServiceConfig::with_port($port))
            }
        }

        impl $name {
            /// Load defaults, then the file, then `STRATAVORE__…` variables,
            /// and validate.
            pub fn load(file: Option<&std::path::Path>) -> Result<Self, $crate::ConfigError> {
                let config: Self = $crate::load_config(file)?;
                $crate::Validate::validate(&config.0)?;
                Ok(config)
            }
        }
    };
}
