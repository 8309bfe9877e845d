//! Cutting a text into chunks of at most N tokens, given where each token
//! of the text lies (the byte offsets a tokenizer reports). Pure: the
//! tokenizer runs elsewhere.
//!
//! Chunks are cut between tokens, at the end of a sentence where one falls
//! in the second half of the window, else at the last whitespace in it (so
//! a word split into several word pieces stays whole), else after exactly N
//! tokens. Every token is in exactly one chunk, in order.

use std::ops::Range;

/// A piece of a text, to be embedded whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The text of the chunk, from its first token's start to its last
    /// token's end.
    pub text: String,
    /// Where [`Chunk::text`] lies in the whole text, in bytes.
    pub range: Range<usize>,
    /// How many tokens of the tokenizer it holds (special tokens not
    /// counted).
    pub tokens: usize,
}

/// Cuts `text` into chunks of at most `max_tokens` of the tokens whose
/// byte ranges are `offsets` (in order, within `text`, on character
/// boundaries). A text with no token gives no chunk.
///
/// # Panics
///
/// When `max_tokens` is zero, or an offset lies outside `text` or off a
/// character boundary (the tokenizer's offsets of this very text do not).
pub fn chunk_by_tokens(text: &str, offsets: &[(usize, usize)], max_tokens: usize) -> Vec<Chunk> {
    assert!(max_tokens > 0, "a chunk holds at least one token");
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < offsets.len() {
        let end = cut_point(text, offsets, start, max_tokens);
        let range = offsets[start].0..offsets[end - 1].1;
        chunks.push(Chunk {
            text: text[range.clone()].to_owned(),
            range,
            tokens: end - start,
        });
        start = end;
    }
    chunks
}

/// The index of the first token after the chunk that starts at `start`.
fn cut_point(text: &str, offsets: &[(usize, usize)], start: usize, max_tokens: usize) -> usize {
    let limit = start.saturating_add(max_tokens);
    if limit >= offsets.len() {
        return offsets.len();
    }
    // A cut before token `j` is what we weigh, for j in (start, limit].
    let cuts = (start + 1..=limit).rev();
    let half = start + max_tokens.div_ceil(2);
    if let Some(j) = cuts
        .clone()
        .take_while(|&j| j >= half)
        .find(|&j| ends_sentence(text, offsets, j))
    {
        return j;
    }
    cuts.into_iter()
        .find(|&j| gap(text, offsets, j).chars().any(char::is_whitespace))
        .unwrap_or(limit)
}

/// The text between token `j - 1` and token `j`.
fn gap<'t>(text: &'t str, offsets: &[(usize, usize)], j: usize) -> &'t str {
    let from = offsets[j - 1].1;
    let to = offsets[j].0.max(from);
    &text[from..to]
}

/// Whether a sentence ends between token `j - 1` and token `j`: a line
/// break, or a full stop, question or exclamation mark followed by space.
fn ends_sentence(text: &str, offsets: &[(usize, usize)], j: usize) -> bool {
    let gap = gap(text, offsets, j);
    if gap.contains('\n') {
        return true;
    }
    let previous = &text[offsets[j - 1].0..offsets[j - 1].1];
    matches!(previous, "." | "!" | "?") && gap.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets of a toy tokenizer: every run of letters or digits is a
    /// token, cut into pieces of at most `piece` bytes (like word pieces),
    /// and every other non-space character is a token of its own.
    fn toy_offsets(text: &str, piece: usize) -> Vec<(usize, usize)> {
        let mut offsets = Vec::new();
        let mut word: Option<usize> = None;
        let flush = |offsets: &mut Vec<(usize, usize)>, from: usize, to: usize| {
            let mut at = from;
            while at < to {
                let end = (at + piece).min(to);
                offsets.push((at, end));
                at = end;
            }
        };
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                word.get_or_insert(i);
                continue;
            }
            if let Some(from) = word.take() {
                flush(&mut offsets, from, i);
            }
            if !c.is_whitespace() {
                offsets.push((i, i + c.len_utf8()));
            }
        }
        if let Some(from) = word {
            flush(&mut offsets, from, text.len());
        }
        offsets
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn a_text_within_the_limit_is_one_chunk() {
        let text = "  undo a schema migration  ";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 100), 10);
        assert_eq!(texts(&chunks), ["undo a schema migration"]);
        assert_eq!(chunks[0].range, 2..25);
        assert_eq!(chunks[0].tokens, 4);
    }

    #[test]
    fn a_text_with_no_token_has_no_chunk() {
        assert!(chunk_by_tokens("   ", &[], 5).is_empty());
    }

    #[test]
    fn chunks_end_at_a_sentence_end_in_the_second_half_of_the_window() {
        let text = "one two three. four five six seven eight";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 100), 6);
        assert_eq!(
            texts(&chunks),
            ["one two three.", "four five six seven eight"]
        );
    }

    #[test]
    fn a_sentence_end_early_in_the_window_gives_way_to_the_last_space() {
        let text = "one. two three four five six seven";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 100), 6);
        assert_eq!(texts(&chunks), ["one. two three four five", "six seven"]);
    }

    #[test]
    fn a_line_break_ends_a_sentence() {
        let text = "alpha beta gamma\ndelta epsilon zeta eta";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 100), 5);
        assert_eq!(
            texts(&chunks),
            ["alpha beta gamma", "delta epsilon zeta eta"]
        );
    }

    #[test]
    fn words_split_into_pieces_are_not_cut_when_a_space_is_in_the_window() {
        // "abcdefgh" is four pieces of two bytes.
        let text = "ab cd abcdefgh ef";
        let offsets = toy_offsets(text, 2);
        assert_eq!(offsets.len(), 7);
        let chunks = chunk_by_tokens(text, &offsets, 5);
        assert_eq!(texts(&chunks), ["ab cd", "abcdefgh ef"]);
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_between_its_pieces() {
        let text = "abcdefghij";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 2), 2);
        assert_eq!(texts(&chunks), ["abcd", "efgh", "ij"]);
        assert_eq!(
            chunks.iter().map(|c| c.range.clone()).collect::<Vec<_>>(),
            [0..4, 4..8, 8..10]
        );
    }

    #[test]
    fn every_token_is_in_exactly_one_chunk_in_order_and_none_is_too_long() {
        let text = "Rolling back a failed migration. It broke the users table!\n\
                    We reverted it; the deploy (v2.3.1) went out again? Yes. "
            .repeat(7);
        let offsets = toy_offsets(&text, 3);
        for max_tokens in [1, 2, 3, 7, 16, 50, 1000] {
            let chunks = chunk_by_tokens(&text, &offsets, max_tokens);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.tokens <= max_tokens && c.tokens > 0)
            );
            assert_eq!(
                chunks.iter().map(|c| c.tokens).sum::<usize>(),
                offsets.len(),
                "max_tokens {max_tokens}"
            );
            let mut token = 0;
            for chunk in &chunks {
                assert_eq!(chunk.range.start, offsets[token].0);
                token += chunk.tokens;
                assert_eq!(chunk.range.end, offsets[token - 1].1);
                assert_eq!(chunk.text, text[chunk.range.clone()]);
            }
        }
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let text = "café crème brûlée déjà vu";
        let chunks = chunk_by_tokens(text, &toy_offsets(text, 100), 2);
        assert_eq!(texts(&chunks), ["café crème", "brûlée déjà", "vu"]);
    }
}
