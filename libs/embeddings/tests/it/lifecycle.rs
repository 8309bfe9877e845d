use std::path::PathBuf;
use std::time::{Duration, Instant};

use stratavore_embeddings::{
    EmbedError, EmbeddingProvider, MAX_TOKENS_PER_CHUNK, MINILM_DIMENSIONS, MiniLm, MiniLmConfig,
};

use crate::provisioned_minilm;

#[test]
fn the_model_loads_on_first_use_and_is_released_after_the_idle_time() {
    let minilm = MiniLm::new(MiniLmConfig {
        model_dir: stratavore_testkit::embedding_model_dir(),
        idle_release: Duration::from_secs(60),
    });
    assert!(!minilm.is_loaded());
    assert!(!minilm.release_if_idle(Instant::now() + Duration::from_secs(3600)));

    let first = minilm.embed(&["load me"]).expect("it embeds");
    assert!(minilm.is_loaded());
    assert!(!minilm.release_if_idle(Instant::now()));
    assert!(minilm.is_loaded(), "released before its idle time");

    assert!(minilm.release_if_idle(Instant::now() + Duration::from_secs(61)));
    assert!(!minilm.is_loaded());

    let again = minilm.embed(&["load me"]).expect("it loads again");
    assert!(minilm.is_loaded());
    assert_eq!(first, again);
}

#[test]
fn the_provider_serves_threads_through_the_trait() {
    let minilm: &dyn EmbeddingProvider = &provisioned_minilm();
    assert_eq!(minilm.dimensions(), MINILM_DIMENSIONS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| scope.spawn(move || minilm.embed(&[&format!("thread {i}")])))
            .collect();
        for handle in handles {
            let vectors = handle.join().expect("no panic").expect("it embeds");
            assert_eq!(vectors[0].len(), MINILM_DIMENSIONS);
        }
    });
}

#[test]
fn a_missing_model_folder_is_an_error_that_says_to_provision() {
    let dir = PathBuf::from("/nonexistent/stratavore/models/all-minilm-l6-v2");
    let minilm = MiniLm::new(MiniLmConfig {
        model_dir: dir.clone(),
        idle_release: Duration::from_secs(60),
    });
    let error = minilm
        .embed(&["anything"])
        .expect_err("no model, no vector");
    assert!(
        matches!(&error, EmbedError::ModelMissing { path } if *path == dir),
        "{error:?}"
    );
    assert!(error.to_string().contains("make provision"), "{error}");
    assert!(!minilm.is_loaded());
    assert!(matches!(
        minilm.chunk("anything", 10),
        Err(EmbedError::ModelMissing { .. })
    ));
}

#[test]
fn a_model_folder_missing_a_file_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("minilm-partial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let installed = stratavore_testkit::embedding_model_dir();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(installed.join(file), dir.join(file)).expect("a copy");
    }
    let minilm = MiniLm::new(MiniLmConfig {
        model_dir: dir.clone(),
        idle_release: Duration::from_secs(60),
    });
    let error = minilm
        .embed(&["anything"])
        .expect_err("no weights, no vector");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(&error, EmbedError::ModelMissing { path } if *path == dir.join("model.safetensors")),
        "{error:?}"
    );
}

#[test]
fn a_chunk_size_the_model_cannot_take_whole_is_refused() {
    let minilm = provisioned_minilm();
    for size in [0, MAX_TOKENS_PER_CHUNK + 1] {
        assert!(matches!(
            minilm.chunk("some text", size),
            Err(EmbedError::ChunkSize { .. })
        ));
    }
    assert!(!minilm.is_loaded(), "a refused size needs no model");
}
