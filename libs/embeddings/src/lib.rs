//! Sentence embeddings behind one provider trait, [`EmbeddingProvider`],
//! and its one provider today, [`MiniLm`]: all-MiniLM-L6-v2 run in process
//! with candle, from the folder provisioning unpacks it into. Texts longer
//! than the model takes are cut by [`chunking`] into chunks of the model's
//! own tokens, never truncated.
//!
//! A missing model is an error ([`EmbedError::ModelMissing`]), never a
//! fallback to some other vector: every vector is tagged with the model
//! that made it ([`EmbeddingProvider::model`]), and vectors of two models
//! must not meet in one index.
#![deny(missing_docs)]

pub mod chunking;
mod error;
mod minilm;

pub use chunking::Chunk;
pub use error::EmbedError;
pub use minilm::{
    DEFAULT_CHUNK_TOKENS, MAX_SEQUENCE_TOKENS, MAX_TOKENS_PER_CHUNK, MINILM_DIMENSIONS,
    MINILM_MODEL, MiniLm, MiniLmConfig,
};

/// Something that turns texts into unit vectors of a fixed size.
///
/// Implementations are thread-safe: one provider serves a whole process.
pub trait EmbeddingProvider: Send + Sync {
    /// The model's name, stored with every vector it makes
    /// (`all-MiniLM-L6-v2`).
    fn model(&self) -> &str;

    /// The length of every vector.
    fn dimensions(&self) -> usize;

    /// Whether the model can be used, without loading it: the error names
    /// what is missing (a service reports it as not ready).
    fn check_installed(&self) -> Result<(), EmbedError>;

    /// Whether the model is in memory now.
    fn is_loaded(&self) -> bool;

    /// Lets the model go when it has been idle long enough as of `now`;
    /// returns whether it did (the next use loads it again).
    fn release_if_idle(&self, now: std::time::Instant) -> bool;

    /// Cuts `text` into chunks of at most `max_tokens` tokens of the
    /// model's tokenizer (special tokens not counted), covering every token
    /// of the text, so that each chunk is embedded whole.
    fn chunk(&self, text: &str, max_tokens: usize) -> Result<Vec<Chunk>, EmbedError>;

    /// One L2-normalised vector per text, in order. A text longer than the
    /// model takes is an error, not truncated: chunk it first.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}
