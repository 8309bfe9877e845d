//! The sessions' text: real prose (the paragraphs of this repository's
//! README and architecture notes) as the agents' replies and prompts, and
//! the gateway's embedding worker run over it as after a live run, before
//! the rebuild and again after it.

use api_gateway::config::SearchSection;
use api_gateway::search::Search;
use api_gateway::search::worker::{EmbeddingWorker, Pass};
use sqlx::PgPool;
use std::sync::Arc;
use stratavore_agent_protocols::{TEXT_CHUNK_MAX_BYTES, split_text};
use stratavore_consumer::ApplyLag;
use uuid::Uuid;

/// Replies shorter than this are headings or list fragments, not messages.
const MIN_REPLY_BYTES: usize = 200;
/// A reply is one piece of `process.text_chunked` (cut at 8 KiB).
const MAX_REPLY_BYTES: usize = 4_000;

/// Long messages, each several replies long: a node cuts each into pieces.
const LONG_MESSAGES: usize = 4;
/// A long message is at least this long.
const LONG_MESSAGE_BYTES: usize = TEXT_CHUNK_MAX_BYTES + 2_000;

/// The texts the history's sessions say.
#[derive(Debug, Clone)]
pub struct Texts {
    prompts: Arc<[String]>,
    replies: Arc<[String]>,
    /// Long messages as the node cuts them, piece by piece.
    long: Arc<[Vec<String>]>,
}

impl Texts {
    /// At most `replies` paragraphs of the docs as replies, and the first
    /// sentences of at most `prompts` of them as prompts.
    pub fn from_docs(replies: usize, prompts: usize) -> anyhow::Result<Self> {
        let root = stratavore_testkit::paths::repo_root();
        let mut paragraphs = Vec::new();
        for doc in ["docs/architecture.md", "README.md"] {
            let text = std::fs::read_to_string(root.join(doc))?;
            paragraphs.extend(text.split("\n\n").filter_map(prose));
        }
        paragraphs.dedup();
        let mut firsts: Vec<String> = paragraphs
            .iter()
            .filter_map(|p| p.split_once(". ").map(|(first, _)| format!("{first}.")))
            .filter(|s| (30..200).contains(&s.len()))
            .collect();
        firsts.sort();
        firsts.dedup();
        let replies: Vec<String> = paragraphs
            .into_iter()
            .filter(|p| (MIN_REPLY_BYTES..=MAX_REPLY_BYTES).contains(&p.len()))
            .take(replies)
            .collect();
        let prompts: Vec<String> = firsts.into_iter().take(prompts).collect();
        anyhow::ensure!(
            !replies.is_empty() && !prompts.is_empty(),
            "the docs gave no paragraphs"
        );
        let long: Vec<Vec<String>> = (0..LONG_MESSAGES)
            .map(|first| {
                let mut message = String::new();
                for reply in replies.iter().cycle().skip(first) {
                    if message.len() >= LONG_MESSAGE_BYTES {
                        break;
                    }
                    message.push_str(reply);
                    message.push_str("\n\n");
                }
                split_text(&message, TEXT_CHUNK_MAX_BYTES)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        Ok(Self {
            prompts: prompts.into(),
            replies: replies.into(),
            long: long.into(),
        })
    }

    /// The `i`-th long message's pieces, round the pool.
    pub fn long(&self, i: usize) -> &[String] {
        &self.long[i % self.long.len()]
    }

    /// The `i`-th prompt, round the pool.
    pub fn prompt(&self, i: usize) -> &str {
        &self.prompts[i % self.prompts.len()]
    }

    /// The `i`-th reply, round the pool.
    pub fn reply(&self, i: usize) -> &str {
        &self.replies[i % self.replies.len()]
    }

    /// Every distinct text.
    pub fn distinct(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .prompts
            .iter()
            .chain(self.replies.iter())
            .chain(self.long.iter().flatten())
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// A paragraph of prose on one line; None for code, tables, headings and
/// markup.
fn prose(block: &str) -> Option<String> {
    let block = block.trim();
    let markup = ["```", "|", "#", "<!--", "    "];
    if block.is_empty() || markup.iter().any(|m| block.starts_with(m)) {
        return None;
    }
    Some(block.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The sum of several worker passes.
fn add(sum: &mut Pass, pass: Pass) {
    sum.texts += pass.texts;
    sum.chunks += pass.chunks;
    sum.computed += pass.computed;
    sum.reused += pass.reused;
}

/// Run the worker until no text is pending.
pub async fn embed_pending(
    pool: &PgPool,
    search: Arc<Search>,
    config: SearchSection,
) -> anyhow::Result<Pass> {
    let worker = EmbeddingWorker::new(pool.clone(), search, config, ApplyLag::default());
    let mut sum = Pass::default();
    loop {
        let pass = worker.pass().await?;
        if pass.texts == 0 {
            return Ok(sum);
        }
        add(&mut sum, pass);
    }
}

/// What a live run leaves: every text cut and embedded by the worker, so
/// `text_chunking` and `embedding_cache` hold its chunks and vectors. (The
/// texts are recorded under a session of their own; the rebuild empties
/// `session_texts` and `session_chunks` anyway.)
pub async fn embed_as_live(
    pool: &PgPool,
    texts: &Texts,
    search: Arc<Search>,
    config: SearchSection,
) -> anyhow::Result<Pass> {
    let bodies = texts.distinct();
    let ids: Vec<Uuid> = bodies
        .iter()
        .map(|b| Uuid::new_v5(&Uuid::NAMESPACE_OID, b.as_bytes()))
        .collect();
    sqlx::query(
        "INSERT INTO session_texts (text_id, session_id, runner_id, attempt, role, body, at)
         SELECT id, 'live-run', $3, 1, 'assistant', body, now()
         FROM unnest($1::uuid[], $2::text[]) AS t(id, body)",
    )
    .bind(&ids)
    .bind(&bodies)
    .bind(Uuid::nil())
    .execute(pool)
    .await?;
    embed_pending(pool, search, config).await
}
