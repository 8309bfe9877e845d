//! The service harness: configuration, logging, the health/metrics server,
//! graceful shutdown and the two clocks. A toolbox that every service's
//! `run` and the CLI pick from; it owns no service logic.
#![deny(missing_docs)]

pub mod boottime;
pub mod clock;
pub mod config;
pub mod failpoint;
pub mod metrics_server;
pub mod service_base;
pub mod service_main;
pub mod shutdown;
pub mod telemetry;

pub use boottime::BootInstant;
pub use clock::{
    Clock, ManualClock, OffsetFileClock, SystemClock, clock_from_section, write_offset_file,
};
pub use config::{
    BrokerSection, ClockSection, ConfigError, ConfigLoader, DatabaseSection, HttpSection,
    LogFormat, TelemetrySection, Validate, load_config,
};
pub use metrics_server::{
    BoundServer, Check, HttpError, Readiness, health_router, prometheus_handle, serve_health,
};
pub use service_base::{
    ServiceBase, ServiceConfig, ServiceStartError, load_service_config, start_service_base,
};
pub use service_main::{RunError, SHUTDOWN_GRACE, run_until_signalled};
pub use shutdown::{Shutdown, ShutdownError, trigger_on_signals};
pub use telemetry::{TelemetryError, init_tracing};
