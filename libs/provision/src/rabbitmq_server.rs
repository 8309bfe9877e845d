//! Making sure the RabbitMQ broker Stratavore talks to is up: a reachable
//! broker is left alone; a local one that is installed but down is started.
//! The machine's broker is never stopped from here.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::external_command::{self, CommandError};
use crate::loopback;

/// How long a broker we started may take to accept connections.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the RabbitMQ programs live when they are not on `PATH` (root's
/// `PATH` has /usr/sbin, an ordinary user's does not).
const RABBITMQ_DIRS: [&str; 2] = ["/usr/sbin", "/usr/lib/rabbitmq/bin"];

/// Why the broker could not be reached or started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerServerError {
    /// The AMQP URL could not be understood.
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The broker is local and down, and RabbitMQ is not installed.
    #[error(
        "RabbitMQ is not installed: install the Debian package rabbitmq-server (apt-get install rabbitmq-server)"
    )]
    NotInstalled,
    /// The broker is on another machine and does not answer; starting it is
    /// not ours to do.
    #[error("the RabbitMQ broker at {host}:{port} does not accept connections")]
    Unreachable {
        /// The broker's host.
        host: String,
        /// The broker's port.
        port: u16,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// The local node runs but does not listen where the URL points.
    #[error(
        "the local RabbitMQ node is running but {host}:{port} refuses connections: check the listeners in /etc/rabbitmq/rabbitmq.conf"
    )]
    RunningElsewhere {
        /// The broker's host.
        host: String,
        /// The broker's port.
        port: u16,
    },
    /// A RabbitMQ program could not be run or failed.
    #[error("{action} failed")]
    Command {
        /// What was being done.
        action: &'static str,
        /// The command that failed.
        #[source]
        source: CommandError,
    },
    /// The broker did not come up in time.
    #[error("RabbitMQ did not accept connections on {host}:{port} within {waited:?}; see {logs}")]
    StartTimeout {
        /// The broker's host.
        host: String,
        /// The broker's port.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// Where its logs are.
        logs: String,
    },
    /// A file or folder could not be created, written or handed over.
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

/// Makes sure a broker accepts connections at `amqp_url`: if it does, that
/// is all; if it is on this machine and RabbitMQ is installed, starts it
/// (`rabbitmq-server -detached`) and waits up to 90 s for it. Blocking: from
/// async code, call it in `spawn_blocking`.
pub fn ensure_broker_running(amqp_url: &str) -> Result<(), BrokerServerError> {
    ensure_broker_running_with(amqp_url, &rabbitmq_search_path())
}

fn ensure_broker_running_with(
    amqp_url: &str,
    search_path: &[PathBuf],
) -> Result<(), BrokerServerError> {
    let address = BrokerAddress::parse(amqp_url)?;
    let (host, port) = (address.host.as_str(), address.port);
    let source = match loopback::connect_tcp(host, port, Duration::from_secs(2)) {
        Ok(_) => return Ok(()),
        Err(source) => source,
    };
    if !address.is_loopback() {
        return Err(BrokerServerError::Unreachable {
            host: host.to_owned(),
            port,
            source,
        });
    }
    let server =
        find_program("rabbitmq-server", search_path).ok_or(BrokerServerError::NotInstalled)?;
    if let Some(ctl) = find_program("rabbitmqctl", search_path) {
        // A running node that does not listen there would never start
        // listening by our starting it again; say so now, not in 90 s.
        let mut status = Command::new(ctl);
        status.args(["-q", "status"]);
        if external_command::run_checked(&mut status).is_ok() {
            return Err(BrokerServerError::RunningElsewhere {
                host: host.to_owned(),
                port,
            });
        }
    }
    tracing::info!(%host, port, "starting the local RabbitMQ broker");
    let mut start = Command::new(server);
    // The detached node would hold captured pipes open for as long as it
    // runs, so its output goes nowhere; its logs are in /var/log/rabbitmq.
    start
        .arg("-detached")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = start
        .status()
        .map_err(|source| BrokerServerError::Command {
            action: "rabbitmq-server -detached",
            source: CommandError::Spawn {
                program: "rabbitmq-server".to_owned(),
                source,
            },
        })?;
    if !status.success() {
        tracing::warn!(%status, "rabbitmq-server -detached failed; waiting in case another process started it");
    }
    wait_for_tcp(host, port, BROKER_START_TIMEOUT, "/var/log/rabbitmq")
}

/// Polls until `host:port` accepts TCP connections, up to `timeout`.
pub(crate) fn wait_for_tcp(
    host: &str,
    port: u16,
    timeout: Duration,
    logs: &str,
) -> Result<(), BrokerServerError> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if loopback::accepts_tcp(host, port, Duration::from_secs(1)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(BrokerServerError::StartTimeout {
        host: host.to_owned(),
        port,
        waited: timeout,
        logs: logs.to_owned(),
    })
}

/// Where to look for the RabbitMQ programs: `PATH`, then the Debian
/// package's folders.
pub(crate) fn rabbitmq_search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(RABBITMQ_DIRS.iter().map(PathBuf::from));
    dirs
}

/// The first executable file called `name` in `search_path`.
pub(crate) fn find_program(name: &str, search_path: &[PathBuf]) -> Option<PathBuf> {
    search_path
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable_file(path))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Host and port of an AMQP URL.
#[derive(Debug, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerAddress {
    /// Reads `amqp[s]://[user[:password]@]host[:port][/vhost][?query]`.
    pub fn parse(url: &str) -> Result<BrokerAddress, BrokerServerError> {
        let invalid = |reason| BrokerServerError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected amqp:// or amqps://"))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => 5672,
            "amqps" => 5671,
            _ => return Err(invalid("expected amqp:// or amqps://")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // The password may contain '@' only percent-encoded, so the last
        // '@' ends the user information.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        let port = match port {
            None | Some("") => default_port,
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
        };
        // As in lapin: no host means this machine.
        let host = if host.is_empty() { "localhost" } else { host };
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
        })
    }

    fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(url: &str) -> (String, u16) {
        let parsed = BrokerAddress::parse(url).unwrap();
        (parsed.host, parsed.port)
    }

    #[test]
    fn amqp_urls_yield_host_and_port_with_scheme_defaults() {
        assert_eq!(
            address("amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("127.0.0.1".into(), 5672)
        );
        assert_eq!(address("amqp://localhost"), ("localhost".into(), 5672));
        assert_eq!(
            address("amqps://u:p@broker.example/vh?heartbeat=10"),
            ("broker.example".into(), 5671)
        );
        assert_eq!(address("amqp://[::1]:5673/%2f"), ("::1".into(), 5673));
        assert_eq!(address("amqp://u:p%40x@:5674"), ("localhost".into(), 5674));
    }

    #[test]
    fn malformed_amqp_urls_are_refused() {
        for url in [
            "http://localhost",
            "localhost:5672",
            "amqp://host:99999",
            "amqp://[::1",
        ] {
            assert!(
                matches!(
                    BrokerAddress::parse(url),
                    Err(BrokerServerError::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for (url, expected) in [
            ("amqp://localhost", true),
            ("amqp://127.0.0.2", true),
            ("amqp://[::1]", true),
            ("amqp://10.0.0.1", false),
            ("amqp://rabbit.internal", false),
        ] {
            assert_eq!(
                BrokerAddress::parse(url).unwrap().is_loopback(),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn a_down_local_broker_without_rabbitmq_installed_names_the_package() {
        let port = loopback::free_loopback_port().unwrap();
        let error =
            ensure_broker_running_with(&format!("amqp://127.0.0.1:{port}"), &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "RabbitMQ is not installed: install the Debian package rabbitmq-server (apt-get install rabbitmq-server)"
        );
    }

    #[test]
    fn a_running_broker_is_left_alone() {
        let port = loopback::free_loopback_port().unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        ensure_broker_running_with(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), &[])
            .unwrap();
        drop(listener);
    }
}
