//! A loopback TCP proxy for fault tests: put it between a service and
//! Postgres or RabbitMQ, then delay, reset or blackhole the link.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Chunks read ahead of the writer per direction; bounds memory when the
/// receiving side is slow or the link is delayed.
const CHUNKS_IN_FLIGHT: usize = 64;
const CHUNK_SIZE: usize = 16 * 1024;

/// How [`TcpProxy::cut`] breaks the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Close every current connection on both sides with a TCP RST, and
    /// reset new ones as soon as they are accepted, until [`TcpProxy::heal`].
    Reset,
    /// Keep every socket open but forward no bytes either way, like a
    /// dropped link that sends no RST. New connections are accepted and
    /// blackholed too. Bytes held meanwhile are delivered after a heal, as
    /// TCP retransmission would.
    Blackhole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up,
    Cut(CutMode),
}

#[derive(Clone, Copy, Debug)]
struct Control {
    link: Link,
    delay: Duration,
}

/// A proxy from a loopback port to `upstream`. Dropping it stops it and
/// closes every connection it carries.
#[derive(Debug)]
pub struct TcpProxy {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    connections: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy in front of the server a URL names
    /// (`scheme://[user[:password]@]host:port[/rest]`), and the same URL
    /// through it.
    pub async fn for_url(url: &str) -> io::Result<(TcpProxy, String)> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a server URL: {url}"),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
        let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let upstream = tokio::net::lookup_host(authority)
            .await?
            .next()
            .ok_or_else(bad)?;
        let proxy = TcpProxy::start(upstream).await?;
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let proxied = format!("{scheme}://{at}{}{tail}", proxy.local_addr());
        Ok((proxy, proxied))
    }

    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    /// Must be called inside a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local_addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control {
            link: Link::Up,
            delay: Duration::ZERO,
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            control.clone(),
            Arc::clone(&connections),
        ));
        Ok(TcpProxy {
            local_addr,
            upstream,
            control,
            connections,
            accept_task,
        })
    }

    /// The address clients connect to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Delays every chunk read from now on by `delay`, in both directions.
    /// Chunks are pipelined, so this adds latency without capping throughput.
    pub fn set_delay(&self, delay: Duration) {
        self.control.send_modify(|control| control.delay = delay);
    }

    /// Breaks the link as `mode` says, until [`heal`](Self::heal).
    pub fn cut(&self, mode: CutMode) {
        self.control
            .send_modify(|control| control.link = Link::Cut(mode));
    }

    /// Restores forwarding: blackholed connections resume, new connections
    /// are proxied again. Connections closed by a reset stay closed.
    pub fn heal(&self) {
        self.control.send_modify(|control| control.link = Link::Up);
    }

    /// Connections currently proxied (reset ones disappear shortly after the
    /// cut, once their tasks have closed them).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Dropping the aborted task drops its JoinSet, which aborts every
        // connection task and closes their sockets.
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    connections: Arc<AtomicUsize>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if control.borrow().link == Link::Cut(CutMode::Reset) {
                        reset(&client);
                        continue;
                    }
                    let guard = ConnectionGuard::new(&connections);
                    tasks.spawn(proxy_connection(client, upstream, control.subscribe(), guard));
                }
                Err(err) => {
                    // Usually EMFILE; retrying at once would spin.
                    tracing::warn!(error = %err, "tcp proxy cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reaps finished connections so the set does not grow forever.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Counts a connection for as long as its task lives.
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes the next close send an RST instead of a FIN, as a reset link would.
fn reset(stream: &TcpStream) {
    if let Err(err) = stream.set_zero_linger() {
        tracing::debug!(error = %err, "tcp proxy cannot set SO_LINGER; closing with FIN");
    }
}

async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    _guard: ConnectionGuard,
) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(err) => {
            tracing::debug!(%upstream, error = %err, "tcp proxy cannot reach upstream");
            reset(&client);
            return;
        }
    };
    // The proxy must not add Nagle delays of its own on top of `set_delay`.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let clean = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let (upward, downward) = (control.clone(), control.clone());
        // try_join: when one side fails (say, the client sent an RST), the
        // other is cut at once, as it would be without the proxy in between.
        let forward = async move {
            tokio::try_join!(
                pump(client_read, server_write, upward),
                pump(server_read, client_write, downward),
            )
        };
        tokio::select! {
            forwarded = forward => match forwarded {
                Ok(_) => true,
                Err(err) => {
                    tracing::debug!(error = %err, "tcp proxy connection failed; resetting both sides");
                    false
                }
            },
            () = wait_for_reset(&mut control) => false,
        }
    };
    if !clean {
        reset(&client);
        reset(&server);
    }
}

async fn wait_for_reset(control: &mut watch::Receiver<Control>) {
    if control
        .wait_for(|c| c.link == Link::Cut(CutMode::Reset))
        .await
        .is_err()
    {
        // The proxy is gone and this task is being aborted; nothing to reset.
        std::future::pending::<()>().await;
    }
}

async fn wait_until_forwarding(control: &mut watch::Receiver<Control>) {
    // An error means the proxy is gone; the task is about to be aborted.
    let _ = control
        .wait_for(|c| c.link != Link::Cut(CutMode::Blackhole))
        .await;
}

/// Copies one direction. The reader stamps each chunk with its due time and
/// the writer waits for it, so delay is latency, and a blackhole holds the
/// bytes on both ends until healed.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    control: watch::Receiver<Control>,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let mut read_control = control.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            wait_until_forwarding(&mut read_control).await;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let due = Instant::now() + read_control.borrow().delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                // The writer failed; its error is the one to report.
                return Ok(());
            }
        }
    };
    let mut write_control = control;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            wait_until_forwarding(&mut write_control).await;
            to.write_all(&chunk).await?;
        }
        // Forward the half-close, so protocols that rely on EOF still work.
        to.shutdown().await
    };
    let (read, write) = tokio::join!(reader, writer);
    read.and(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
        stream.write_all(payload).await.unwrap();
        let mut buf = vec![0u8; payload.len()];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reading a closed connection ends with an error or EOF, never hangs.
    async fn assert_closed(stream: &mut TcpStream) -> io::Result<usize> {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a reset connection must not hang");
        if let Ok(n @ 1..) = read {
            panic!("read {n} bytes from a closed connection");
        }
        read
    }

    fn assert_reset(read: io::Result<usize>) {
        let kind = read.map_err(|err| err.kind());
        assert_eq!(kind, Err(io::ErrorKind::ConnectionReset), "expected an RST");
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_connections_are_counted() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");
        let big = vec![7u8; 1 << 20];
        assert_eq!(round_trip(&mut stream, &big).await, big);
        assert_eq!(proxy.connection_count(), 1);
        drop(stream);
        eventually("the closed connection to be uncounted", || {
            proxy.connection_count() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn delay_applies_in_both_directions() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await;
        proxy.set_delay(Duration::from_millis(150));
        let started = Instant::now();
        round_trip(&mut stream, b"slow").await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        proxy.set_delay(Duration::ZERO);
    }

    #[tokio::test]
    async fn reset_closes_connections_and_refuses_new_ones_until_healed() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut stream, b"before").await;

        proxy.cut(CutMode::Reset);
        assert_reset(assert_closed(&mut stream).await);
        eventually("reset connections to be uncounted", || {
            proxy.connection_count() == 0
        })
        .await;
        let mut refused = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_reset(assert_closed(&mut refused).await);

        proxy.heal();
        let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after").await, b"after");
    }

    #[tokio::test]
    async fn blackhole_stalls_without_closing_and_heal_delivers() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut stream, b"before").await;

        proxy.cut(CutMode::Blackhole);
        stream.write_all(b"held").await.unwrap();
        let mut late = TcpStream::connect(proxy.local_addr()).await.unwrap();
        late.write_all(b"late").await.unwrap();
        let mut buf = [0u8; 4];
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await;
        assert!(stalled.is_err(), "bytes crossed a blackholed link");
        eventually("both blackholed sockets to stay open", || {
            proxy.connection_count() == 2
        })
        .await;

        proxy.heal();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
        late.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late");
    }

    #[tokio::test]
    async fn a_client_reset_closes_the_upstream_side_too() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let proxy = TcpProxy::start(upstream.local_addr().unwrap())
            .await
            .unwrap();
        let client = TcpStream::connect(proxy.local_addr()).await.unwrap();
        // The upstream never writes nor closes, like an idle database server.
        let (mut held, _) = upstream.accept().await.unwrap();
        eventually("the connection to be counted", || {
            proxy.connection_count() == 1
        })
        .await;

        reset(&client);
        drop(client);
        let _ = assert_closed(&mut held).await;
        eventually("the connection to be released", || {
            proxy.connection_count() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_it() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let addr = proxy.local_addr();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut stream, b"x").await;
        drop(proxy);
        let _ = assert_closed(&mut stream).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the listener outlived the proxy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
