//! What every installer into the local folder does alike: install once
//! however many processes try at the same time, and remove what may or may
//! not be there.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Runs `install` unless `is_current()` says the install is there: checked
/// first without a lock (the common case, instant), then again under an
/// exclusive lock on `lock_path` (its folder made if needed), since
/// whoever held the lock before may have installed it meanwhile. Returns
/// whether `install` ran. `io_error` names a failure of the folder or the
/// lock. Blocking: from async code, call it in `spawn_blocking`.
pub(crate) fn install_once<E>(
    lock_path: &Path,
    is_current: impl Fn() -> bool,
    install: impl FnOnce() -> Result<(), E>,
    io_error: impl Fn(&'static str, &Path, io::Error) -> E,
) -> Result<bool, E> {
    if is_current() {
        return Ok(false);
    }
    if let Some(dir) = lock_path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    }
    let lock = File::create(lock_path).map_err(|e| io_error("create", lock_path, e))?;
    lock.lock().map_err(|e| io_error("lock", lock_path, e))?;
    if is_current() {
        return Ok(false);
    }
    install()?;
    Ok(true)
}

/// `result`, with "it was not there" counted as success.
pub(crate) fn missing_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn installs_only_when_not_current_and_makes_the_lock_folder() {
        let dir = std::env::temp_dir().join(format!("install-once-{}", std::process::id()));
        let lock = dir.join("sub/.install.lock");
        let ran = Cell::new(0);
        let bump = || -> io::Result<()> {
            ran.set(ran.get() + 1);
            Ok(())
        };
        let io = |_: &'static str, _: &Path, e: io::Error| e;
        let did = install_once(&lock, || false, bump, io).unwrap();
        assert!(did);
        assert!(lock.is_file());
        let did = install_once(&lock, || true, bump, io).unwrap();
        assert!(!did);
        assert_eq!(ran.get(), 1);
        // Became current while waiting for the lock: not installed again.
        let checks = Cell::new(0);
        let current_on_second_look = || {
            checks.set(checks.get() + 1);
            checks.get() > 1
        };
        let did = install_once(&lock, current_on_second_look, bump, io).unwrap();
        assert!(!did);
        assert_eq!(ran.get(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_path_is_fine_and_other_errors_are_not() {
        let gone = std::env::temp_dir().join("missing-is-fine-nothing-here");
        missing_is_fine(fs::remove_dir_all(&gone)).unwrap();
        missing_is_fine(fs::remove_file(&gone)).unwrap();
        let denied = Err(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(missing_is_fine(denied).is_err());
    }
}
