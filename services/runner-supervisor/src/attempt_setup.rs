//! What an attempt's transcript is read with, from its offer, this node's
//! profile and prices, and the stalls recorded in its runner directory: the
//! same at launch and when a restarted node reads the transcript again.

use crate::domain::pricing::PriceTable;
use crate::domain::stall::StallMarker;
use crate::domain::transcript_events::AttemptSetup;
use std::io::Write;
use std::path::Path;
use stratavore_agent_protocols::{ParserKind, TokenUsage};
use stratavore_events::process::OfferAttempt;
use stratavore_profiles::Profiles;

/// Stalls the node saw, one JSON [`StallMarker`] per line, appended by the
/// supervisor (the shim never reads it). Kept in the runner directory so a
/// restarted supervisor derives each stall's event where it was derived.
pub const STALLS_FILE: &str = "stalls.jsonl";

/// The setup of `offer`'s attempt, whose runner directory is `dir`.
pub fn attempt_setup(
    profiles: &Profiles,
    pricing: &PriceTable,
    offer: &OfferAttempt,
    dir: &Path,
) -> AttemptSetup {
    let parser = match profiles.get(&offer.profile) {
        Some(profile) => profile.parser,
        None => {
            // Only a config changed under a running attempt gets here: its
            // lines are kept, and billed by no parser rather than a wrong one.
            tracing::warn!(profile = %offer.profile, "the attempt's profile is no longer configured");
            ParserKind::None
        }
    };
    let b = &offer.usage_baseline;
    AttemptSetup {
        pricing: pricing.clone(),
        parser,
        usage_baseline: TokenUsage {
            input_tokens: b.input_tokens,
            output_tokens: b.output_tokens,
            cache_creation_input_tokens: b.cache_creation_input_tokens,
            cache_read_input_tokens: b.cache_read_input_tokens,
        },
        session_id: offer.session_id.clone(),
        model: offer.model.clone(),
        stalls: read_stalls(dir),
    }
}

/// The stalls recorded in `dir`; an unreadable file or line (a write cut
/// short by a crash) is skipped, since its event was then never recorded.
pub fn read_stalls(dir: &Path) -> Vec<StallMarker> {
    let Ok(text) = std::fs::read_to_string(dir.join(STALLS_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Appends `marker` to `dir`'s stalls file and syncs it, before its event is
/// recorded: a restart then derives the event again, never a different one.
pub fn append_stall(dir: &Path, marker: &StallMarker) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(marker).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STALLS_FILE))?;
    file.write_all(&line)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stall::StallPolicy;

    #[test]
    fn stalls_appended_are_read_back_in_order_and_a_torn_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("stalls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_stalls(&dir).is_empty());
        let a = StallMarker {
            after_line: 3,
            idle_ms: 100,
            policy: StallPolicy::Flag,
        };
        let b = StallMarker {
            after_line: 9,
            idle_ms: 200,
            policy: StallPolicy::Stop,
        };
        append_stall(&dir, &a).unwrap();
        append_stall(&dir, &b).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(STALLS_FILE))
            .unwrap();
        f.write_all(b"{\"after_line\":1").unwrap();
        assert_eq!(read_stalls(&dir), vec![a, b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
