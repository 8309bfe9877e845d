//! The stall timer: an agent that makes no progress (a turn, an item,
//! assistant text) for its profile's timeout is stalled, however many error
//! or retry lines it prints meanwhile. Pure: time comes in as an argument
//! (`CLOCK_BOOTTIME` since boot, so a suspended machine is not a stall the
//! agent caused, nor a clock step a reason to fire).

use serde::{Deserialize, Serialize};
use std::time::Duration;
pub use stratavore_profiles::StallPolicy;

/// A stall the node saw, recorded so that a transcript read again after a
/// restart derives its event at the same place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallMarker {
    /// How many transcript lines of the attempt had been read when it was
    /// seen: its event comes after theirs.
    pub after_line: u64,
    /// How long the agent had gone without progress, in milliseconds.
    pub idle_ms: u64,
    /// What the node did about it.
    pub policy: StallPolicy,
}

impl StallMarker {
    /// The runner's reason, when the stall stopped it.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "stalled: no progress (a turn, an item or assistant text) for {:.1} s, \
             the profile's stall timeout; the node stopped it",
            Duration::from_millis(self.idle_ms).as_secs_f64()
        )
    }
}

/// Watches one attempt for stalls.
#[derive(Debug, Clone)]
pub struct StallWatch {
    timeout: Duration,
    policy: StallPolicy,
    /// The last progress line seen, and when it was seen.
    progress_line: u64,
    progress_at: Duration,
    /// While paused the agent cannot progress: the timer waits, and starts
    /// afresh on resume.
    paused: bool,
    /// Set when a stall fired; cleared by progress (a flagged agent that
    /// stalls again later is flagged again).
    fired: bool,
}

impl StallWatch {
    /// A timer started at `now`, when the agent started.
    #[must_use]
    pub fn new(timeout: Duration, policy: StallPolicy, now: Duration) -> Self {
        Self {
            timeout,
            policy,
            progress_line: 0,
            progress_at: now,
            paused: false,
            fired: false,
        }
    }

    /// Looks at the attempt at `now`: the last progress line its parser
    /// reports, the lines read, and whether it is paused. Returns the stall
    /// to record, once per stretch without progress.
    pub fn observe(
        &mut self,
        now: Duration,
        progress_line: u64,
        lines_seen: u64,
        paused: bool,
    ) -> Option<StallMarker> {
        if progress_line > self.progress_line {
            self.progress_line = progress_line;
            self.progress_at = now;
            self.fired = false;
        }
        if paused != self.paused {
            self.paused = paused;
            // Resumed: the time spent frozen was not the agent's to use.
            if !paused {
                self.progress_at = now;
            }
        }
        if self.paused || self.fired {
            return None;
        }
        let idle = now.saturating_sub(self.progress_at);
        if idle < self.timeout {
            return None;
        }
        self.fired = true;
        Some(StallMarker {
            after_line: lines_seen,
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            policy: self.policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn no_progress_for_the_timeout_is_a_stall_whatever_lines_come() {
        let mut w = StallWatch::new(s(10), StallPolicy::Stop, s(100));
        // Retry lines: lines_seen grows, progress does not.
        assert_eq!(w.observe(s(105), 0, 3, false), None);
        assert_eq!(w.observe(s(109), 0, 40, false), None);
        let m = w.observe(s(110), 0, 41, false).unwrap();
        assert_eq!(m.after_line, 41);
        assert_eq!(m.idle_ms, 10_000);
        assert_eq!(m.policy, StallPolicy::Stop);
        // Once per stretch.
        assert_eq!(w.observe(s(200), 0, 50, false), None);
    }

    #[test]
    fn progress_restarts_the_timer_and_rearms_it() {
        let mut w = StallWatch::new(s(10), StallPolicy::Flag, s(0));
        assert_eq!(w.observe(s(8), 2, 2, false), None);
        assert_eq!(w.observe(s(17), 2, 5, false), None);
        assert!(w.observe(s(18), 2, 5, false).is_some());
        assert_eq!(w.observe(s(20), 3, 6, false), None);
        let again = w.observe(s(30), 3, 6, false).unwrap();
        assert_eq!((again.after_line, again.idle_ms), (6, 10_000));
    }

    #[test]
    fn a_paused_agent_never_stalls_and_a_resume_restarts_the_timer() {
        let mut w = StallWatch::new(s(10), StallPolicy::Stop, s(0));
        assert_eq!(w.observe(s(5), 0, 0, true), None);
        assert_eq!(w.observe(s(60), 0, 0, true), None);
        assert_eq!(w.observe(s(61), 0, 0, false), None);
        assert_eq!(w.observe(s(70), 0, 0, false), None);
        assert!(w.observe(s(71), 0, 0, false).is_some());
    }

    #[test]
    fn the_reason_says_how_long_in_seconds() {
        let m = StallMarker {
            after_line: 0,
            idle_ms: 2_500,
            policy: StallPolicy::Stop,
        };
        assert!(m.describe().contains("for 2.5 s"), "{}", m.describe());
    }
}
