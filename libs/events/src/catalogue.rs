//! The catalogue of every message type: routing keys, schema URNs and the
//! JSON Schema of each payload, gathered from every message family.

use crate::{Message, budget, inbox, process, project, runner};

/// Whether a message records a fact or asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A fact that happened; published on the events exchange.
    Event,
    /// A request to a service; published on the commands exchange.
    Command,
}

impl MessageKind {
    /// The value stored in the log's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Command => "command",
        }
    }

    /// Parse the log's `kind` column.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "event" => Some(Self::Event),
            "command" => Some(Self::Command),
            _ => None,
        }
    }
}

/// What the catalogue knows of one type.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    /// The CloudEvents `type`.
    pub type_name: &'static str,
    /// Event or command.
    pub kind: MessageKind,
    /// The routing key it is published with.
    pub routing_key: &'static str,
    /// The JSON Schema of its payload.
    pub schema: fn() -> schemars::Schema,
}

impl TypeInfo {
    /// The `dataschema` URI of this type.
    pub fn schema_urn(&self) -> String {
        schema_urn(self.type_name)
    }
}

/// The `dataschema` URI naming a type's schema (`urn:stratavore:schema:<type>`).
pub fn schema_urn(type_name: &str) -> String {
    format!("urn:stratavore:schema:{type_name}")
}

/// Every message family, in one list.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalogue;

impl Catalogue {
    /// Every known type, events and commands.
    pub fn all() -> impl Iterator<Item = &'static TypeInfo> {
        [
            project::ProjectCommand::types(),
            project::ProjectEvent::types(),
            inbox::InboxEvent::types(),
            runner::RunnerCommand::types(),
            runner::RunnerEvent::types(),
            process::ProcessCommand::types(),
            process::ProcessEvent::types(),
            process::NodeEvent::types(),
            process::NodeCommand::types(),
            process::LiveMessage::types(),
            budget::BudgetCommand::types(),
            budget::BudgetEvent::types(),
        ]
        .into_iter()
        .flatten()
    }

    /// The entry for one type name.
    pub fn lookup(type_name: &str) -> Option<&'static TypeInfo> {
        Self::all().find(|t| t.type_name == type_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TypeName;
    use std::collections::HashSet;

    #[test]
    fn every_type_name_is_well_formed_unique_and_of_its_declared_kind() {
        let mut seen = HashSet::new();
        for t in Catalogue::all() {
            let parsed = TypeName::parse(t.type_name).unwrap();
            assert_eq!(parsed.kind, t.kind, "{}", t.type_name);
            assert!(seen.insert(t.type_name), "{} declared twice", t.type_name);
        }
    }

    #[test]
    fn event_routing_keys_are_aggregate_dot_event() {
        for t in Catalogue::all().filter(|t| t.kind == MessageKind::Event) {
            let parsed = TypeName::parse(t.type_name).unwrap();
            assert_eq!(Some(t.routing_key.to_owned()), parsed.event_routing_key());
        }
    }

    #[test]
    fn command_routing_keys_name_their_service_then_the_command() {
        const SERVICES: &[&str] = &[
            "session-orchestrator",
            "runner-supervisor",
            "agent-registry",
            "api-gateway",
        ];
        for t in Catalogue::all().filter(|t| t.kind == MessageKind::Command) {
            let parsed = TypeName::parse(t.type_name).unwrap();
            let (service, command) = t.routing_key.split_once('.').unwrap();
            assert!(SERVICES.contains(&service), "{}", t.routing_key);
            assert!(
                command.starts_with(&parsed.subject_part),
                "{}",
                t.routing_key
            );
        }
    }
}
