//! Project paths: absolute, normalised (no `.`, no `..`, no repeated or
//! trailing slashes), and inside one of the configured allowed roots. This is
//! a lexical check: nodes check the real path (symlinks resolved) again
//! right before they spawn anything there.

use std::path::{Component, Path, PathBuf};

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRejection {
    /// Not absolute.
    #[error("the path must be absolute")]
    NotAbsolute,
    /// Contains a NUL byte or is empty.
    #[error("the path is empty or contains a NUL byte")]
    Malformed,
    /// Normalised, it lies outside every allowed root.
    #[error("{normalised} is not inside an allowed project root ({roots})")]
    OutsideRoots {
        /// The path after normalisation.
        normalised: String,
        /// The allowed roots.
        roots: String,
    },
}

/// Resolve `.` and `..` lexically; `..` at the root stays at the root, as
/// the kernel does.
pub fn normalise(path: &str) -> Result<PathBuf, PathRejection> {
    if path.is_empty() || path.contains('\0') {
        return Err(PathRejection::Malformed);
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(PathRejection::NotAbsolute);
    }
    let mut out = PathBuf::from("/");
    for component in p.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
        }
    }
    Ok(out)
}

/// The normalised path, when it lies inside one of `roots` (themselves
/// normalised first).
pub fn inside_allowed_roots(path: &str, roots: &[PathBuf]) -> Result<PathBuf, PathRejection> {
    let normalised = normalise(path)?;
    let allowed = roots.iter().any(|root| {
        root.to_str()
            .and_then(|r| normalise(r).ok())
            .is_some_and(|root| normalised.starts_with(&root))
    });
    if allowed {
        Ok(normalised)
    } else {
        Err(PathRejection::OutsideRoots {
            normalised: normalised.display().to_string(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/srv/projects"),
            PathBuf::from("/home/dev/code/"),
        ]
    }

    #[test]
    fn dots_and_slashes_are_normalised() {
        assert_eq!(
            normalise("/srv//projects/./web/").unwrap(),
            PathBuf::from("/srv/projects/web")
        );
        assert_eq!(
            normalise("/srv/projects/a/../b").unwrap(),
            PathBuf::from("/srv/projects/b")
        );
        assert_eq!(normalise("/../..").unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn a_path_inside_a_root_is_accepted_normalised() {
        assert_eq!(
            inside_allowed_roots("/srv/projects/web/./", &roots()).unwrap(),
            PathBuf::from("/srv/projects/web")
        );
        assert!(inside_allowed_roots("/home/dev/code/x", &roots()).is_ok());
    }

    #[test]
    fn a_dot_dot_escape_is_refused() {
        assert!(matches!(
            inside_allowed_roots("/srv/projects/../../etc", &roots()),
            Err(PathRejection::OutsideRoots { .. })
        ));
    }

    #[test]
    fn a_sibling_with_a_common_prefix_is_not_inside() {
        assert!(inside_allowed_roots("/srv/projects-evil/x", &roots()).is_err());
    }

    #[test]
    fn relative_and_malformed_paths_are_refused() {
        assert_eq!(
            inside_allowed_roots("srv/projects", &roots()),
            Err(PathRejection::NotAbsolute)
        );
        assert_eq!(
            inside_allowed_roots("", &roots()),
            Err(PathRejection::Malformed)
        );
        assert_eq!(
            inside_allowed_roots("/srv/projects/a\0b", &roots()),
            Err(PathRejection::Malformed)
        );
    }
}
