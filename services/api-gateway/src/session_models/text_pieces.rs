//! How the text pieces of `process.text_chunked` make up messages. A node
//! cuts a long message into pieces of at most
//! [`TEXT_CHUNK_MAX_BYTES`], on character boundaries, and says nothing of
//! where a message ends; a piece that follows a full piece of the same role
//! is taken as the rest of that message. (A message that ends exactly at a
//! full piece and is followed at once by another of the same role is taken
//! as one: rare, and only a count is at stake.)

use stratavore_agent_protocols::TEXT_CHUNK_MAX_BYTES;

/// A cut on a character boundary leaves a full piece up to three bytes
/// short of the cap (a UTF-8 character is at most four bytes).
const FULL_PIECE_BYTES: usize = TEXT_CHUNK_MAX_BYTES - 3;

/// The roles whose pieces are messages of the conversation (a `result`
/// repeats the agent's final reply, so it is not counted again).
const MESSAGE_ROLES: &[&str] = &["user", "assistant"];

/// The last piece an attempt's transcript gave: its role, and whether it
/// filled the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPiece {
    /// `user`, `assistant` or `result`.
    pub role: String,
    /// It filled the cap, so the message may go on in the next piece.
    pub full: bool,
}

/// What one piece does to its attempt's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceEffect {
    /// It begins a message that counts.
    pub new_message: bool,
    /// It continues the previous piece's message.
    pub continues: bool,
    /// What the next piece will see as the last one.
    pub last: LastPiece,
}

/// The effect of a piece of `role` with `text`, after `previous`.
#[must_use]
pub fn piece_effect(previous: Option<&LastPiece>, role: &str, text: &str) -> PieceEffect {
    let continues = previous.is_some_and(|p| p.full && p.role == role);
    PieceEffect {
        new_message: !continues && MESSAGE_ROLES.contains(&role),
        continues,
        last: LastPiece {
            role: role.to_owned(),
            full: text.len() >= FULL_PIECE_BYTES,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(role: &str) -> LastPiece {
        LastPiece {
            role: role.to_owned(),
            full: true,
        }
    }

    #[test]
    fn a_short_user_or_assistant_piece_is_a_message_and_a_result_is_not() {
        assert!(piece_effect(None, "user", "hi").new_message);
        assert!(piece_effect(None, "assistant", "hello").new_message);
        assert!(!piece_effect(None, "result", "done").new_message);
    }

    #[test]
    fn a_piece_after_a_full_piece_of_its_role_continues_that_message() {
        let long = "x".repeat(TEXT_CHUNK_MAX_BYTES);
        let first = piece_effect(None, "assistant", &long);
        assert!(first.new_message && first.last.full);
        let rest = piece_effect(Some(&first.last), "assistant", "tail");
        assert!(rest.continues && !rest.new_message);
        assert!(!rest.last.full);
    }

    #[test]
    fn a_piece_cut_short_of_the_cap_by_a_wide_character_is_still_full() {
        let text = "é".repeat((TEXT_CHUNK_MAX_BYTES - 1) / 2);
        assert!(piece_effect(None, "user", &text).last.full);
    }

    #[test]
    fn a_full_piece_of_another_role_does_not_join_the_next() {
        let next = piece_effect(Some(&full("assistant")), "result", "final");
        assert!(!next.continues);
        let next = piece_effect(Some(&full("user")), "assistant", "reply");
        assert!(next.new_message);
    }

    #[test]
    fn a_short_previous_piece_ends_its_message() {
        let previous = LastPiece {
            role: "assistant".to_owned(),
            full: false,
        };
        assert!(piece_effect(Some(&previous), "assistant", "again").new_message);
    }
}
