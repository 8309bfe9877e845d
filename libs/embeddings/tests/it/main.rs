//! The embedder against the real model, as provisioning installs it
//! (`make provision`): vectors equal to an independent implementation's,
//! meaning-based ranking, chunking instead of truncation, the model's
//! lifecycle.

mod chunking;
mod lifecycle;
mod reference;
mod semantic;

use std::time::Duration;

use stratavore_embeddings::{MiniLm, MiniLmConfig};

/// A provider on the provisioned model, not yet loaded.
pub fn provisioned_minilm() -> MiniLm {
    MiniLm::new(MiniLmConfig {
        model_dir: stratavore_testkit::embedding_model_dir(),
        idle_release: Duration::from_secs(300),
    })
}

/// The cosine of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
