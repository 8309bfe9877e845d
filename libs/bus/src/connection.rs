//! Connecting to the broker.

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// The largest frame a connection asks of the broker when its URL names no
/// `frame_max`. lapin keeps a receive and a send buffer of 32 frames for
/// each connection. Left to the broker's default (128 KiB), they are 4 MiB
/// each, and lapin grows them to that size with zeros once the frame size
/// is negotiated, so both are resident from the start: 8 MiB per
/// connection, which was most of an idle service's memory (a node holds
/// eight connections, 90 MiB idle). Asked for up front, the buffers are
/// allocated at their size already zeroed and stay untouched until traffic
/// fills them: at 16 KiB, at most 1 MiB per connection, nothing at idle.
/// Our events are a few hundred bytes to a few KiB, so nearly all still
/// fit one frame; a larger body is split into more frames, never refused.
/// (A message's headers must fit one frame: the CloudEvents attributes
/// take well under 1 KiB.) A URL's own `?frame_max=` wins (RabbitMQ
/// accepts 4096 and up).
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// The broker could not be reached or refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// An AMQP operation failed.
    #[error("AMQP {operation} failed: {source}")]
    Operation {
        /// What was being done.
        operation: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
}

/// Hide the password of `scheme://user:password@host/...` (an AMQP or a
/// Postgres URL), for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:<redacted>{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

/// Open a connection named after the service (the name shows in the
/// broker's management UI and `rabbitmqctl list_connections`), with the
/// URL's `frame_max`, else [`DEFAULT_FRAME_MAX`].
pub async fn connect(url: &str, connection_name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let connected = match url.parse::<AMQPUri>() {
        Ok(uri) => Connection::connect_uri(with_default_frame_max(uri), props).await,
        // lapin parses it again and reports why it is not a URL.
        Err(_) => Connection::connect(url, props).await,
    };
    connected.map_err(|source| BrokerError::Connect {
        url: redact_url(url),
        source,
    })
}

/// `uri` with [`DEFAULT_FRAME_MAX`] unless it names a frame size itself.
fn with_default_frame_max(mut uri: AMQPUri) -> AMQPUri {
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_frame_size_asks_for_the_small_default() {
        let uri: AMQPUri = "amqp://guest:guest@127.0.0.1:5672/%2f".parse().unwrap();
        assert_eq!(
            with_default_frame_max(uri).query.frame_max,
            Some(DEFAULT_FRAME_MAX)
        );
    }

    #[test]
    fn a_frame_size_in_the_url_wins() {
        let uri: AMQPUri = "amqp://127.0.0.1/%2f?frame_max=131072".parse().unwrap();
        assert_eq!(with_default_frame_max(uri).query.frame_max, Some(131_072));
    }

    #[test]
    fn a_password_never_shows_in_a_redacted_url() {
        assert_eq!(
            super::redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:<redacted>@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
