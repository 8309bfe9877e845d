//! The checks a budget's definition must pass, the same at the gateway
//! (which answers at once, 422 naming the field) and at the orchestrator
//! (the authority, which also knows whether the target exists).

use stratavore_events::budget::BudgetScope;
use stratavore_events::project::validate_project_name;

/// One field of a budget definition that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The input field at fault.
    pub field: &'static str,
    /// A sentence for people.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

/// Check the scope's target: none for `global`, a project name, a profile
/// name, or a runner id.
pub fn check_target(scope: BudgetScope, target: Option<&str>) -> Result<(), InvalidField> {
    match (scope, target) {
        (BudgetScope::Global, None) => Ok(()),
        (BudgetScope::Global, Some(_)) => Err(invalid("target", "a global budget has no target")),
        (_, None) => Err(invalid(
            "target",
            format!("a {} budget names its {}", scope.as_str(), scope.as_str()),
        )),
        (BudgetScope::Project, Some(name)) => validate_project_name(name)
            .map_err(|why| invalid("target", format!("the project name {why}"))),
        (BudgetScope::Profile, Some(name)) => {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    "target",
                    "a profile name is 1-64 characters of a-z, A-Z, 0-9, '-' and '_'",
                ))
            }
        }
        (BudgetScope::Runner, Some(id)) => uuid::Uuid::parse_str(id)
            .map(|_| ())
            .map_err(|_| invalid("target", "a runner budget's target is the runner's id")),
    }
}

/// Check limits (at least one; tokens above zero; USD a finite amount above
/// zero) and the warning threshold (1-100 percent).
pub fn check_limits(
    limit_tokens: Option<u64>,
    limit_usd: Option<f64>,
    warn_percent: u8,
) -> Result<(), InvalidField> {
    if limit_tokens.is_none() && limit_usd.is_none() {
        return Err(invalid(
            "limit_tokens",
            "set limit_tokens, limit_usd or both",
        ));
    }
    if limit_tokens == Some(0) {
        return Err(invalid("limit_tokens", "must be at least 1"));
    }
    if let Some(usd) = limit_usd
        && !(usd.is_finite() && usd > 0.0)
    {
        return Err(invalid("limit_usd", "must be a finite amount above 0"));
    }
    if !(1..=100).contains(&warn_percent) {
        return Err(invalid("warn_percent", "must be from 1 to 100"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_takes_its_own_kind_of_target() {
        assert!(check_target(BudgetScope::Global, None).is_ok());
        assert!(check_target(BudgetScope::Project, Some("web")).is_ok());
        assert!(check_target(BudgetScope::Profile, Some("claude-code")).is_ok());
        let id = uuid::Uuid::nil().to_string();
        assert!(check_target(BudgetScope::Runner, Some(&id)).is_ok());
        for (scope, target) in [
            (BudgetScope::Global, Some("web")),
            (BudgetScope::Project, None),
            (BudgetScope::Project, Some("Web!")),
            (BudgetScope::Profile, Some("")),
            (BudgetScope::Runner, Some("not-a-uuid")),
        ] {
            assert_eq!(check_target(scope, target).unwrap_err().field, "target");
        }
    }

    #[test]
    fn limits_name_the_field_at_fault() {
        assert!(check_limits(Some(1000), None, 80).is_ok());
        assert!(check_limits(None, Some(0.5), 100).is_ok());
        let field = |t, u, w| check_limits(t, u, w).unwrap_err().field;
        assert_eq!(field(None, None, 80), "limit_tokens");
        assert_eq!(field(Some(0), None, 80), "limit_tokens");
        assert_eq!(field(None, Some(-1.0), 80), "limit_usd");
        assert_eq!(field(None, Some(f64::NAN), 80), "limit_usd");
        assert_eq!(field(Some(5), None, 0), "warn_percent");
        assert_eq!(field(Some(5), None, 101), "warn_percent");
    }
}
