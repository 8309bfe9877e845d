//! Reading an attempt's transcript from the supervisor node that holds it:
//! the one call from the gateway to another service (DESIGN.md section 1),
//! over the node's HTTP server with the node token, as the Kubernetes API
//! server reads logs from kubelets.

use crate::config::NodeToken;
use crate::http::ApiError;
use axum::body::Bytes;
use std::time::Duration;
use uuid::Uuid;

/// The node's header: the attempt ended.
pub const ENDED_HEADER: &str = "stratavore-attempt-ended";
/// The node's header: the offset to ask for next.
pub const NEXT_OFFSET_HEADER: &str = "stratavore-next-offset";
/// The node's header: the length of the attempt's part now.
pub const SIZE_HEADER: &str = "stratavore-size";

/// A node and where its HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The node.
    pub node: String,
    /// `host:port` as it registered it (or a URL).
    pub address: String,
}

impl NodeAddress {
    fn url(&self, runner: Uuid, attempt: u32) -> String {
        let base = if self.address.contains("://") {
            self.address.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", self.address)
        };
        format!("{base}/internal/v1/transcripts/{runner}/{attempt}")
    }
}

/// Which part of which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRequest {
    /// The runner.
    pub runner: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// From this offset in its part.
    pub offset: u64,
    /// At most this many bytes (the node's own maximum when None).
    pub limit: Option<u64>,
}

/// What the node says about the part it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartHead {
    /// The attempt ended.
    pub ended: bool,
    /// The offset after the bytes of this answer.
    pub next_offset: u64,
    /// The part's length now.
    pub size: u64,
}

impl PartHead {
    /// Nothing more will ever come after this answer.
    pub fn is_final(&self) -> bool {
        self.ended && self.next_offset >= self.size
    }
}

/// Why a node did not give the part.
#[derive(Debug, thiserror::Error)]
pub enum NodeReadError {
    /// No answer (refused, timed out, cut off).
    #[error("node {node} did not answer at {address}")]
    Unreachable {
        /// The node.
        node: String,
        /// Where it was asked.
        address: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// It refused the gateway's token.
    #[error("node {node} refused the gateway's node token")]
    Refused {
        /// The node.
        node: String,
    },
    /// It does not hold that attempt.
    #[error("node {node} holds no transcript of attempt {attempt}")]
    NotThere {
        /// The node.
        node: String,
        /// The attempt.
        attempt: u32,
    },
    /// The offset lies past the part's end.
    #[error("the offset is past the end of the attempt's transcript")]
    PastEnd,
    /// Any other answer.
    #[error("node {node} answered {status}")]
    Failed {
        /// The node.
        node: String,
        /// Its status.
        status: u16,
    },
}

impl NodeReadError {
    /// The API's answer about `runner`.
    pub fn into_api(self, runner: Uuid) -> ApiError {
        let detail = self.to_string();
        match self {
            Self::Unreachable { node, .. } | Self::Failed { node, .. } => {
                ApiError::NodeUnreachable { node, detail }
            }
            Self::Refused { node } => ApiError::NodeUnreachable {
                detail: format!(
                    "{detail}: the gateway's api.node_token must be the node's node.token"
                ),
                node,
            },
            Self::NotThere { node, attempt } => ApiError::NotFound {
                what: format!("attempt {attempt} of runner {runner} on node {node}"),
            },
            Self::PastEnd => ApiError::validation("offset", detail),
        }
    }
}

/// The client of the nodes' transcript endpoint.
#[derive(Clone)]
pub struct NodeTranscripts {
    client: reqwest::Client,
    token: NodeToken,
}

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

impl NodeTranscripts {
    /// A client presenting `token`, giving up on a node that does not
    /// connect, or goes quiet mid-answer, for `timeout`.
    pub fn new(token: NodeToken, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()?;
        Ok(Self { client, token })
    }

    /// Ask `at` for a part; the answer's body is left to read (or stream).
    pub async fn open(
        &self,
        at: &NodeAddress,
        request: PartRequest,
    ) -> Result<(PartHead, reqwest::Response), NodeReadError> {
        let mut query = vec![("offset", request.offset)];
        query.extend(request.limit.map(|l| ("limit", l)));
        let mut builder = self
            .client
            .get(at.url(request.runner, request.attempt))
            .query(&query);
        // Without a token nothing is sent, and the node answers 401.
        if self.token.is_set() {
            builder = builder.bearer_auth(self.token.expose());
        }
        let response = builder
            .send()
            .await
            .map_err(|source| NodeReadError::Unreachable {
                node: at.node.clone(),
                address: at.address.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            401 | 403 => {
                return Err(NodeReadError::Refused {
                    node: at.node.clone(),
                });
            }
            404 => {
                return Err(NodeReadError::NotThere {
                    node: at.node.clone(),
                    attempt: request.attempt,
                });
            }
            416 => return Err(NodeReadError::PastEnd),
            _ => {
                return Err(NodeReadError::Failed {
                    node: at.node.clone(),
                    status,
                });
            }
        }
        let ended = response
            .headers()
            .get(ENDED_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        let (Some(next_offset), Some(size)) = (
            header_u64(&response, NEXT_OFFSET_HEADER),
            header_u64(&response, SIZE_HEADER),
        ) else {
            // A 200 without them is not the endpoint this gateway knows.
            return Err(NodeReadError::Failed {
                node: at.node.clone(),
                status,
            });
        };
        Ok((
            PartHead {
                ended,
                next_offset,
                size,
            },
            response,
        ))
    }

    /// Ask `at` for a part and read it whole.
    pub async fn read(
        &self,
        at: &NodeAddress,
        request: PartRequest,
    ) -> Result<(PartHead, Bytes), NodeReadError> {
        let (head, response) = self.open(at, request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| NodeReadError::Unreachable {
                node: at.node.clone(),
                address: at.address.clone(),
                source,
            })?;
        Ok((head, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_address_becomes_the_transcript_url() {
        let runner = Uuid::nil();
        let at = |address: &str| NodeAddress {
            node: "n1".into(),
            address: address.into(),
        };
        assert_eq!(
            at("127.0.0.1:7482").url(runner, 3),
            format!("http://127.0.0.1:7482/internal/v1/transcripts/{runner}/3")
        );
        assert_eq!(
            at("https://n1.internal:7482/").url(runner, 1),
            format!("https://n1.internal:7482/internal/v1/transcripts/{runner}/1")
        );
    }

    #[test]
    fn a_part_is_final_once_the_attempt_ended_and_it_reached_the_end() {
        let head = |ended, next_offset, size| PartHead {
            ended,
            next_offset,
            size,
        };
        assert!(head(true, 10, 10).is_final());
        assert!(!head(true, 5, 10).is_final());
        assert!(!head(false, 10, 10).is_final());
    }

    #[test]
    fn node_errors_become_problems_naming_the_node() {
        let runner = Uuid::nil();
        let refused = NodeReadError::Refused { node: "n1".into() }.into_api(runner);
        assert!(
            matches!(&refused, ApiError::NodeUnreachable { node, detail } if node == "n1" && detail.contains("node.token"))
        );
        let missing = NodeReadError::NotThere {
            node: "n1".into(),
            attempt: 2,
        }
        .into_api(runner);
        assert!(matches!(missing, ApiError::NotFound { .. }));
        assert!(matches!(
            NodeReadError::PastEnd.into_api(runner),
            ApiError::Validation(_)
        ));
    }
}
