//! Names for private instances (folders, node names) that do not collide
//! across the processes and threads of a parallel test run.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Calls made so far in this process, so two calls never share a name even
/// if the random part did.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// A short lowercase suffix, unique per process and call: the process id,
/// a counter and a random part (for a pid reused after a crash left
/// folders behind).
pub fn unique_suffix() -> String {
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one(Instant::now());
    format!(
        "{:x}-{call:x}-{:06x}",
        std::process::id(),
        random & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_differ_between_calls_and_are_lowercase() {
        let (a, b) = (unique_suffix(), unique_suffix());
        assert_ne!(a, b);
        assert_eq!(a, a.to_lowercase());
    }
}
