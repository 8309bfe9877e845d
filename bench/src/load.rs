//! A closed-loop HTTP load generator with a fixed number of keep-alive
//! connections, used identically against the gateway and against its
//! baseline, so the generator's own cost is the same on both sides.

use std::time::{Duration, Instant};

/// What a load run did.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    /// 2xx responses read to the end.
    pub ok: u64,
    /// Any other outcome.
    pub errors: u64,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Bytes of the last successful body (to show both sides sent alike).
    pub body_bytes: usize,
}

/// GET `url` over `connections` keep-alive connections, each sending its
/// next request when the previous answer has been read, for `span`.
pub async fn closed_loop(
    url: &str,
    connections: usize,
    span: Duration,
) -> anyhow::Result<LoadResult> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        // One client per connection, one idle connection each: exactly
        // `connections` sockets, reused for every request.
        clients.push(
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()?,
        );
    }
    // One request each first, so connecting is not timed.
    for c in &clients {
        c.get(url).send().await?.error_for_status()?.bytes().await?;
    }
    let started = Instant::now();
    let deadline = started + span;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut bytes) = (0u64, 0u64, 0usize);
                while Instant::now() < deadline {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(b) => {
                                ok += 1;
                                bytes = b.len();
                            }
                            Err(_) => errors += 1,
                        },
                        _ => errors += 1,
                    }
                }
                (ok, errors, bytes)
            })
        })
        .collect();
    let mut total = LoadResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        body_bytes: 0,
    };
    for t in tasks {
        let (ok, errors, bytes) = t.await?;
        total.ok += ok;
        total.errors += errors;
        total.body_bytes = total.body_bytes.max(bytes);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
