//! Semantic search over sessions: what the consumer records
//! ([`texts`]), the worker that chunks and embeds it ([`worker`]), the
//! index of each model's vectors ([`vector_index`]) and the query that
//! fuses vector and full-text rankings ([`query`]).

pub mod query;
pub mod texts;
pub mod vector_index;
pub mod worker;

use crate::config::SearchSection;
use std::sync::Arc;
use std::time::Duration;
use stratavore_embeddings::{EmbeddingProvider, MiniLm, MiniLmConfig};
use stratavore_runtime::Readiness;
pub use vector_index::{VectorIndex, vector_literal};

/// The readiness check that names the model.
pub const READINESS_CHECK: &str = "embeddings";

/// The provider every search and the worker use, with its index.
pub struct Search {
    provider: Arc<dyn EmbeddingProvider>,
    index: VectorIndex,
    rrf_k: u32,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("model", &self.model())
            .finish_non_exhaustive()
    }
}

impl Search {
    /// all-MiniLM-L6-v2 from the configured folder (read on first use).
    pub fn minilm(config: &SearchSection) -> Self {
        let provider = MiniLm::new(MiniLmConfig {
            model_dir: config.model_dir.clone(),
            idle_release: Duration::from_millis(config.idle_release_ms),
        });
        Self::with_provider(Arc::new(provider), config.rrf_k)
    }

    /// Search with `provider`.
    pub fn with_provider(provider: Arc<dyn EmbeddingProvider>, rrf_k: u32) -> Self {
        let index = VectorIndex::new(provider.model(), provider.dimensions());
        Self {
            provider,
            index,
            rrf_k,
        }
    }

    /// The model that answers.
    pub fn model(&self) -> &str {
        self.provider.model()
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn EmbeddingProvider> {
        &self.provider
    }

    /// Its vectors' index.
    pub fn index(&self) -> &VectorIndex {
        &self.index
    }

    /// The fusion's k.
    pub fn rrf_k(&self) -> u32 {
        self.rrf_k
    }

    /// Tell `/readyz` which model answers and whether it is in memory; a
    /// missing model makes the gateway not ready, naming what is missing.
    pub fn report(&self, readiness: &Readiness) {
        metrics::gauge!("stratavore_search_model_loaded", "model" => self.model().to_owned())
            .set(if self.provider.is_loaded() { 1.0 } else { 0.0 });
        match self.provider.check_installed() {
            Ok(()) => readiness.set(
                READINESS_CHECK,
                true,
                format!(
                    "{} ({} dimensions), {}",
                    self.model(),
                    self.provider.dimensions(),
                    if self.provider.is_loaded() {
                        "loaded"
                    } else {
                        "not loaded (loads on first use)"
                    }
                ),
            ),
            Err(e) => readiness.set(READINESS_CHECK, false, format!("{}: {e}", self.model())),
        }
    }
}
