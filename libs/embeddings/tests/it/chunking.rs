use stratavore_embeddings::{
    DEFAULT_CHUNK_TOKENS, EmbedError, EmbeddingProvider, MAX_SEQUENCE_TOKENS, MiniLm,
};

use crate::{cosine, provisioned_minilm};

const PARAGRAPH: &str = "The orchestrator decides what each runner does next. \
    A runner that loses its node is relaunched elsewhere when its session allows it. \
    Quota windows pause runners rather than failing them, and they resume on their own. \
    Every decision is an event in the log, and the read tables are folded from it. \
    Tests start their own database and broker prefix, so they can run in parallel. \
    The gateway answers every bad input with the path of the field that was wrong.\n";

/// `count` words of `pool` in turn, keeping only words the tokenizer
/// reads as one token, so that the text has exactly `count` tokens.
fn single_token_words(minilm: &MiniLm, pool: &[&str], count: usize) -> Vec<String> {
    let singles: Vec<&str> = pool
        .iter()
        .copied()
        .filter(|word| minilm.sequence_length(word).expect("a word tokenizes") == 3)
        .collect();
    assert!(
        singles.len() >= 8,
        "too few single-token words: {singles:?}"
    );
    singles
        .iter()
        .cycle()
        .take(count)
        .map(|w| (*w).to_owned())
        .collect()
}

#[test]
fn a_text_longer_than_256_tokens_is_chunked_whole_not_truncated() {
    let minilm = provisioned_minilm();
    let text = PARAGRAPH.repeat(4);
    assert!(
        matches!(
            minilm.sequence_length(&text),
            Err(EmbedError::TooManyTokens { .. })
        ),
        "the text must be longer than the model takes"
    );
    let refused = minilm.embed(&["short", &text]);
    assert!(
        matches!(refused, Err(EmbedError::TooManyTokens { index: 1, limit }) if limit == MAX_SEQUENCE_TOKENS),
        "{refused:?}"
    );

    let chunks = minilm
        .chunk(&text, DEFAULT_CHUNK_TOKENS)
        .expect("the text chunks");
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    let every_token = minilm.chunk(&text, 1).expect("the text chunks").len();
    assert_eq!(chunks.iter().map(|c| c.tokens).sum::<usize>(), every_token);
    let mut covered = 0;
    for chunk in &chunks {
        assert!(chunk.tokens <= DEFAULT_CHUNK_TOKENS);
        assert_eq!(chunk.text, text[chunk.range.clone()]);
        assert!(
            text[covered..chunk.range.start].trim().is_empty(),
            "text between chunks: {:?}",
            &text[covered..chunk.range.start]
        );
        covered = chunk.range.end;
        assert!(
            chunk.text.ends_with('.'),
            "cut inside a sentence: {chunk:?}"
        );
        let length = minilm.sequence_length(&chunk.text).expect("a chunk fits");
        assert_eq!(length, chunk.tokens + 2);
    }
    assert!(text[covered..].trim().is_empty());

    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let vectors = minilm.embed(&texts).expect("every chunk embeds whole");
    assert_eq!(vectors.len(), chunks.len());
}

#[test]
fn a_200_token_chunk_is_embedded_whole_not_cut_at_128() {
    let minilm = provisioned_minilm();
    let databases = [
        "the",
        "database",
        "table",
        "was",
        "broken",
        "after",
        "upgrade",
        "we",
        "rolled",
        "back",
        "schema",
        "change",
        "and",
        "restored",
        "rows",
        "from",
        "backup",
        "server",
        "query",
        "index",
        "column",
        "lock",
        "transaction",
        "failed",
    ];
    let cooking = [
        "bake", "bread", "oven", "flour", "sugar", "butter", "cake", "dinner", "kitchen", "salt",
        "pepper", "soup", "garden", "tomato", "cheese", "fresh", "sweet", "hot", "cook", "recipe",
    ];
    let mut words = single_token_words(&minilm, &databases, 126);
    let tail = single_token_words(&minilm, &cooking, 74);
    words.extend(tail.iter().cloned());
    let text = words.join(" ");
    let tail = tail.join(" ");

    assert_eq!(minilm.sequence_length(&text).ok(), Some(200 + 2));
    let whole = minilm
        .chunk(&text, DEFAULT_CHUNK_TOKENS)
        .expect("it chunks");
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].tokens, 200);
    let first_128 = minilm.chunk(&text, 126).expect("it chunks")[0].text.clone();
    assert_eq!(minilm.sequence_length(&first_128).ok(), Some(128));

    let vectors = minilm
        .embed(&[&text, &first_128, &tail])
        .expect("the texts embed");
    let (whole, cut, tail) = (&vectors[0], &vectors[1], &vectors[2]);
    let whole_vs_cut = cosine(whole, cut);
    eprintln!(
        "200 vs first 128 tokens {whole_vs_cut:.3}; with the tail: whole {:.3}, cut {:.3}",
        cosine(whole, tail),
        cosine(cut, tail)
    );
    assert!(
        whole_vs_cut < 0.98,
        "the 200-token text embeds like its first 128 tokens ({whole_vs_cut})"
    );
    // Its last 72 tokens are about cooking, and they count.
    assert!(
        cosine(whole, tail) > cosine(cut, tail) + 0.05,
        "whole {}, cut {}",
        cosine(whole, tail),
        cosine(cut, tail)
    );
}
