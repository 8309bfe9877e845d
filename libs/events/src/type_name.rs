//! Parsing of CloudEvents type names, so routing keys are derived from the
//! name rather than spelled twice.

use crate::catalogue::MessageKind;

/// A parsed `io.stratavore.…` type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeName {
    /// Event or command.
    pub kind: MessageKind,
    /// For events the aggregate (`runner`), for commands the command's
    /// dotted name without the version (`runner.launch`).
    pub subject_part: String,
    /// For events the event name (`started`); empty for commands.
    pub event: String,
    /// The `N` of `vN`.
    pub version: u32,
}

/// Why a type name is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name:?} is not a Stratavore type name ({reason})")]
pub struct TypeNameError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const PREFIX: &str = "io.stratavore.";

impl TypeName {
    /// Parse `io.stratavore.<aggregate>.<event>.v<N>` or
    /// `io.stratavore.command.<name…>.v<N>`.
    pub fn parse(name: &str) -> Result<Self, TypeNameError> {
        let err = |reason| TypeNameError {
            name: name.to_owned(),
            reason,
        };
        let rest = name.strip_prefix(PREFIX).ok_or(err("missing prefix"))?;
        let (body, version) = rest.rsplit_once('.').ok_or(err("missing version"))?;
        let version = version
            .strip_prefix('v')
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v >= 1)
            .ok_or(err("version must be v1, v2, …"))?;
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !body.split('.').all(valid_segment) {
            return Err(err("segments must be [a-z0-9_]+"));
        }
        if let Some(command) = body.strip_prefix("command.") {
            return Ok(Self {
                kind: MessageKind::Command,
                subject_part: command.to_owned(),
                event: String::new(),
                version,
            });
        }
        let (aggregate, event) = body
            .split_once('.')
            .ok_or(err("needs <aggregate>.<event>"))?;
        if event.contains('.') {
            return Err(err("an event name has exactly two segments"));
        }
        Ok(Self {
            kind: MessageKind::Event,
            subject_part: aggregate.to_owned(),
            event: event.to_owned(),
            version,
        })
    }

    /// The routing key of an event type: `<aggregate>.<event>`. Commands are
    /// routed by their target service, which the catalogue knows.
    pub fn event_routing_key(&self) -> Option<String> {
        (self.kind == MessageKind::Event).then(|| format!("{}.{}", self.subject_part, self.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_name_parses_into_aggregate_event_and_version() {
        let t = TypeName::parse("io.stratavore.runner.started.v1").unwrap();
        assert_eq!(t.kind, MessageKind::Event);
        assert_eq!(t.event_routing_key().as_deref(), Some("runner.started"));
        assert_eq!(t.version, 1);
    }

    #[test]
    fn a_command_name_keeps_its_dotted_name() {
        let t = TypeName::parse("io.stratavore.command.runner.launch.v2").unwrap();
        assert_eq!(t.kind, MessageKind::Command);
        assert_eq!(t.subject_part, "runner.launch");
        assert_eq!(t.version, 2);
        assert_eq!(t.event_routing_key(), None);
    }

    #[test]
    fn foreign_or_malformed_names_are_refused() {
        for bad in [
            "com.example.x.v1",
            "io.stratavore.runner.started",
            "io.stratavore.runner.started.v0",
            "io.stratavore.Runner.started.v1",
            "io.stratavore.runner.v1",
            "io.stratavore.a.b.c.v1",
        ] {
            assert!(TypeName::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
