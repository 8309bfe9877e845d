//! Failpoints for crash tests: a test names points in the environment
//! variable `STRATAVORE_FAILPOINTS` (comma-separated) and the process
//! aborts, as a SIGKILL would end it, the first time it reaches one. With
//! the variable unset (always, outside tests) a failpoint is one load of a
//! cached empty list.

use std::sync::OnceLock;

/// The environment variable naming the armed failpoints.
pub const FAILPOINTS_ENV: &str = "STRATAVORE_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(FAILPOINTS_ENV)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Abort the process here if the test armed `name`.
pub fn failpoint(name: &str) {
    if armed().iter().any(|a| a == name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
