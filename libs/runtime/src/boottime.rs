//! Boot time: a monotonic clock that keeps counting while the machine is
//! suspended and is never faked. Every duration that guards safety (leases,
//! TTLs, timeouts, backoff) is measured on it, so moving wall time in a test,
//! or the machine's clock stepping, cannot expire or extend them.

use std::time::Duration;

/// A point on `CLOCK_BOOTTIME`, in nanoseconds since boot.
///
/// Meaningful only on the machine that took it and until its next boot, which
/// is why it is plain nanoseconds: a deadline can be written to a file that a
/// restarted process on the same machine reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(u64);

impl BootInstant {
    /// The current boot time.
    pub fn now() -> Self {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The kernel never returns negative boot time; clamping keeps this
        // total without a panic path.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        Self(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// Time since `self`; zero if `self` is in the future.
    pub fn elapsed(&self) -> Duration {
        Self::now().saturating_duration_since(*self)
    }

    /// `self + by`, or `None` on overflow (about 584 years after boot).
    pub fn checked_add(&self, by: Duration) -> Option<Self> {
        let by = u64::try_from(by.as_nanos()).ok()?;
        self.0.checked_add(by).map(Self)
    }

    /// `self - earlier`, or zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(&self, earlier: BootInstant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds since boot, for storing a deadline as a number.
    pub fn as_nanos(&self) -> u64 {
        self.0
    }

    /// The instant `nanos` nanoseconds after boot, as stored by [`as_nanos`](Self::as_nanos).
    pub fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward() {
        let start = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        let later = BootInstant::now();
        assert!(later > start);
        assert!(later.saturating_duration_since(start) >= Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn durations_saturate_at_zero() {
        let early = BootInstant::from_nanos(100);
        let late = BootInstant::from_nanos(250);
        assert_eq!(
            late.saturating_duration_since(early),
            Duration::from_nanos(150)
        );
        assert_eq!(early.saturating_duration_since(late), Duration::ZERO);
        let future = BootInstant::now()
            .checked_add(Duration::from_secs(3600))
            .unwrap();
        assert_eq!(future.elapsed(), Duration::ZERO);
    }

    #[test]
    fn checked_add_detects_overflow() {
        let near_end = BootInstant::from_nanos(u64::MAX - 10);
        assert_eq!(near_end.checked_add(Duration::from_nanos(11)), None);
        assert_eq!(
            near_end.checked_add(Duration::from_nanos(10)),
            Some(BootInstant::from_nanos(u64::MAX))
        );
        assert_eq!(BootInstant::from_nanos(0).checked_add(Duration::MAX), None);
    }

    #[test]
    fn nanos_round_trip_for_deadline_files() {
        let now = BootInstant::now();
        assert_eq!(BootInstant::from_nanos(now.as_nanos()), now);
        assert!(now.as_nanos() > 0);
    }
}
