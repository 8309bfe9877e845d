//! runner-supervisor: runs the agent processes of its node: spawns, signals, exits, transcripts.
//!
//! It runs on the shared service harness: its own role and schema
//! (migrated at start), the broker topology, and health, readiness and
//! metrics on its own port.

pub mod domain;

use stratavore_runtime::{ServiceBase, ServiceStartError, Shutdown, start_service_base};

/// The service's name: its binary, its role's and its queues' names.
pub const SERVICE: &str = "runner-supervisor";

stratavore_runtime::service_config!(
    /// The runner-supervisor's configuration (health server on 127.0.0.1:7482).
    SupervisorConfig,
    port = 7482
);

/// Start the service under `shutdown`; None when shutdown came before
/// Postgres and RabbitMQ were reachable.
pub async fn start(
    config: SupervisorConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    start_service_base(SERVICE, &config.0, None, &shutdown).await
}
