//! A PostgreSQL cluster (data folder, port, socket folder, log) run from the
//! embedded installation: created and started idempotently for `make up`,
//! CI and the shared test server, or privately for a test that kills or
//! restarts it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::external_command::{self, CommandError};
use crate::loopback;
use crate::os_user::{DEFAULT_SERVER_USER, OsUserError, RunAs};
use crate::postgres_install::{PgInstall, PgInstallError};

/// The longest path a Unix socket can have (sun_path is 108 bytes with the
/// final NUL); Postgres names its socket `<dir>/.s.PGSQL.<port>`.
const MAX_SOCKET_PATH: usize = 107;

/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_WAIT_SECS: u64 = 60;

/// Why a cluster could not be set up, started, stopped or queried.
#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    /// The binaries could not be installed.
    #[error(transparent)]
    Install(#[from] PgInstallError),
    /// The unprivileged server user could not be made or given its folders.
    #[error(transparent)]
    OsUser(#[from] OsUserError),
    /// initdb or pg_ctl could not be run, or failed.
    #[error("{action} failed{log}")]
    Command {
        /// What was being done.
        action: &'static str,
        /// The end of the server log, when it says more than the command.
        log: String,
        /// The command that failed.
        #[source]
        source: CommandError,
    },
    /// The server started but does not accept TCP connections.
    #[error("the server says it is running but 127.0.0.1:{port} refuses connections")]
    NotListening {
        /// The port it should listen on.
        port: u16,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// A server already runs on this data folder, on another port.
    #[error(
        "a server already runs on {data_dir} on port {running_port}, not {port}: stop it first"
    )]
    RunningOnOtherPort {
        /// The data folder.
        data_dir: PathBuf,
        /// The port it listens on.
        running_port: u16,
        /// The port asked for.
        port: u16,
    },
    /// The socket path would be longer than a Unix socket path can be.
    #[error(
        "the socket path {path} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter folder"
    )]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// A path cannot be passed to pg_ctl's option string.
    #[error("the path {path} contains a single quote, which pg_ctl's -o option cannot carry")]
    UnquotablePath {
        /// The path.
        path: PathBuf,
    },
    /// `postmaster.pid` is missing or unreadable.
    #[error("{path} does not name a running server")]
    NoPostmasterPid {
        /// The pid file.
        path: PathBuf,
    },
    /// A file or folder could not be created, read, locked or signalled.
    #[error("could not {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// A PostgreSQL cluster: one data folder served on one loopback port.
///
/// All methods block (they run `initdb` and `pg_ctl`); from async code, call
/// them in `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct PgCluster {
    install: PgInstall,
    data_dir: PathBuf,
    pub(crate) port: u16,
    /// Where the server puts its Unix socket; clients here use TCP, but the
    /// server needs a folder it may write to.
    socket_dir: PathBuf,
    log_file: PathBuf,
    /// Postgres refuses to run as root, so as root it runs as a system user.
    run_as: RunAs,
}

impl PgCluster {
    /// Installs PostgreSQL under `root` and creates and starts the cluster
    /// in `root` (`data/`, `run/`, `postgres.log`) on `port`, doing only what
    /// is not done yet. This is what `make up`, CI and the test kit all call.
    /// Safe when two processes call it at once: they take turns on
    /// `<root>/.lock`.
    pub fn ensure_running(root: &Path, port: u16) -> Result<PgCluster, PgServerError> {
        create_dir(root)?;
        let _lock = lock_file(&root.join(".lock"))?;
        let install = PgInstall::ensure(root)?;
        PgCluster::ensure_running_locked(&install, root, port)
    }

    /// Like [`PgCluster::ensure_running`], with an installation made
    /// elsewhere, for a cluster in `dir` (`data/`, `run/`, `postgres.log`).
    pub fn ensure_running_in(
        install: &PgInstall,
        dir: &Path,
        port: u16,
    ) -> Result<PgCluster, PgServerError> {
        create_dir(dir)?;
        let _lock = lock_file(&dir.join(".lock"))?;
        PgCluster::ensure_running_locked(install, dir, port)
    }

    fn ensure_running_locked(
        install: &PgInstall,
        dir: &Path,
        port: u16,
    ) -> Result<PgCluster, PgServerError> {
        let cluster = PgCluster::in_dir(install, dir, port)?;
        cluster.init()?;
        cluster.start()?;
        Ok(cluster)
    }

    /// The cluster laid out in `dir` (`data/`, `run/`, `postgres.log`) on
    /// `port`, with its folders made and handed to the server user, but
    /// neither initialised nor started.
    pub fn in_dir(install: &PgInstall, dir: &Path, port: u16) -> Result<PgCluster, PgServerError> {
        let cluster = PgCluster {
            install: install.clone(),
            data_dir: dir.join("data"),
            port,
            socket_dir: dir.join("run"),
            log_file: dir.join("postgres.log"),
            run_as: RunAs::unprivileged(DEFAULT_SERVER_USER)?,
        };
        let socket = cluster.socket_dir.join(format!(".s.PGSQL.{port}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(PgServerError::SocketPathTooLong { path: socket });
        }
        create_dir(dir)?;
        // initdb insists on a data folder only its owner can enter.
        create_private_dir(&cluster.data_dir, 0o700)?;
        create_private_dir(&cluster.socket_dir, 0o755)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&cluster.log_file)
            .map_err(io_error("create", &cluster.log_file))?;
        for path in [&cluster.data_dir, &cluster.socket_dir, &cluster.log_file] {
            cluster.run_as.take_ownership(path)?;
        }
        cluster.run_as.check_traversable(&cluster.data_dir)?;
        cluster.run_as.check_traversable(&cluster.socket_dir)?;
        Ok(cluster)
    }

    /// Creates the cluster with initdb (superuser `postgres`, trust
    /// authentication, UTF8), unless it exists already.
    pub fn init(&self) -> Result<(), PgServerError> {
        if self.data_dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        let initdb = |locale: &str| {
            let mut cmd = self.run_as.command(self.install.bin("initdb"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
                .arg(format!("--locale={locale}"))
                .current_dir(&self.data_dir);
            external_command::run_checked(&mut cmd)
        };
        // C.UTF-8 sorts like C but knows UTF-8 character classes; a machine
        // without that locale still gets a working cluster with plain C.
        if let Err(error) = initdb("C.UTF-8") {
            tracing::warn!(%error, "initdb with the C.UTF-8 locale failed, retrying with C");
            initdb("C").map_err(|source| PgServerError::Command {
                action: "initdb",
                log: String::new(),
                source,
            })?;
        }
        Ok(())
    }

    /// Starts the server unless it already runs on this data folder and
    /// port, then checks that it accepts TCP connections.
    pub fn start(&self) -> Result<(), PgServerError> {
        if self.is_running()? {
            match self.running_port() {
                Some(running_port) if running_port != self.port => {
                    return Err(PgServerError::RunningOnOtherPort {
                        data_dir: self.data_dir.clone(),
                        running_port,
                        port: self.port,
                    });
                }
                _ => return self.wait_for_tcp(),
            }
        }
        let socket_dir = quoted(&self.socket_dir)?;
        let options = format!(
            "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB -c fsync=on",
            port = self.port,
        );
        let mut cmd = self.pg_ctl();
        cmd.arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(options)
            .arg("start");
        external_command::run_checked(&mut cmd).map_err(|source| PgServerError::Command {
            action: "pg_ctl start",
            log: self.log_tail(),
            source,
        })?;
        self.wait_for_tcp()
    }

    /// Stops the server (fast shutdown: sessions are cut, work is kept), if
    /// it runs.
    pub fn stop(&self) -> Result<(), PgServerError> {
        self.stop_with_mode("fast")
    }

    /// Stops the server, if it runs, then starts it.
    pub fn restart(&self) -> Result<(), PgServerError> {
        self.stop()?;
        self.start()
    }

    /// Whether a server runs on this data folder, as `pg_ctl status` sees it.
    pub fn is_running(&self) -> Result<bool, PgServerError> {
        let mut cmd = self.pg_ctl();
        cmd.arg("status");
        let output =
            external_command::run_captured(&mut cmd).map_err(|source| PgServerError::Command {
                action: "pg_ctl status",
                log: String::new(),
                source,
            })?;
        // 3: not running; 4: no cluster in the data folder (not yet made).
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3 | 4) => Ok(false),
            _ => Err(PgServerError::Command {
                action: "pg_ctl status",
                log: String::new(),
                source: external_command::failure(&cmd, &output),
            }),
        }
    }

    /// The connection URL for database `db`, as the superuser `postgres`
    /// over TCP on loopback.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The folder of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The installation the cluster runs from.
    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    pub(crate) fn stop_with_mode(&self, mode: &str) -> Result<(), PgServerError> {
        if !self.is_running()? {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["-m", mode, "stop"]);
        match external_command::run_checked(&mut cmd) {
            Ok(_) => Ok(()),
            // Someone else stopped it between our check and our command.
            Err(_) if !self.is_running()? => Ok(()),
            Err(source) => Err(PgServerError::Command {
                action: "pg_ctl stop",
                log: self.log_tail(),
                source,
            }),
        }
    }

    fn pg_ctl(&self) -> std::process::Command {
        let mut cmd = self.run_as.command(self.install.bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string()])
            // The server user may not be allowed into our working folder.
            .current_dir(&self.data_dir);
        cmd
    }

    /// The port in `postmaster.pid` (its fourth line), if readable.
    fn running_port(&self) -> Option<u16> {
        let contents = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        contents.lines().nth(3)?.trim().parse().ok()
    }

    fn wait_for_tcp(&self) -> Result<(), PgServerError> {
        // pg_ctl -w returns once the server is ready, so this normally
        // succeeds at once; the deadline covers a busy machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match loopback::connect_tcp("127.0.0.1", self.port, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(source) if Instant::now() >= deadline => {
                    return Err(PgServerError::NotListening {
                        port: self.port,
                        source,
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether the last start failed because the port was taken.
    pub(crate) fn lost_port_race(&self) -> bool {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        log.contains("could not bind") || log.contains("Address already in use")
    }

    fn log_tail(&self) -> String {
        match fs::read_to_string(&self.log_file) {
            Ok(log) if !log.trim().is_empty() => {
                let lines: Vec<&str> = log.lines().collect();
                let start = lines.len().saturating_sub(15);
                format!(
                    "; end of {}:\n{}",
                    self.log_file.display(),
                    lines[start..].join("\n")
                )
            }
            _ => String::new(),
        }
    }
}

fn quoted(path: &Path) -> Result<String, PgServerError> {
    let text = path.to_string_lossy();
    if text.contains('\'') {
        return Err(PgServerError::UnquotablePath {
            path: path.to_owned(),
        });
    }
    Ok(format!("'{text}'"))
}

pub(crate) fn free_port(dir: &Path) -> Result<u16, PgServerError> {
    loopback::free_loopback_port().map_err(io_error("find a free port for", dir))
}

/// Creates `path` and its parents; folders we make are opened to others
/// (0755) so the server user can pass through them whatever our umask.
pub(crate) fn create_dir(path: &Path) -> Result<(), PgServerError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(io_error("set the permissions of", path)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(io_error("create", path)(error)),
    }
}

fn create_private_dir(path: &Path, mode: u32) -> Result<(), PgServerError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(io_error("create", path)(error)),
    }
}

fn lock_file(path: &Path) -> Result<File, PgServerError> {
    let file = File::create(path).map_err(io_error("create", path))?;
    file.lock().map_err(io_error("lock", path))?;
    Ok(file)
}

pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> PgServerError {
    let path = path.to_owned();
    move |source| PgServerError::Io {
        action,
        path,
        source,
    }
}
