//! session-orchestrator: owns projects, the runners' lifecycle (launch saga, placement, restarts), sessions, budgets and durable timers.
//!
//! It runs on the shared service harness: its own role and schema
//! (migrated at start), the broker topology, and health, readiness and
//! metrics on its own port.

use stratavore_runtime::{ServiceBase, ServiceStartError, Shutdown, start_service_base};

/// The service's name: its binary, its role's and its queues' names.
pub const SERVICE: &str = "session-orchestrator";

stratavore_runtime::service_config!(
    /// The session-orchestrator's configuration (health server on 127.0.0.1:7481).
    OrchestratorConfig,
    port = 7481
);

/// Start the service under `shutdown`; None when shutdown came before
/// Postgres and RabbitMQ were reachable.
pub async fn start(
    config: OrchestratorConfig,
    shutdown: Shutdown,
) -> Result<Option<ServiceBase>, ServiceStartError> {
    start_service_base(SERVICE, &config.0, &shutdown).await
}
