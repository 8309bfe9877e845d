//! Cursor pagination for every list endpoint: `?limit=&cursor=` in,
//! `{ "items": [...], "next_cursor": ... }` out.
//!
//! Cursors are opaque (base64 of a small versioned JSON) so the listing's
//! sort key can change without clients having built on its form.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::problem::ApiError;

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items one page may hold; bounds the cost of one request.
pub const MAX_LIMIT: u32 = 200;

/// The version written into every cursor; a cursor of another version is
/// refused rather than misread after the key format changes.
const CURSOR_VERSION: u8 = 1;

/// Where the next page starts: after the item whose sort key is `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key of the last item already returned.
    pub after: String,
}

/// The JSON inside a cursor. Private: only this module reads or writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorBody {
    v: u8,
    after: String,
}

/// A `cursor` parameter that this gateway did not produce.
#[derive(Debug, thiserror::Error)]
#[error("not a cursor this API returned")]
pub struct InvalidCursor;

impl Cursor {
    /// A cursor pointing after `after`.
    pub fn new(after: impl Into<String>) -> Self {
        Self {
            after: after.into(),
        }
    }

    /// The opaque URL-safe form sent to clients.
    pub fn encode(&self) -> String {
        // Built as a Value because its Display cannot fail, unlike
        // `to_vec` of a struct, so there is no error path to handle.
        let json = serde_json::json!({ "v": CURSOR_VERSION, "after": self.after });
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// Read back a cursor made by [`Cursor::encode`].
    pub fn decode(encoded: &str) -> Result<Self, InvalidCursor> {
        let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| InvalidCursor)?;
        let body: CursorBody = serde_json::from_slice(&json).map_err(|_| InvalidCursor)?;
        if body.v != CURSOR_VERSION {
            return Err(InvalidCursor);
        }
        Ok(Self { after: body.after })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// At most `limit` items, in the listing's order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    /// Always present so clients can test it without a missing-key case.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Build a page from `rows` fetched with `LIMIT request.limit + 1`: the
    /// extra row, if any, only proves that a next page exists, and the
    /// cursor points after the last item kept, whose key `key` gives.
    pub fn from_overfetch(
        mut rows: Vec<T>,
        request: &PageRequest,
        key: impl Fn(&T) -> String,
    ) -> Self {
        let limit = request.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| Cursor::new(key(last)).encode())
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// The raw `limit` and `cursor` query parameters. Strings on purpose, so a
/// non-number reaches [`PageRequest::from_query`] and is refused as a
/// problem naming the parameter, not by the query extractor's plain text.
/// Embed with `#[serde(flatten)]` in an endpoint's own query struct.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    /// Items per page, 1..=200.
    pub limit: Option<String>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Items wanted, 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Start after this key; None for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Validate the raw parameters: a bad `limit` is 422 naming `limit`, an
    /// undecodable `cursor` is 400 naming `cursor`.
    pub fn from_query(query: &PageQuery) -> Result<Self, ApiError> {
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::validation(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}, got `{raw:.40}`"),
                    )
                })?,
        };
        let after = match query.cursor.as_deref() {
            None => None,
            Some(raw) => Some(
                Cursor::decode(raw)
                    .map_err(|error| ApiError::invalid_parameter("cursor", error.to_string()))?
                    .after,
            ),
        };
        Ok(Self { limit, after })
    }

    /// The row count to fetch so [`Page::from_overfetch`] can tell whether
    /// another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// Extract and validate `?limit=&cursor=` directly, for endpoints with no
/// other query parameters.
impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<PageQuery>::try_from_uri(&parts.uri).map_err(|rejection| {
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
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;

    fn query(limit: Option<&str>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn a_cursor_survives_encoding_and_is_url_safe() {
        let cursor = Cursor::new("2026-01-01T00:00:00Z/0190b3c4-+?&=");
        let encoded = cursor.encode();
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{encoded}"
        );
        assert_eq!(Cursor::decode(&encoded).unwrap(), cursor);
    }

    #[test]
    fn a_cursor_does_not_show_its_key_in_clear() {
        assert!(!Cursor::new("runner-42").encode().contains("runner-42"));
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let other_version = URL_SAFE_NO_PAD.encode(br#"{"v":2,"after":"x"}"#);
        let not_json = URL_SAFE_NO_PAD.encode(b"runner-42");
        for raw in [
            "",
            "!!!",
            "runner-42",
            other_version.as_str(),
            not_json.as_str(),
        ] {
            assert!(Cursor::decode(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn defaults_are_fifty_items_from_the_start() {
        let request = PageRequest::from_query(&query(None, None)).unwrap();
        assert_eq!(
            request,
            PageRequest {
                limit: 50,
                after: None
            }
        );
    }

    #[test]
    fn limits_at_the_bounds_are_accepted() {
        for (raw, limit) in [("1", 1), ("200", 200)] {
            assert_eq!(
                PageRequest::from_query(&query(Some(raw), None))
                    .unwrap()
                    .limit,
                limit
            );
        }
    }

    #[tokio::test]
    async fn a_limit_out_of_range_is_422_naming_limit() {
        for raw in ["0", "201", "-1", "ten", "", "1.5", "99999999999"] {
            let error = PageRequest::from_query(&query(Some(raw), None)).unwrap_err();
            let (status, problem) = read_problem(error.into_response()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{raw:?}");
            assert_eq!(
                problem.type_uri,
                "https://stratavore.dev/problems/validation-failed"
            );
            assert_eq!(problem.errors[0].field, "limit");
        }
    }

    #[tokio::test]
    async fn an_undecodable_cursor_is_400_naming_cursor() {
        let error = PageRequest::from_query(&query(None, Some("garbage"))).unwrap_err();
        let (status, problem) = read_problem(error.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/invalid-request"
        );
        assert_eq!(problem.errors[0].field, "cursor");
    }

    #[test]
    fn a_valid_cursor_gives_its_key() {
        let encoded = Cursor::new("k-17").encode();
        let request = PageRequest::from_query(&query(Some("10"), Some(&encoded))).unwrap();
        assert_eq!(request.after.as_deref(), Some("k-17"));
        assert_eq!(request.fetch_limit(), 11);
    }

    #[test]
    fn an_overfetched_page_is_trimmed_and_points_after_its_last_item() {
        let request = PageRequest {
            limit: 2,
            after: None,
        };
        let page = Page::from_overfetch(vec![1, 2, 3], &request, |n| format!("k{n}"));
        assert_eq!(page.items, vec![1, 2]);
        let next = Cursor::decode(page.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(next.after, "k2");
    }

    #[test]
    fn the_last_page_has_a_null_next_cursor_in_json() {
        let request = PageRequest {
            limit: 2,
            after: None,
        };
        let page = Page::from_overfetch(vec!["a", "b"], &request, |s| s.to_string());
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "items": ["a", "b"], "next_cursor": null })
        );
    }

    #[tokio::test]
    async fn the_extractor_reads_the_query_string() {
        let encoded = Cursor::new("k9").encode();
        let (mut parts, ()) = Request::get(format!("/api/v1/runners?limit=5&cursor={encoded}"))
            .body(())
            .unwrap()
            .into_parts();
        let request = PageRequest::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert_eq!(
            request,
            PageRequest {
                limit: 5,
                after: Some("k9".to_owned())
            }
        );

        let (mut parts, ()) = Request::get("/api/v1/runners?limit=500")
            .body(())
            .unwrap()
            .into_parts();
        let error = PageRequest::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(
            error.into_response().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
