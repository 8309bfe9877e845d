//! The services' schemas and login roles: one of each per service.

/// What a service owns in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDb {
    /// The service's name (also its binary's).
    pub service: &'static str,
    /// The schema it owns.
    pub schema: &'static str,
    /// The login role it connects with; it can touch only `schema`.
    pub role: &'static str,
    /// Whether the schema has a log and an inbox (all but the relay's).
    pub has_log: bool,
}

/// The relay's role: reads the other schemas' logs and writes its cursors.
pub const RELAY_ROLE: &str = "stratavore_relay";

/// Every service's schema and role.
pub const SERVICE_DBS: &[ServiceDb] = &[
    ServiceDb {
        service: "session-orchestrator",
        schema: "orchestrator",
        role: "stratavore_orchestrator",
        has_log: true,
    },
    ServiceDb {
        service: "runner-supervisor",
        schema: "supervisor",
        role: "stratavore_supervisor",
        has_log: true,
    },
    ServiceDb {
        service: "agent-registry",
        schema: "registry",
        role: "stratavore_registry",
        has_log: true,
    },
    ServiceDb {
        service: "api-gateway",
        schema: "gateway",
        role: "stratavore_gateway",
        has_log: true,
    },
    ServiceDb {
        service: "outbox-relay",
        schema: "relay",
        role: RELAY_ROLE,
        has_log: false,
    },
];

/// The entry of a service by name.
pub fn service_db(service: &str) -> Option<&'static ServiceDb> {
    SERVICE_DBS.iter().find(|s| s.service == service)
}

/// The schemas that have a log (the relay's sources by default).
pub fn log_schemas() -> impl Iterator<Item = &'static str> {
    SERVICE_DBS.iter().filter(|s| s.has_log).map(|s| s.schema)
}

/// Whether a name is a plain lower-case SQL identifier, safe to splice into
/// SQL text (schema names cannot be bind parameters).
pub fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_and_role_is_a_plain_identifier() {
        for s in SERVICE_DBS {
            assert!(
                is_plain_identifier(s.schema) && is_plain_identifier(s.role),
                "{s:?}"
            );
        }
        assert!(!is_plain_identifier("a;drop"));
        assert!(!is_plain_identifier("Upper"));
        assert!(!is_plain_identifier(""));
    }
}
