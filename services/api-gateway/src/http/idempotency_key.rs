//! Inputs of the requests that start work: the `Idempotency-Key` header and
//! the `wait` query parameter (how long to hold the request for the outcome).

use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderName, header::HeaderMap};
use serde::Deserialize;

use super::problem::ApiError;

/// The header's name as it appears in errors.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The longest key accepted; keys are stored, so they are bounded.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The client's `Idempotency-Key`, if it sent one: 1..=255 visible ASCII
/// characters. A retried request with the same key gets the first one's
/// outcome instead of starting the work twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// Read and validate the header; 400 naming the header when it is
    /// present but not a usable key.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let name = HeaderName::from_static("idempotency-key");
        let mut values = headers.get_all(&name).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        let invalid = |message: String| ApiError::invalid_parameter(IDEMPOTENCY_KEY, message);
        if values.next().is_some() {
            // Two keys: which one the client meant is unknowable.
            return Err(invalid("sent more than once".to_owned()));
        }
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(invalid(format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters, got {}",
                bytes.len()
            )));
        }
        // Visible ASCII only (0x21..=0x7E): no spaces or control bytes that
        // could make two keys look alike in logs.
        if !bytes.iter().all(u8::is_ascii_graphic) {
            return Err(invalid(
                "must contain only visible ASCII characters".to_owned(),
            ));
        }
        // Checked above to be ASCII, so the conversion cannot fail.
        let key = String::from_utf8_lossy(bytes).into_owned();
        Ok(Self(Some(key)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

/// How long to wait when the client does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The longest wait a client may ask for, so a request never holds a
/// connection longer than intermediaries tolerate.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long a request that starts work waits for its outcome before
/// answering 202 with the command's status URL: `?wait=` in seconds, a
/// decimal from 0 to 30 (`wait=0`, `wait=2.5`), default 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait(pub Duration);

impl Default for Wait {
    fn default() -> Self {
        Self(DEFAULT_WAIT)
    }
}

/// The raw `wait` parameter; a string so a bad value is refused by
/// [`Wait::parse`] naming `wait`. Embed with `#[serde(flatten)]` when an
/// endpoint has other query parameters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WaitQuery {
    /// Seconds, as sent.
    pub wait: Option<String>,
}

impl Wait {
    /// Validate a raw `wait` value; None gives the default. 422 naming
    /// `wait` for anything but a plain decimal from 0 to 30.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let refused = || {
            ApiError::validation(
                "wait",
                format!(
                    "must be a number of seconds from 0 to {}, like `2.5`, got `{raw:.40}`",
                    MAX_WAIT.as_secs()
                ),
            )
        };
        // Plain decimals only: f64 parsing alone would also take `inf`,
        // `NaN`, `1e3` and `+2`, none of which a client means here.
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, "0"));
        let plain = |digits: &str| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if !plain(whole) || !plain(fraction) {
            return Err(refused());
        }
        let seconds: f64 = raw.parse().map_err(|_| refused())?;
        if seconds > MAX_WAIT.as_secs_f64() {
            return Err(refused());
        }
        Duration::try_from_secs_f64(seconds)
            .map(Self)
            .map_err(|_| refused())
    }

    /// Validate the `wait` member of an endpoint's query struct.
    pub fn from_query(query: &WaitQuery) -> Result<Self, ApiError> {
        Self::parse(query.wait.as_deref())
    }
}

/// Extract `?wait=` directly, for endpoints with no other query parameters.
impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<WaitQuery>::try_from_uri(&parts.uri).map_err(|rejection| {
            ApiError::Malformed {
                detail: format!(
                    "the query string could not be read: {}",
                    rejection.body_text()
                ),
            }
        })?;
        Self::from_query(&query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::problem::tests::read_problem;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new().route(
            "/runners",
            post(
                |IdempotencyKey(key): IdempotencyKey, Wait(wait): Wait| async move {
                    format!(
                        "{} {}",
                        key.unwrap_or_else(|| "-".to_owned()),
                        wait.as_millis()
                    )
                },
            ),
        )
    }

    async fn call(uri: &str, keys: &[&[u8]]) -> axum::response::Response {
        let mut builder = Request::post(uri);
        for key in keys {
            builder = builder.header("Idempotency-Key", *key);
        }
        app()
            .oneshot(builder.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_text(response: axum::response::Response) -> String {
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = to_bytes(response.into_body(), 1024).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_key_and_a_wait_reach_the_handler() {
        let text = body_text(call("/runners?wait=2.5", &[b"launch-7f3a"]).await).await;
        assert_eq!(text, "launch-7f3a 2500");
    }

    #[tokio::test]
    async fn without_either_the_key_is_absent_and_the_wait_is_five_seconds() {
        assert_eq!(body_text(call("/runners", &[]).await).await, "- 5000");
    }

    #[tokio::test]
    async fn a_key_of_255_characters_is_accepted() {
        let key = vec![b'k'; 255];
        let text = body_text(call("/runners", &[&key]).await).await;
        assert!(text.starts_with(&"k".repeat(255)));
    }

    #[tokio::test]
    async fn bad_keys_are_400_naming_the_header() {
        let long = vec![b'k'; 256];
        let cases: [&[&[u8]]; 5] = [
            &[b""],
            &[&long],
            &[b"has space"],
            &[b"caf\xc3\xa9"],
            &[b"one", b"two"],
        ];
        for keys in cases {
            let (status, problem) = read_problem(call("/runners", keys).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{keys:?}");
            assert_eq!(
                problem.type_uri,
                "https://stratavore.dev/problems/invalid-request"
            );
            assert_eq!(problem.errors[0].field, "Idempotency-Key");
        }
    }

    #[test]
    fn waits_parse_as_decimal_seconds() {
        let cases = [
            ("0", 0),
            ("2.5", 2500),
            ("30", 30_000),
            ("30.000", 30_000),
            ("0.001", 1),
        ];
        for (raw, millis) in cases {
            let Wait(wait) = Wait::parse(Some(raw)).unwrap();
            assert_eq!(wait, Duration::from_millis(millis), "{raw}");
        }
    }

    #[tokio::test]
    async fn bad_waits_are_422_naming_wait() {
        for raw in [
            "", "30.01", "31", "-1", "+2", "1e1", "inf", "NaN", ".5", "5.", "2.5s", "1.2.3",
        ] {
            let error = Wait::parse(Some(raw)).unwrap_err();
            let (status, problem) = read_problem(error.into_response()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{raw:?}");
            assert_eq!(
                problem.type_uri,
                "https://stratavore.dev/problems/validation-failed"
            );
            assert_eq!(problem.errors[0].field, "wait");
        }
    }

    #[tokio::test]
    async fn a_bad_wait_in_the_query_is_refused_by_the_extractor() {
        let response = call("/runners?wait=forever", &[]).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
