use std::time::Instant;

use serde::Deserialize;
use stratavore_embeddings::{EmbeddingProvider, MINILM_DIMENSIONS, MINILM_MODEL};

use crate::provisioned_minilm;

/// What `scripts/reference_embeddings.py` writes.
#[derive(Deserialize)]
struct Reference {
    model: String,
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

const TOLERANCE: f32 = 1e-4;

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference_vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("the fixture is checked in");
    serde_json::from_str(&text).expect("the fixture is what the script writes")
}

/// Asserts `got` is within [`TOLERANCE`] of `want` in every component;
/// returns the largest difference.
fn assert_close(sentence: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{sentence}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        worst <= TOLERANCE,
        "{sentence:?}: a component differs from the reference by {worst}"
    );
    worst
}

#[test]
fn vectors_match_an_independent_numpy_forward_pass_to_1e_4() {
    let reference = reference();
    let minilm = provisioned_minilm();
    assert_eq!(reference.model, minilm.model());
    assert_eq!(minilm.model(), MINILM_MODEL);
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();

    let started = Instant::now();
    minilm.load().expect("the model loads");
    let loaded = started.elapsed();
    let started = Instant::now();
    // One batch: the shorter sentences are padded, and padding must not
    // count in their mean.
    let batch = minilm.embed(&sentences).expect("the batch embeds");
    let embedded = started.elapsed();
    eprintln!(
        "load {loaded:?}, {} sentences in one batch {embedded:?}",
        sentences.len()
    );

    assert_eq!(batch.len(), reference.vectors.len());
    let mut worst: f32 = 0.0;
    for ((sentence, got), want) in sentences.iter().zip(&batch).zip(&reference.vectors) {
        assert_eq!(got.len(), MINILM_DIMENSIONS);
        worst = worst.max(assert_close(sentence, got, want));
        let alone = minilm.embed(&[sentence]).expect("one sentence embeds");
        worst = worst.max(assert_close(sentence, &alone[0], want));
    }
    eprintln!("largest difference from the reference: {worst:e}");
}

#[test]
fn vectors_have_unit_length() {
    let minilm = provisioned_minilm();
    let vectors = minilm
        .embed(&["short", "", "a somewhat longer sentence about runners"])
        .expect("the texts embed");
    for vector in vectors {
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}
