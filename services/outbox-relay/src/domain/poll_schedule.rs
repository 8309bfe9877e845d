//! Adaptive polling: again at once after a full batch, soon after a partial
//! one, and backing off towards a small ceiling while the log is idle (an
//! index scan above the cursor costs next to nothing, so the ceiling stays a
//! few milliseconds).

use std::time::Duration;

/// The polling bounds, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    /// Rows per batch.
    pub batch_size: usize,
    /// The first wait after the log runs dry.
    pub idle_min: Duration,
    /// The longest wait while idle.
    pub idle_max: Duration,
}

impl PollSchedule {
    /// How long to wait before the next read, given the previous wait and how
    /// many rows the last read returned.
    pub fn next_delay(&self, previous: Duration, rows: usize) -> Duration {
        if rows >= self.batch_size {
            Duration::ZERO
        } else if rows > 0 {
            self.idle_min
        } else {
            (previous * 2).clamp(self.idle_min, self.idle_max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: PollSchedule = PollSchedule {
        batch_size: 100,
        idle_min: Duration::from_millis(1),
        idle_max: Duration::from_millis(8),
    };

    #[test]
    fn a_full_batch_polls_again_at_once() {
        assert_eq!(S.next_delay(Duration::from_millis(8), 100), Duration::ZERO);
    }

    #[test]
    fn a_partial_batch_polls_again_after_the_minimum() {
        assert_eq!(S.next_delay(Duration::from_millis(8), 3), S.idle_min);
    }

    #[test]
    fn an_idle_log_backs_off_up_to_the_ceiling() {
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..6 {
            d = S.next_delay(d, 0);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 8, 8]);
    }
}
