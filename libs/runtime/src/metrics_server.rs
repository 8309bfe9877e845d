//! The health, readiness and Prometheus server every service runs, and the
//! process-wide Prometheus recorder behind `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets in seconds, from 1 ms to 1 min: histograms rather than
/// summaries, so Grafana can aggregate latencies across replicas.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Why the health server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Error of the operating system.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("HTTP server on {addr} failed")]
    Serve {
        /// The address it was bound to.
        addr: SocketAddr,
        /// Error of the operating system.
        #[source]
        source: std::io::Error,
    },
}

/// The process-wide Prometheus handle, installing the global recorder on
/// first use. Several services in one process share it, as they share the
/// global `metrics` recorder.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS) {
                Ok(builder) => builder,
                // Only an empty bucket list fails, and ours is not empty.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                // Someone else owns the global recorder; serve an empty
                // registry instead of failing the service.
                tracing::warn!(
                    "a global metrics recorder was already installed; /metrics will be empty"
                );
            }
            handle
        })
        .clone()
}

/// Named readiness checks that services flip as their dependencies come and
/// go. Clones share the same checks.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, Check>>>,
}

/// State of one readiness check.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Whether this dependency is usable now.
    pub ready: bool,
    /// Human-readable detail, e.g. the last connection error.
    pub detail: String,
}

impl Readiness {
    /// No checks yet: not ready until one is registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers or updates the check `name`.
    pub fn set(&self, name: &'static str, ready: bool, detail: impl Into<String>) {
        self.lock().insert(
            name,
            Check {
                ready,
                detail: detail.into(),
            },
        );
    }

    /// Whether at least one check is registered and all are ready.
    pub fn is_ready(&self) -> bool {
        let checks = self.lock();
        !checks.is_empty() && checks.values().all(|check| check.ready)
    }

    /// A copy of every check.
    pub fn snapshot(&self) -> BTreeMap<&'static str, Check> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Check>> {
        // Each update is a single insert, so the map is consistent even after
        // a panic elsewhere.
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running health server.
#[derive(Debug)]
pub struct BoundServer {
    /// The address actually bound (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    /// Ends when the server has stopped after shutdown was triggered.
    pub join: JoinHandle<Result<(), HttpError>>,
}

/// Binds `listen` and serves `/healthz`, `/readyz`, `/metrics` and the routes
/// of `extra` until `shutdown` is triggered. The serving task is a task of
/// `shutdown`, so [`Shutdown::wait_for_tasks`] waits for it too.
pub async fn serve_health(
    listen: SocketAddr,
    readiness: Readiness,
    extra: Option<Router>,
    shutdown: Shutdown,
) -> Result<BoundServer, HttpError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: listen,
        source,
    })?;
    let mut router = health_router(readiness, prometheus_handle());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let stop = shutdown.clone();
    let join = shutdown.spawn(format!("http {local_addr}"), async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await
            .map_err(|source| HttpError::Serve {
                addr: local_addr,
                source,
            })
    });
    tracing::info!(%local_addr, "health server listening");
    Ok(BoundServer { local_addr, join })
}

/// The three routes, for callers that assemble their own server.
pub fn health_router(readiness: Readiness, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(metrics_text).with_state(prometheus))
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    checks: BTreeMap<&'static str, Check>,
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let checks = readiness.snapshot();
    let ready = !checks.is_empty() && checks.values().all(|check| check.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadyBody { ready, checks }))
}

async fn metrics_text(State(prometheus): State<PrometheusHandle>) -> impl IntoResponse {
    // Upkeep drains histogram samples; doing it per scrape saves a timer task.
    prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        prometheus.render(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A minimal HTTP/1.1 GET, to avoid an HTTP client dependency.
    async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_lowercase(), body.to_owned())
    }

    async fn start(readiness: Readiness, extra: Option<Router>) -> (BoundServer, Shutdown) {
        let shutdown = Shutdown::new();
        let server = serve_health(
            "127.0.0.1:0".parse().unwrap(),
            readiness,
            extra,
            shutdown.clone(),
        )
        .await
        .unwrap();
        (server, shutdown)
    }

    #[tokio::test]
    async fn healthz_answers_ok_and_the_server_stops_on_shutdown() {
        let (server, shutdown) = start(Readiness::new(), None).await;
        assert_ne!(server.local_addr.port(), 0);
        let (status, _, body) = http_get(server.local_addr, "/healthz").await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"status":"ok"}"#);

        shutdown.trigger();
        server.join.await.unwrap().unwrap();
        shutdown
            .wait_for_tasks(Duration::from_secs(10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readyz_needs_at_least_one_check_and_all_ready() {
        let readiness = Readiness::new();
        let (server, shutdown) = start(readiness.clone(), None).await;

        let (status, _, _) = http_get(server.local_addr, "/readyz").await;
        assert_eq!(status, 503, "no checks registered yet");

        readiness.set("database", true, "connected");
        readiness.set("broker", false, "connection refused");
        let (status, _, body) = http_get(server.local_addr, "/readyz").await;
        assert_eq!(status, 503);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["checks"]["broker"]["ready"], false);
        assert_eq!(json["checks"]["broker"]["detail"], "connection refused");
        assert_eq!(json["checks"]["database"]["ready"], true);

        readiness.set("broker", true, "connected");
        let (status, _, _) = http_get(server.local_addr, "/readyz").await;
        assert_eq!(status, 200);
        shutdown.trigger();
        server.join.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_renders_recorded_values_in_prometheus_text() {
        let (server, shutdown) = start(Readiness::new(), None).await;
        metrics::counter!("runtime_test_events_total").increment(3);
        let (status, head, body) = http_get(server.local_addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("runtime_test_events_total 3"), "{body}");
        shutdown.trigger();
        server.join.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn extra_routes_are_merged() {
        let extra = Router::new().route("/extra", get(|| async { "hello" }));
        let (server, shutdown) = start(Readiness::new(), Some(extra)).await;
        let (status, _, body) = http_get(server.local_addr, "/extra").await;
        assert_eq!((status, body.as_str()), (200, "hello"));
        shutdown.trigger();
        server.join.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn binding_a_taken_port_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve_health(addr, Readiness::new(), None, Shutdown::new())
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Bind { addr: a, .. } if a == addr));
    }
}
