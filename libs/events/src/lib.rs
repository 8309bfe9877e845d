//! The messages of Stratavore: the envelope every event and command travels
//! in, and the catalogue of every event and command type with its routing
//! key and JSON Schema.
//!
//! A type is named `io.stratavore.<aggregate>.<event>.v<N>` for events and
//! `io.stratavore.command.<name>.v<N>` for commands (DESIGN.md section 2). The
//! payload of each type is a Rust struct; the enums in [`catalogue`] map each
//! variant to its type name and routing key in one place, so nothing else in
//! the workspace spells a type name by hand.

#![deny(missing_docs)]

pub mod budget;
pub mod catalogue;
pub mod envelope;
pub mod inbox;
mod message_macro;
pub mod process;
pub mod project;
pub mod runner;
pub mod schema;
pub mod type_name;

pub use catalogue::{Catalogue, MessageKind, TypeInfo};
pub use envelope::{Envelope, EnvelopeError};
pub use type_name::TypeName;

/// Why a payload could not be turned into a typed message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The type name is not one this catalogue (or its upcasters) knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The payload does not fit the type's schema.
    #[error("payload of {type_name} does not match its schema: {source}")]
    Payload {
        /// The type whose payload failed.
        type_name: String,
        /// What serde found wrong, with the field path.
        #[source]
        source: serde_json::Error,
    },
}

/// A typed message family (one aggregate's events, or one service's
/// commands): the trait the catalogue macro implements for each enum.
pub trait Message: Sized {
    /// Whether these are events or commands.
    const KIND: MessageKind;
    /// The CloudEvents `type` of this value.
    fn type_name(&self) -> &'static str;
    /// The AMQP routing key this value is published with.
    fn routing_key(&self) -> String;
    /// The payload (CloudEvents `data`) as JSON.
    fn to_data(&self) -> serde_json::Value;
    /// Parse a payload of the given type, upcasting older versions.
    fn from_data(type_name: &str, data: serde_json::Value) -> Result<Self, DecodeError>;
    /// Every type of this family, for routing and schema generation.
    fn types() -> &'static [TypeInfo];
    /// Whether `type_name` is one of this family's types (so a payload of
    /// it is worth parsing as this family).
    fn has_type(type_name: &str) -> bool {
        Self::types().iter().any(|t| t.type_name == type_name)
    }
}
