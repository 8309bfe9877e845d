//! Desired states from the orchestrator: only a `rev` above the last one
//! applied for a runner's attempt counts, so a late duplicate or a
//! reordering cannot undo a later decision.

use stratavore_agent_shim::runner_dir::Want as ShimWant;
use stratavore_events::runner::Want;

/// Whether a desired state with `rev` replaces the one applied last
/// (`None`: none yet).
#[must_use]
pub fn supersedes(last_applied: Option<u64>, rev: u64) -> bool {
    last_applied.is_none_or(|last| rev > last)
}

/// The shim's spelling of a desired state.
#[must_use]
pub fn shim_want(want: Want) -> ShimWant {
    match want {
        Want::Running => ShimWant::Running,
        Want::Paused => ShimWant::Paused,
        Want::Stopped => ShimWant::Stopped,
        Want::Killed => ShimWant::Killed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_higher_rev_than_the_last_applied_counts() {
        assert!(supersedes(None, 0));
        assert!(supersedes(Some(3), 4));
        assert!(!supersedes(Some(4), 4), "a duplicate changes nothing");
        assert!(
            !supersedes(Some(5), 4),
            "a late one cannot undo a later decision"
        );
    }
}
