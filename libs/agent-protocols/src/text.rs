//! Splitting long text into chunks of bounded size.

/// The largest text carried by one [`crate::AgentFact::TextChunk`]: events
/// stay small however much an agent writes in one block.
pub const TEXT_CHUNK_MAX_BYTES: usize = 8 * 1024;

/// `text` as facts of `role`, each at most [`TEXT_CHUNK_MAX_BYTES`] long.
pub(crate) fn text_chunks(role: crate::TextRole, text: &str) -> Vec<crate::AgentFact> {
    split_text(text, TEXT_CHUNK_MAX_BYTES)
        .into_iter()
        .map(|piece| crate::AgentFact::TextChunk {
            role,
            text: piece.to_owned(),
        })
        .collect()
}

/// The string at `key` of a JSON object, if it is one.
pub(crate) fn str_field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a str> {
    object.get(key).and_then(serde_json::Value::as_str)
}

/// Splits `text` into pieces of at most `max_bytes` bytes, each cut on a
/// character boundary; empty text gives no pieces. A `max_bytes` smaller
/// than one character still makes progress, one character per piece.
#[must_use]
pub fn split_text(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = max_bytes.min(rest.len());
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // One character wider than the limit: take it whole.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_no_chunks() {
        assert!(split_text("", 8).is_empty());
    }

    #[test]
    fn long_text_is_split_at_the_limit_and_rejoins_exactly() {
        let text = "a".repeat(20);
        let pieces = split_text(&text, 8);
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 8, 4]
        );
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn multibyte_characters_are_never_cut() {
        let text = "é".repeat(5); // 2 bytes each
        let pieces = split_text(&text, 3);
        assert!(pieces.iter().all(|p| p.len() == 2));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn a_limit_below_one_character_still_progresses() {
        assert_eq!(split_text("日本", 1), ["日", "本"]);
    }
}
