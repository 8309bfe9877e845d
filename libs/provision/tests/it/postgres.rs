use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use stratavore_provision::loopback;
use stratavore_provision::postgres_install::PgInstall;
use stratavore_provision::postgres_server::PgCluster;
use stratavore_provision::unique_name::unique_suffix;

use crate::{local_dir, scratch_dir};

fn shared_install() -> PgInstall {
    PgInstall::ensure(&local_dir().join("postgres")).expect("install PostgreSQL")
}

/// Runs SQL with the installation's psql and returns its unaligned output.
fn psql(install: &PgInstall, port: u16, sql: &str) -> Result<String, String> {
    let output = Command::new(install.bin("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Stops a test's cluster and removes its folder even when the test fails.
struct StopOnDrop<'a>(&'a Path, Option<PgCluster>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(cluster) = &self.1 {
            let _ = cluster.stop();
        }
        let _ = std::fs::remove_dir_all(self.0);
    }
}

#[test]
fn installing_twice_reuses_the_first_installation() {
    let first = shared_install();
    let started = Instant::now();
    let second = shared_install();
    assert_eq!(first, second);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(second.bin("pg_ctl").is_file());
}

#[test]
fn ensure_running_from_two_processes_at_once_yields_one_server_with_pgvector() {
    let install = shared_install();
    let dir = scratch_dir().join(format!("ensure-{}", unique_suffix()));
    let port = loopback::free_loopback_port().unwrap();
    let _cleanup = StopOnDrop(&dir, Some(PgCluster::in_dir(&install, &dir, port).unwrap()));

    // Two callers racing, as `make up` and a test run might.
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (install, dir) = (install.clone(), dir.clone());
            thread::spawn(move || PgCluster::ensure_running_in(&install, &dir, port))
        })
        .collect();
    let clusters: Vec<PgCluster> = callers
        .into_iter()
        .map(|caller| caller.join().unwrap().expect("ensure_running_in"))
        .collect();
    assert_eq!(clusters[0].port(), clusters[1].port());

    let started = Instant::now();
    let cluster = PgCluster::ensure_running_in(&install, &dir, port).unwrap();
    let again = started.elapsed();
    assert!(again < Duration::from_secs(2), "second ensure took {again:?}");

    let version = psql(
        &install,
        port,
        "CREATE EXTENSION IF NOT EXISTS vector; SELECT extversion FROM pg_extension WHERE extname = 'vector'",
    )
    .unwrap();
    assert_eq!(version, "0.8.6");
    assert_eq!(cluster.url("app"), format!("postgres://postgres@127.0.0.1:{port}/app"));

    // The same folder on another port is refused rather than half-used.
    let other_port = loopback::free_loopback_port().unwrap();
    assert!(PgCluster::ensure_running_in(&install, &dir, other_port).is_err());

    cluster.stop().unwrap();
    assert!(!cluster.is_running().unwrap());
    cluster.stop().unwrap();
}

#[test]
fn a_private_cluster_recovers_from_kill9_and_is_gone_after_drop() {
    let install = shared_install();
    let private = PgCluster::private(&install, &scratch_dir()).unwrap();
    let port = private.port();
    psql(&install, port, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)").unwrap();

    private.kill9().unwrap();
    assert!(!private.is_running().unwrap());
    assert!(psql(&install, port, "SELECT 1").is_err());

    private.start().unwrap();
    assert_eq!(psql(&install, port, "SELECT count(*) FROM kept").unwrap(), "1");

    private.restart().unwrap();
    assert_eq!(psql(&install, port, "SELECT count(*) FROM kept").unwrap(), "1");

    let dir = private.dir().to_owned();
    drop(private);
    assert!(!dir.exists());
    assert!(!loopback::accepts_tcp("127.0.0.1", port, Duration::from_secs(1)));
}
