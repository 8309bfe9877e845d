//! DNS-rebinding protection: the Host and Origin checks on every request.
//!
//! A web page on another site can point its own DNS name at 127.0.0.1 and
//! then talk to the gateway from the victim's browser. The browser still
//! sends that name in `Host` (and the page's origin in `Origin`), so the
//! gateway refuses any request whose Host, or Origin when present, is not
//! one it serves, loopback included (architecture §6).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use super::problem::ApiError;

/// The `host[:port]` authorities the gateway answers to.
///
/// Cheap to clone (shared slice), since axum clones the middleware state
/// for every request.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    hosts: Arc<[HostPattern]>,
}

/// One allowed authority. Hosts are kept lowercase, IPv6 with brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    host: String,
    /// None: any port of this host.
    port: Option<u16>,
}

/// A configured host pattern that is not `host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid allowed host `{pattern}`: expected host[:port], e.g. `localhost:7480` or `[::1]:7480`"
)]
pub struct InvalidHostPattern {
    /// The pattern as configured.
    pub pattern: String,
}

impl AllowedHosts {
    /// The default: the three loopback spellings a local client uses for
    /// the gateway on `port`.
    pub fn loopback(port: u16) -> Self {
        let hosts = ["127.0.0.1", "localhost", "[::1]"]
            .into_iter()
            .map(|host| HostPattern {
                host: host.to_owned(),
                port: Some(port),
            })
            .collect();
        Self { hosts }
    }

    /// Allowed hosts from config: each `host:port` (that port only) or
    /// `host` (any port), e.g. `stratavore.internal:443`.
    pub fn new<I, S>(patterns: I) -> Result<Self, InvalidHostPattern>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let hosts = patterns
            .into_iter()
            .map(|pattern| {
                let pattern = pattern.as_ref();
                parse_authority(pattern)
                    .map(|(host, port)| HostPattern { host, port })
                    .ok_or_else(|| InvalidHostPattern {
                        pattern: pattern.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { hosts })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|p| p.host == host && p.port.is_none_or(|allowed| allowed == port))
    }

    /// Check a request's Host, Origin and (absolute-form) target authority.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
        let host = single_header(headers, header::HOST)?
            .ok_or_else(|| forbidden("the Host header is missing".to_owned()))?;
        self.check_host_value(host)?;

        // RFC 9112 §3.2.2: with an absolute-form target the server uses the
        // target's authority, so that must pass the same check as Host.
        if let Some(authority) = uri.authority() {
            self.check_host_value(authority.as_str())?;
        }

        if let Some(origin) = single_header(headers, header::ORIGIN)? {
            self.check_origin_value(origin)?;
        }
        Ok(())
    }

    fn check_host_value(&self, value: &str) -> Result<(), ApiError> {
        // Without a port the client used the default one; the gateway
        // itself speaks plain HTTP (TLS, if any, ends in front of it).
        let allowed = parse_authority(value)
            .is_some_and(|(host, port)| self.allows(&host, port.unwrap_or(80)));
        if allowed {
            Ok(())
        } else {
            Err(forbidden(format!(
                "the Host `{value:.100}` is not served by this gateway"
            )))
        }
    }

    fn check_origin_value(&self, value: &str) -> Result<(), ApiError> {
        // `null` comes from sandboxed frames, file: pages and redirects: a
        // page we cannot identify, so it is refused like a foreign one.
        let allowed = parse_origin(value).is_some_and(|(host, port)| self.allows(&host, port));
        if allowed {
            Ok(())
        } else {
            Err(forbidden(format!(
                "the Origin `{value:.100}` is not served by this gateway"
            )))
        }
    }
}

/// Axum middleware refusing, with 403 `forbidden-host`, requests whose Host
/// or Origin is not allowed:
/// `router.layer(axum::middleware::from_fn_with_state(allowed, guard_host_and_origin))`.
pub async fn guard_host_and_origin(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Err(refusal) = allowed.check(request.headers(), request.uri()) {
        // Worth a warning: either a misconfigured allow list or a page
        // trying to reach the gateway through DNS rebinding.
        tracing::warn!(
            error = %refusal,
            method = %request.method(),
            path = request.uri().path(),
            "refused a request for a host this gateway does not serve"
        );
        return Err(refusal);
    }
    Ok(next.run(request).await)
}

fn forbidden(detail: String) -> ApiError {
    ApiError::ForbiddenHost { detail }
}

/// The header's value when it appears at most once. Two Hosts or two
/// Origins are ambiguous, and a proxy might read the other one.
fn single_header(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(&name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(forbidden(format!("more than one {name} header")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| forbidden(format!("the {name} header is not visible ASCII")))
}

/// Split `host[:port]` into a lowercase host and its port. None for anything
/// else (userinfo, paths, unbracketed IPv6, bad characters): a value we
/// cannot read is never allowed.
fn parse_authority(value: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let valid_v6 = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !valid_v6 {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&value[..inner.len() + 2], port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    let valid_name = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !valid_name {
        return None;
    }
    let port = match port {
        None => None,
        // Digits only: `u16::from_str` would also take a leading `+`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Read an Origin (`scheme://host[:port]`, RFC 6454) into host and
/// effective port. None for `null` and anything not http(s).
fn parse_origin(value: &str) -> Option<(String, u16)> {
    let (scheme, authority) = value.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = parse_authority(authority)?;
    Some((host, port.unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::problem::tests::read_problem;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(allowed: AllowedHosts) -> Router {
        Router::new()
            .route(
                "/api/v1/runners",
                get(|| async { "ok" }).post(|| async { "ok" }),
            )
            .layer(from_fn_with_state(allowed, guard_host_and_origin))
    }

    async fn status_for(headers: &[(&str, &str)]) -> StatusCode {
        let mut builder = Request::get("/api/v1/runners");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = app(AllowedHosts::loopback(7480))
            .oneshot(builder.body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.status()
    }

    #[tokio::test]
    async fn an_allowed_host_without_origin_passes() {
        assert_eq!(
            status_for(&[("host", "127.0.0.1:7480")]).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn localhost_and_127_0_0_1_and_ipv6_loopback_are_all_allowed_by_default() {
        for host in [
            "localhost:7480",
            "127.0.0.1:7480",
            "[::1]:7480",
            "LocalHost:7480",
        ] {
            assert_eq!(
                status_for(&[("host", host)]).await,
                StatusCode::OK,
                "{host}"
            );
        }
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused_with_a_forbidden_host_problem() {
        let response = app(AllowedHosts::loopback(7480))
            .oneshot(
                Request::get("/api/v1/runners")
                    .header("host", "evil.example:7480")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (status, problem) = read_problem(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/forbidden-host"
        );
        assert!(
            problem.detail.contains("evil.example"),
            "{}",
            problem.detail
        );
    }

    #[tokio::test]
    async fn a_missing_host_is_refused() {
        assert_eq!(status_for(&[]).await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_right_host_on_another_port_is_refused() {
        assert_eq!(
            status_for(&[("host", "localhost:8080")]).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_for(&[("host", "localhost")]).await,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn tricky_host_spellings_are_refused() {
        for host in [
            "127.0.0.1:7480@evil.example",
            "evil.example#127.0.0.1:7480",
            "localhost.:7480",
            "127.0.0.1:+7480",
            "::1:7480",
            "[::1]7480",
            "",
        ] {
            assert_eq!(
                status_for(&[("host", host)]).await,
                StatusCode::FORBIDDEN,
                "{host:?}"
            );
        }
    }

    #[tokio::test]
    async fn two_host_headers_are_refused() {
        let status = status_for(&[("host", "localhost:7480"), ("host", "evil.example")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_allowed_origin_passes() {
        for origin in [
            "http://localhost:7480",
            "http://127.0.0.1:7480",
            "http://[::1]:7480",
        ] {
            let status = status_for(&[("host", "localhost:7480"), ("origin", origin)]).await;
            assert_eq!(status, StatusCode::OK, "{origin}");
        }
    }

    #[tokio::test]
    async fn a_foreign_origin_is_refused_even_with_a_good_host() {
        for origin in [
            "http://evil.example",
            "http://evil.example:7480",
            "http://localhost:8080",
            "http://localhost",
            "file://localhost:7480",
            "localhost:7480",
        ] {
            let status = status_for(&[("host", "localhost:7480"), ("origin", origin)]).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        }
    }

    #[tokio::test]
    async fn a_null_origin_is_refused() {
        let status = status_for(&[("host", "localhost:7480"), ("origin", "null")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_absolute_form_target_must_name_an_allowed_host_too() {
        let response = app(AllowedHosts::loopback(7480))
            .oneshot(
                Request::get("http://evil.example/api/v1/runners")
                    .header("host", "localhost:7480")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn configured_hosts_replace_the_defaults() {
        let allowed = AllowedHosts::new(["gateway.internal", "LOCALHOST:9000"]).unwrap();
        let check = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            allowed.check(&headers, &Uri::from_static("/")).is_ok()
        };
        assert!(check("gateway.internal"));
        assert!(
            check("gateway.internal:8443"),
            "a pattern without port takes any port"
        );
        assert!(check("localhost:9000"));
        assert!(!check("localhost:7480"));
        assert!(!check("127.0.0.1:9000"));
    }

    #[test]
    fn invalid_patterns_are_rejected_at_start() {
        for pattern in [
            "",
            "http://localhost",
            "localhost:port",
            "::1",
            "a b",
            "[::1]:",
        ] {
            let error = AllowedHosts::new([pattern]).unwrap_err();
            assert_eq!(error.pattern, pattern);
        }
    }
}
