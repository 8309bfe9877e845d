//! A PostgreSQL cluster of a test's own, in a folder of its own on a free
//! port, for tests that kill or restart the database without disturbing the
//! shared one; dropped, it is stopped and its folder removed.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::postgres_install::PgInstall;
use crate::postgres_server::{self, PgCluster, PgServerError};
use crate::unique_name;

/// How many ports a private cluster tries: the port is free when picked,
/// but another process can bind it before the server does.
const PORT_ATTEMPTS: u32 = 3;

impl PgCluster {
    /// Starts a fresh cluster of its own in a new folder under `dir`, on a
    /// free port, for a test that kills or restarts the database. The
    /// returned guard stops it and removes its folder when dropped.
    pub fn private(install: &PgInstall, dir: &Path) -> Result<PrivatePg, PgServerError> {
        postgres_server::create_dir(dir)?;
        let own_dir = dir.join(format!("pg-{}", unique_name::unique_suffix()));
        let port = postgres_server::free_port(dir)?;
        let cluster = match PgCluster::in_dir(install, &own_dir, port) {
            Ok(cluster) => cluster,
            Err(error) => {
                // Best effort: the error at hand matters more than the mess.
                let _ = fs::remove_dir_all(&own_dir);
                return Err(error);
            }
        };
        // From here on the guard owns the folder, so a failure cleans up.
        let mut guard = PrivatePg {
            cluster,
            dir: own_dir,
        };
        guard.cluster.init()?;
        let mut attempt = 1;
        loop {
            match guard.cluster.start() {
                Ok(()) => return Ok(guard),
                Err(error) if attempt < PORT_ATTEMPTS && guard.cluster.lost_port_race() => {
                    tracing::debug!(%error, port = guard.cluster.port, "port taken meanwhile, trying another");
                    guard.cluster.port = postgres_server::free_port(dir)?;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// A private cluster that is stopped (immediately, without a checkpoint:
/// its data is thrown away) and whose folder is removed when the guard is
/// dropped. Dereferences to its [`PgCluster`].
#[derive(Debug)]
pub struct PrivatePg {
    cluster: PgCluster,
    dir: PathBuf,
}

impl PrivatePg {
    /// The cluster.
    pub fn cluster(&self) -> &PgCluster {
        &self.cluster
    }

    /// The folder that holds the cluster's data, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Deref for PrivatePg {
    type Target = PgCluster;

    fn deref(&self) -> &PgCluster {
        &self.cluster
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.stop_with_mode("immediate") {
            tracing::warn!(%error, dir = %self.dir.display(), "could not stop a private Postgres");
        }
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "could not remove a private Postgres folder");
        }
    }
}
