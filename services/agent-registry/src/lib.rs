//! agent-registry: owns agents, their personalities, tasks, dispatch and time tracking.
//!
//! It runs on the shared service harness: its own role and schema
//! (migrated at start), the broker topology, and health, readiness and
//! metrics on its own port.

use stratavore_runtime::{ServiceBase, ServiceStartError, Shutdown, start_service_base};

/// The service's name: its binary, its role's and its queues' names.
pub const SERVICE: &str = "agent-registry";

stratavore_runtime::service_config!(
    /// The agent-registry's configuration (health server on 127.0.0.1:7483).
    RegistryConfig,
    port = 7483
);

/// Start the service under `shutdown`; None when shutdown came before
/// Postgres and RabbitMQ were reachable.
pub async fn start(
    config: RegistryConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    start_service_base(SERVICE, &config.0, None, &[], &shutdown).await
}
