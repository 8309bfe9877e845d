//! The embedding worker: claims pending texts in the database (so several
//! gateways share the work and a dead one's claim runs out), cuts each into
//! chunks of the model's own tokens, embeds what no earlier pass computed,
//! and writes the chunks. It runs beside the consumer, never inside it.
//!
//! Reuse comes first: a text already cut (same model, chunk size and exact
//! text) takes its chunks from `text_chunking`, and a chunk already embedded
//! takes its vector from `embedding_cache`. Neither table is a projection,
//! so a rebuild of the read models embeds nothing again and does not even
//! load the model.

use super::Search;
use crate::config::SearchSection;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratavore_consumer::ApplyLag;
use stratavore_embeddings::EmbedError;
use stratavore_runtime::{Readiness, Shutdown};
use stratavore_store::StoreError;
use uuid::Uuid;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The blocking task that ran the model panicked or was cancelled.
    #[error("the embedding task ended abnormally: {0}")]
    Task(String),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Texts whose chunks were written.
    pub texts: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Vectors the model computed.
    pub computed: usize,
    /// Vectors taken from the cache.
    pub reused: usize,
}

/// How long a worker rests after a pass that took `busy`, so that it is
/// busy `percent` of the time (no rest at 100 or more).
pub(crate) fn rest_after(busy: Duration, percent: u8) -> Duration {
    let percent = u32::from(percent.clamp(1, 100));
    busy * (100 - percent) / percent
}

/// How late the gateway's drain may apply messages (the oldest of its
/// last transaction, from the message's own time) before the live read
/// models count as behind: half the usage lag the dashboard promises
/// (2 s, `make bench`, supervision scale).
const BEHIND_AFTER: Duration = Duration::from_secs(1);
/// A lag measured longer ago than this is no longer the drain's: it has
/// applied nothing since.
const LAG_FRESH: Duration = Duration::from_secs(5);

/// The worker's busy share, in percent: its setting, or a tenth of it
/// (at least 1) while the live read models are behind. Search is
/// eventually consistent; runners, sessions and budgets on the dashboard
/// are the live state, and the vector index's inserts were Postgres's
/// largest single cost with hundreds of agents talking (`make bench`,
/// supervision scale). 100 never yields: an operator catching up.
pub(crate) fn busy_share(percent: u8, lag: Duration) -> u8 {
    if percent >= 100 || lag <= BEHIND_AFTER {
        percent
    } else {
        (percent / 10).max(1)
    }
}

/// A claimed text.
struct Claimed {
    text_id: Uuid,
    body: String,
    sha: Vec<u8>,
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
}

/// The worker of one gateway.
pub struct EmbeddingWorker {
    pool: PgPool,
    search: Arc<Search>,
    config: SearchSection,
    /// How far behind the gateway's live read models run.
    lag: ApplyLag,
}

impl EmbeddingWorker {
    /// A worker over `pool` with `search`'s provider, yielding to the
    /// drain whose lag is `lag`.
    pub fn new(pool: PgPool, search: Arc<Search>, config: SearchSection, lag: ApplyLag) -> Self {
        Self {
            pool,
            search,
            config,
            lag,
        }
    }

    /// Run until shutdown: a pass whenever there is work, else a nap; the
    /// model is let go once idle, and `/readyz` says which state it is in.
    pub fn spawn(self, readiness: Readiness, shutdown: &Shutdown) {
        let stop = shutdown.clone();
        shutdown.spawn("embedding worker", async move {
            let nap = Duration::from_millis(self.config.poll_ms);
            loop {
                let started = Instant::now();
                let worked = match self.pass().await {
                    Ok(pass) => {
                        count(&pass);
                        pass.texts > 0
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding pass failed; the texts stay pending");
                        false
                    }
                };
                if self.search.provider().release_if_idle(Instant::now()) {
                    release_freed_memory();
                    tracing::info!(
                        model = self.search.model(),
                        "embedding model released after its idle time"
                    );
                }
                self.search.report(&readiness);
                let rest = if worked {
                    let busy = started.elapsed();
                    let behind = self.lag.current(LAG_FRESH);
                    rest_after(busy, busy_share(self.config.busy_percent, behind))
                } else {
                    nap
                };
                if rest.is_zero() {
                    if stop.is_triggered() {
                        break;
                    }
                    continue;
                }
                tokio::select! {
                    () = stop.wait() => break,
                    () = tokio::time::sleep(rest) => {}
                }
            }
        });
    }

    /// Claim a batch of pending texts and embed them.
    pub async fn pass(&self) -> Result<Pass, WorkerError> {
        let claimed = self.claim().await?;
        if claimed.is_empty() {
            return Ok(Pass::default());
        }
        match self.embed_claimed(&claimed).await {
            Ok(pass) => Ok(pass),
            Err(e) => {
                // The claim stays until it runs out, so a broken model is
                // retried at the claim's pace rather than in a hot loop.
                let ids: Vec<Uuid> = claimed.iter().map(|c| c.text_id).collect();
                sqlx::query("UPDATE session_texts SET last_error = $2 WHERE text_id = ANY($1)")
                    .bind(&ids)
                    .bind(e.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(store("recording an embedding failure"))?;
                Err(e)
            }
        }
    }

    async fn claim(&self) -> Result<Vec<Claimed>, WorkerError> {
        let rows = sqlx::query(
            "UPDATE session_texts SET claimed_until = now() + $2 * interval '1 millisecond'
             WHERE text_id IN (
                 SELECT text_id FROM session_texts
                 WHERE embedded_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
                 ORDER BY at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING text_id, body",
        )
        .bind(i64::from(self.config.batch_texts))
        .bind(i64::try_from(self.config.claim_ms).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store("claiming pending texts"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let body: String = r.get(1);
                Claimed {
                    text_id: r.get(0),
                    sha: sha256(&body),
                    body,
                }
            })
            .collect())
    }

    async fn embed_claimed(&self, claimed: &[Claimed]) -> Result<Pass, WorkerError> {
        let chunks = self.chunks_of(claimed).await?;
        let mut pass = Pass {
            texts: claimed.len(),
            ..Pass::default()
        };
        // Each distinct chunk once, with its sha256 (the cache's key).
        let mut sha_of: HashMap<&str, Vec<u8>> = HashMap::new();
        let mut bodies: Vec<(&str, Vec<u8>)> = Vec::new();
        for body in chunks.values().flatten() {
            if !sha_of.contains_key(body.as_str()) {
                let sha = sha256(body);
                sha_of.insert(body, sha.clone());
                bodies.push((body, sha));
            }
        }
        let (computed, reused) = self.vectors_for(&bodies).await?;
        pass.computed = computed;
        pass.reused = reused;

        // Flatten into parallel arrays: one statement writes every chunk.
        let (mut ids, mut seqs, mut texts, mut shas) = (vec![], vec![], vec![], vec![]);
        for c in claimed {
            for (seq, body) in chunks[&c.sha].iter().enumerate() {
                ids.push(c.text_id);
                seqs.push(i32::try_from(seq).unwrap_or(i32::MAX));
                shas.push(sha_of[body.as_str()].clone());
                texts.push(body.clone());
            }
        }
        pass.chunks = ids.len();
        let all: Vec<Uuid> = claimed.iter().map(|c| c.text_id).collect();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(store("starting to write chunks"))?;
        // From the text's row as it is now: a prompt moved to the agent's
        // own session, or a project filled in, while the model ran.
        sqlx::query(
            "INSERT INTO session_chunks (text_id, seq, model, session_id, project, role, body, at, embedding)
             SELECT t.text_id, c.seq, $5, t.session_id, t.project, t.role, c.body, t.at, e.embedding
             FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bytea[]) AS c(text_id, seq, body, sha)
             JOIN session_texts t ON t.text_id = c.text_id AND t.embedded_at IS NULL
             JOIN embedding_cache e ON e.model = $5 AND e.text_sha256 = c.sha
             ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&texts)
        .bind(&shas)
        .bind(self.search.model())
        .execute(&mut *tx)
        .await
        .map_err(store("writing chunks"))?;
        sqlx::query(
            "UPDATE session_texts SET embedded_at = now(), claimed_until = NULL, last_error = NULL
             WHERE text_id = ANY($1) AND embedded_at IS NULL",
        )
        .bind(&all)
        .execute(&mut *tx)
        .await
        .map_err(store("marking texts embedded"))?;
        tx.commit().await.map_err(store("committing chunks"))?;
        Ok(pass)
    }

    /// Each claimed text's chunks, by the text's sha256: from earlier
    /// passes where there are, else cut now (and kept).
    async fn chunks_of(
        &self,
        claimed: &[Claimed],
    ) -> Result<HashMap<Vec<u8>, Vec<String>>, WorkerError> {
        let model = self.search.model().to_owned();
        let tokens = i32::try_from(self.config.chunk_tokens).unwrap_or(i32::MAX);
        let shas: Vec<Vec<u8>> = claimed.iter().map(|c| c.sha.clone()).collect();
        let rows = sqlx::query(
            "SELECT text_sha256, chunks FROM text_chunking
             WHERE model = $1 AND chunk_tokens = $2 AND text_sha256 = ANY($3)",
        )
        .bind(&model)
        .bind(tokens)
        .bind(&shas)
        .fetch_all(&self.pool)
        .await
        .map_err(store("reading earlier chunkings"))?;
        let mut known: HashMap<Vec<u8>, Vec<String>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut missing: Vec<(Vec<u8>, String)> = Vec::new();
        for c in claimed {
            if !known.contains_key(&c.sha) && !missing.iter().any(|(sha, _)| *sha == c.sha) {
                missing.push((c.sha.clone(), c.body.clone()));
            }
        }
        if missing.is_empty() {
            return Ok(known);
        }
        let provider = Arc::clone(self.search.provider());
        let max_tokens = self.config.chunk_tokens;
        let cut = blocking(move || {
            missing
                .into_iter()
                .map(|(sha, body)| {
                    let chunks = provider.chunk(&body, max_tokens)?;
                    Ok((sha, chunks.into_iter().map(|c| c.text).collect::<Vec<_>>()))
                })
                .collect::<Result<Vec<_>, EmbedError>>()
        })
        .await?;
        for (sha, chunks) in cut {
            sqlx::query(
                "INSERT INTO text_chunking (model, chunk_tokens, text_sha256, chunks)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&model)
            .bind(tokens)
            .bind(&sha)
            .bind(&chunks)
            .execute(&self.pool)
            .await
            .map_err(store("keeping a chunking"))?;
            known.insert(sha, chunks);
        }
        Ok(known)
    }

    /// Make sure `bodies` (each with its sha256) all have a vector of the
    /// model in the cache; returns how many were computed and how many were
    /// there already.
    async fn vectors_for(&self, bodies: &[(&str, Vec<u8>)]) -> Result<(usize, usize), WorkerError> {
        let model = self.search.model().to_owned();
        let shas: Vec<Vec<u8>> = bodies.iter().map(|(_, sha)| sha.clone()).collect();
        let cached: HashSet<Vec<u8>> = sqlx::query_scalar(
            "SELECT text_sha256 FROM embedding_cache WHERE model = $1 AND text_sha256 = ANY($2)",
        )
        .bind(&model)
        .bind(&shas)
        .fetch_all(&self.pool)
        .await
        .map_err(store("reading cached vectors"))?
        .into_iter()
        .collect();
        let missing: Vec<(Vec<u8>, String)> = bodies
            .iter()
            .filter(|(_, sha)| !cached.contains(sha))
            .map(|(body, sha)| (sha.clone(), (*body).to_owned()))
            .collect();
        let reused = bodies.len() - missing.len();
        if missing.is_empty() {
            return Ok((0, reused));
        }
        let provider = Arc::clone(self.search.provider());
        let texts: Vec<String> = missing.iter().map(|(_, b)| b.clone()).collect();
        let vectors = blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            provider.embed(&refs)
        })
        .await?;
        let literals: Vec<String> = vectors.iter().map(|v| super::vector_literal(v)).collect();
        let missing_shas: Vec<Vec<u8>> = missing.into_iter().map(|(sha, _)| sha).collect();
        sqlx::query(
            "INSERT INTO embedding_cache (model, text_sha256, embedding)
             SELECT $1, sha, v::vector FROM unnest($2::bytea[], $3::text[]) AS x(sha, v)
             ON CONFLICT DO NOTHING",
        )
        .bind(&model)
        .bind(&missing_shas)
        .bind(&literals)
        .execute(&self.pool)
        .await
        .map_err(store("caching vectors"))?;
        Ok((missing_shas.len(), reused))
    }
}

/// Texts embedded (`stratavore_search_texts_embedded_total`), chunks
/// written, and vectors computed by the model or reused from the cache.
fn count(pass: &Pass) {
    for (name, n) in [
        ("stratavore_search_texts_embedded_total", pass.texts),
        ("stratavore_search_chunks_written_total", pass.chunks),
        ("stratavore_search_vectors_computed_total", pass.computed),
        ("stratavore_search_vectors_reused_total", pass.reused),
    ] {
        metrics::counter!(name).increment(n as u64);
    }
}

/// Run the model off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EmbedError> + Send + 'static,
) -> Result<T, WorkerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkerError::Task(e.to_string()))?
        .map_err(WorkerError::from)
}

/// glibc keeps freed memory in its arenas; after the model is dropped,
/// hand it back to the system so the gateway's resident size falls.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's
    // own free lists, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_rests_in_proportion_to_its_share_of_busy_time() {
        let pass = Duration::from_millis(300);
        assert_eq!(rest_after(pass, 50), pass, "busy half the time");
        assert_eq!(rest_after(pass, 25), Duration::from_millis(900));
        assert_eq!(rest_after(pass, 75), Duration::from_millis(100));
        assert_eq!(rest_after(pass, 100), Duration::ZERO, "catching up");
        assert_eq!(
            rest_after(pass, 0),
            Duration::from_millis(29_700),
            "below 1% is 1%"
        );
    }

    #[test]
    fn the_worker_yields_to_live_read_models_that_are_behind() {
        let caught_up = Duration::from_millis(200);
        let behind = Duration::from_secs(3);
        assert_eq!(busy_share(50, caught_up), 50);
        assert_eq!(busy_share(50, BEHIND_AFTER), 50, "at the bound");
        assert_eq!(busy_share(50, behind), 5, "a tenth");
        assert_eq!(busy_share(5, behind), 1, "never none");
        assert_eq!(busy_share(100, behind), 100, "catching up on purpose");
    }
}
