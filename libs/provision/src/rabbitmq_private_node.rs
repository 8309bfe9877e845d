//! A RabbitMQ node of a test's own (its own node name, ports, config and
//! folders) beside the machine's broker, for tests that stop and restart the
//! broker without disturbing anyone else.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::external_command::{self, CommandError};
use crate::loopback;
use crate::os_user::{OsUser, running_as_root};
use crate::rabbitmq_server::{self, BrokerServerError};
use crate::unique_name;

/// How long the node may take to boot or to restart its application.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private RabbitMQ node; dropped, it is stopped and its folder removed.
#[derive(Debug)]
pub struct PrivateRabbitNode {
    dir: PathBuf,
    node_name: String,
    amqp_port: u16,
    rabbitmqctl: PathBuf,
    stopped: bool,
}

impl PrivateRabbitNode {
    /// Starts a node in a new folder under `dir`, on free ports, and waits
    /// (up to 60 s) until it has booted and accepts AMQP connections.
    /// Blocking: from async code, call it in `spawn_blocking`.
    pub fn start(dir: &Path) -> Result<PrivateRabbitNode, BrokerServerError> {
        let search_path = rabbitmq_server::rabbitmq_search_path();
        let server = rabbitmq_server::find_program("rabbitmq-server", &search_path)
            .ok_or(BrokerServerError::NotInstalled)?;
        let rabbitmqctl = rabbitmq_server::find_program("rabbitmqctl", &search_path)
            .ok_or(BrokerServerError::NotInstalled)?;
        let suffix = unique_name::unique_suffix();
        let own_dir = dir.join(format!("rabbit-{suffix}"));
        let amqp_port = free_port(&own_dir)?;
        // The distribution port is where rabbitmqctl reaches the node; it
        // must differ from the machine node's 25672 and from any other
        // private node's.
        let mut dist_port = free_port(&own_dir)?;
        while dist_port == amqp_port {
            dist_port = free_port(&own_dir)?;
        }
        let mut node = PrivateRabbitNode {
            dir: own_dir,
            node_name: format!("rabbit-{suffix}@localhost"),
            amqp_port,
            rabbitmqctl,
            // Nothing to stop until the server has been launched.
            stopped: true,
        };
        node.write_files()?;
        node.launch(&server, dist_port)?;
        node.stopped = false;
        node.await_startup()?;
        Ok(node)
    }

    /// The URL to reach the node as `guest` (allowed from anywhere: the
    /// config lifts the loopback-only restriction), default virtual host.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Stops the RabbitMQ application (connections are cut and the port
    /// closes) while the node itself keeps running, as a broker restart
    /// looks to clients; returns once the port refuses connections.
    pub fn stop_app(&self) -> Result<(), BrokerServerError> {
        self.ctl("rabbitmqctl stop_app", &["stop_app"])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while loopback::accepts_tcp("127.0.0.1", self.amqp_port, Duration::from_secs(1))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts the RabbitMQ application again; returns once the port accepts
    /// connections.
    pub fn start_app(&self) -> Result<(), BrokerServerError> {
        self.ctl("rabbitmqctl start_app", &["start_app"])?;
        self.wait_for_port()
    }

    /// Stops the node and waits until its process has exited.
    pub fn stop(&mut self) -> Result<(), BrokerServerError> {
        if self.stopped {
            return Ok(());
        }
        // Given the pid file, rabbitmqctl waits for the OS process to end,
        // so the folder is no longer in use when this returns.
        let pid_file = self.dir.join("rabbit.pid");
        let pid_arg = pid_file.to_string_lossy().into_owned();
        let args: Vec<&str> = if pid_file.is_file() {
            vec!["stop", &pid_arg]
        } else {
            vec!["stop"]
        };
        self.ctl("rabbitmqctl stop", &args)?;
        self.stopped = true;
        Ok(())
    }

    fn write_files(&self) -> Result<(), BrokerServerError> {
        for folder in [
            self.dir.clone(),
            self.dir.join("mnesia"),
            self.dir.join("log"),
        ] {
            fs::create_dir_all(&folder).map_err(io_error("create", &folder))?;
        }
        let config = format!(
            "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
            self.amqp_port
        );
        write(&self.dir.join("rabbitmq.conf"), &config)?;
        // No plugins: the management plugin would want a port of its own.
        write(&self.dir.join("enabled_plugins"), "[].\n")?;
        // As root, the Debian scripts switch to the rabbitmq user, which
        // must be able to write the node's folders.
        if running_as_root() {
            let owner = OsUser::lookup("rabbitmq").ok().flatten();
            if let Some(owner) = owner {
                chown_tree(&self.dir, &owner)?;
            }
        }
        Ok(())
    }

    fn launch(&self, server: &Path, dist_port: u16) -> Result<(), BrokerServerError> {
        let startup_log = self.dir.join("startup.log");
        let log = File::create(&startup_log).map_err(io_error("create", &startup_log))?;
        let log_err = log.try_clone().map_err(io_error("open", &startup_log))?;
        let mut cmd = Command::new(server);
        cmd.arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.dir.join("rabbit.pid"))
            // The detached node would hold captured pipes open for its whole
            // life, so its early output goes to a file instead.
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let status = cmd.status().map_err(|source| BrokerServerError::Command {
            action: "rabbitmq-server -detached",
            source: CommandError::Spawn {
                program: server.to_string_lossy().into_owned(),
                source,
            },
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(BrokerServerError::Command {
                action: "rabbitmq-server -detached",
                source: CommandError::Failed {
                    command: external_command::command_line(&cmd),
                    status,
                    output: fs::read_to_string(&startup_log).unwrap_or_default(),
                },
            })
        }
    }

    /// Waits until the node has booted (`await_startup`) and the AMQP port
    /// accepts connections; before the node registers with epmd,
    /// rabbitmqctl cannot find it and fails at once, hence the polling.
    fn await_startup(&self) -> Result<(), BrokerServerError> {
        let started = Instant::now();
        let timeout_secs = START_TIMEOUT.as_secs().to_string();
        loop {
            let mut cmd = self.ctl_command(&["await_startup", "--timeout", &timeout_secs]);
            match external_command::run_checked(&mut cmd) {
                Ok(_) => break,
                Err(source) if started.elapsed() >= START_TIMEOUT => {
                    return Err(BrokerServerError::Command {
                        action: "rabbitmqctl await_startup",
                        source,
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(250)),
            }
        }
        self.wait_for_port()
    }

    fn wait_for_port(&self) -> Result<(), BrokerServerError> {
        rabbitmq_server::wait_for_tcp(
            "127.0.0.1",
            self.amqp_port,
            START_TIMEOUT,
            &self.dir.join("log").to_string_lossy(),
        )
    }

    fn ctl(&self, action: &'static str, args: &[&str]) -> Result<(), BrokerServerError> {
        external_command::run_checked(&mut self.ctl_command(args))
            .map(drop)
            .map_err(|source| BrokerServerError::Command { action, source })
    }

    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.rabbitmqctl);
        cmd.args(["-q", "-n", &self.node_name]).args(args);
        cmd
    }
}

impl Drop for PrivateRabbitNode {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, node = %self.node_name, "could not stop a private RabbitMQ node");
        }
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "could not remove a private RabbitMQ folder");
        }
    }
}

fn chown_tree(path: &Path, owner: &OsUser) -> Result<(), BrokerServerError> {
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
        .map_err(io_error("change the owner of", path))?;
    if path.is_dir() {
        for entry in fs::read_dir(path).map_err(io_error("list", path))? {
            let entry = entry.map_err(io_error("list", path))?;
            chown_tree(&entry.path(), owner)?;
        }
    }
    Ok(())
}

fn write(path: &Path, contents: &str) -> Result<(), BrokerServerError> {
    fs::write(path, contents).map_err(io_error("write", path))
}

fn free_port(dir: &Path) -> Result<u16, BrokerServerError> {
    loopback::free_loopback_port().map_err(io_error("find a free port for", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BrokerServerError {
    let path = path.to_owned();
    move |source| BrokerServerError::Io {
        action,
        path,
        source,
    }
}
