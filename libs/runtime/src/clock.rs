//! Wall time, injectable so tests can move it: event times, budget periods and
//! timers read it through [`Clock`]. Safety durations (leases, timeouts) use
//! [`crate::boottime`] instead, which is never faked.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::ClockSection;

/// How often [`OffsetFileClock`] rereads its file at most.
const OFFSET_REREAD_INTERVAL: Duration = Duration::from_millis(100);

/// A source of wall time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to, for unit tests. Share it through an
/// `Arc` so the test keeps a handle while the code under test reads it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Sets the time, backwards too (to test clock steps).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the time by `by` (negative moves it back).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
        // A plain value: a panic while holding the lock cannot leave it torn.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// System time plus an offset in milliseconds read from a file (a signed
/// integer; a missing file means 0), so an integration test can move wall
/// time in every service process at once by rewriting the file.
#[derive(Debug)]
pub struct OffsetFileClock {
    path: PathBuf,
    cached: Mutex<Option<CachedOffset>>,
}

#[derive(Clone, Copy, Debug)]
struct CachedOffset {
    read_at: Instant,
    offset_ms: i64,
}

impl OffsetFileClock {
    /// A clock reading its offset from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cached: Mutex::new(None),
        }
    }

    /// The file the offset is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn offset_ms(&self) -> i64 {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        // Instant is monotonic, so moving the wall clock cannot stall rereads.
        let now = Instant::now();
        if let Some(entry) = *cached
            && now.duration_since(entry.read_at) < OFFSET_REREAD_INTERVAL
        {
            return entry.offset_ms;
        }
        let previous = cached.map(|entry| entry.offset_ms).unwrap_or(0);
        let offset_ms = match read_offset(&self.path) {
            Ok(offset) => offset,
            Err(err) => {
                // Keep the last good offset: time jumping back to the system
                // clock because of a bad write would be worse than a stale one.
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read clock offset file");
                previous
            }
        };
        *cached = Some(CachedOffset {
            read_at: now,
            offset_ms,
        });
        offset_ms
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms())
    }
}

fn read_offset(path: &Path) -> io::Result<i64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err),
    }
}

/// Writes `offset` (whole milliseconds) for [`OffsetFileClock`]s to pick up.
/// Atomic (temp file + rename), so a reader never sees a half-written number.
pub fn write_offset_file(path: &Path, offset: chrono::Duration) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "offset path has no file name")
    })?;
    let temp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&temp)?;
    writeln!(file, "{}", offset.num_milliseconds())?;
    drop(file);
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// The clock a service uses: the offset file's if configured, else system time.
pub fn clock_from_section(section: &ClockSection) -> Arc<dyn Clock> {
    match &section.offset_file {
        Some(path) => Arc::new(OffsetFileClock::new(path)),
        None => Arc::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn scratch_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stratavore-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.now(), start);
        clock.advance(chrono::Duration::hours(2));
        assert_eq!(shared.now(), start + chrono::Duration::hours(2));
        clock.set(start);
        assert_eq!(shared.now(), start);
    }

    #[test]
    fn a_missing_offset_file_means_system_time() {
        let clock = OffsetFileClock::new(scratch_file("missing"));
        let drift = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(drift < 1_000, "drift {drift} ms");
    }

    #[test]
    fn offset_file_moves_time_and_is_reread() {
        let path = scratch_file("offset");
        write_offset_file(&path, chrono::Duration::days(3)).unwrap();
        let clock = clock_from_section(&ClockSection {
            offset_file: Some(path.clone()),
        });
        let ahead = clock.now() - Utc::now();
        assert!(
            (ahead - chrono::Duration::days(3)).num_seconds().abs() < 1,
            "{ahead}"
        );

        write_offset_file(&path, chrono::Duration::days(-1)).unwrap();
        // Poll with a deadline: the reread happens within 100 ms.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let behind = Utc::now() - clock.now();
            if (behind - chrono::Duration::days(1)).num_seconds().abs() < 1 {
                break;
            }
            assert!(Instant::now() < deadline, "offset not reread");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_garbled_offset_keeps_the_last_good_one() {
        let path = scratch_file("garbled");
        write_offset_file(&path, chrono::Duration::hours(5)).unwrap();
        let clock = OffsetFileClock::new(&path);
        assert_eq!(clock.offset_ms(), 5 * 3_600_000);
        std::fs::write(&path, "not a number").unwrap();
        std::thread::sleep(OFFSET_REREAD_INTERVAL + Duration::from_millis(20));
        assert_eq!(clock.offset_ms(), 5 * 3_600_000);
    }

    #[test]
    fn without_an_offset_file_the_system_clock_is_used() {
        let clock = clock_from_section(&ClockSection::default());
        assert!(format!("{clock:?}").contains("SystemClock"));
    }
}
