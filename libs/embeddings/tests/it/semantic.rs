use stratavore_embeddings::EmbeddingProvider;

use crate::{cosine, provisioned_minilm};

const QUERY: &str = "undo a schema migration";
const ROLLBACK: &str = "How to roll back a failed Postgres schema migration after a bad deploy";
const CSS_LAYOUT: &str = "Centre a div with CSS grid and flexbox layout";
/// Means the same as the query without sharing a word with it.
const PARAPHRASE: &str = "Reverting the database upgrade that broke the users table";
const UNRELATED: [&str; 3] = [
    CSS_LAYOUT,
    "Bake the bread for forty minutes until the crust is golden",
    "The football match ended in a draw after extra time",
];

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_lowercase).collect()
}

#[test]
fn a_schema_migration_rollback_ranks_above_css_layout_for_undo_a_schema_migration() {
    let minilm = provisioned_minilm();
    let vectors = minilm
        .embed(&[QUERY, ROLLBACK, CSS_LAYOUT])
        .expect("the texts embed");
    let rollback = cosine(&vectors[0], &vectors[1]);
    let css = cosine(&vectors[0], &vectors[2]);
    eprintln!("rollback {rollback:.3}, css {css:.3}");
    assert!(rollback > css + 0.3, "rollback {rollback}, css {css}");
}

#[test]
fn a_text_that_shares_no_word_but_means_the_same_ranks_above_unrelated_ones() {
    let query_words = words(QUERY);
    assert!(
        words(PARAPHRASE).iter().all(|w| !query_words.contains(w)),
        "the paraphrase must share no word with the query"
    );
    let minilm = provisioned_minilm();
    let mut texts = vec![QUERY, PARAPHRASE];
    texts.extend(UNRELATED);
    let vectors = minilm.embed(&texts).expect("the texts embed");
    let paraphrase = cosine(&vectors[0], &vectors[1]);
    for (text, vector) in UNRELATED.iter().zip(&vectors[2..]) {
        let unrelated = cosine(&vectors[0], vector);
        eprintln!("paraphrase {paraphrase:.3}, {text:?} {unrelated:.3}");
        assert!(
            paraphrase > unrelated + 0.1,
            "paraphrase {paraphrase}, {text:?} {unrelated}"
        );
    }
}
