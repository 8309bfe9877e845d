//! Loopback ports: finding a free one for a private server, and asking
//! whether a server accepts TCP connections yet.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The lowest port [`free_loopback_port`] picks: above the well-known and
/// commonly configured ports (Stratavore's own defaults are below 8000).
const LOWEST_PICKED_PORT: u16 = 15000;

/// How many random ports are tried before leaving the choice to the kernel.
const RANDOM_PORT_ATTEMPTS: u32 = 64;

/// A port on 127.0.0.1 that nothing listens on at the moment of the call.
///
/// The port is picked at random below the kernel's ephemeral range, which
/// the kernel uses for `bind(0)` and outgoing connections, and is checked
/// by connecting to it rather than by binding it: a listener opened to test
/// a port lives on in any child process forked meanwhile by another thread
/// (until that child calls exec), and was seen here to accept connections
/// after it had been closed in about 10 % of parallel test runs. Nothing
/// reserves the port after the call, so a server that fails to bind it
/// should retry with a new one.
pub fn free_loopback_port() -> io::Result<u16> {
    let ephemeral_low = ephemeral_port_range().map_or(32768, |(low, _)| low);
    if ephemeral_low > LOWEST_PICKED_PORT + 1000 {
        let span = u64::from(ephemeral_low - LOWEST_PICKED_PORT);
        let random = RandomState::new();
        for attempt in 0..RANDOM_PORT_ATTEMPTS {
            let offset = random.hash_one((attempt, Instant::now())) % span;
            // offset < span, which came from a u16 difference.
            let port = LOWEST_PICKED_PORT + u16::try_from(offset).unwrap_or(0);
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => return Ok(port),
                _ => continue,
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The kernel's range for `bind(0)` and outgoing connections.
fn ephemeral_port_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|b| b.parse::<u16>().ok());
    Some((bounds.next()??, bounds.next()??))
}

/// Whether a TCP connection to `host:port` succeeds within `timeout`, for
/// any of the addresses `host` resolves to.
pub fn accepts_tcp(host: &str, port: u16, timeout: Duration) -> bool {
    connect_tcp(host, port, timeout).is_ok()
}

/// Connects to `host:port` within `timeout`, trying each address `host`
/// resolves to, and returns the last error if none answers.
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addresses: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last_error = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    );
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_refuses_connections_until_someone_listens() {
        let port = free_loopback_port().unwrap();
        assert!(!accepts_tcp("127.0.0.1", port, Duration::from_secs(1)));
        let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        assert!(accepts_tcp("localhost", port, Duration::from_secs(1)));
    }
}
