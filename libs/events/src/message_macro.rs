//! The one macro that declares a message family: each variant's payload,
//! type name and routing key side by side, so the mapping lives in one place.

/// Declares an enum of messages and implements [`crate::Message`] for it.
///
/// ```ignore
/// message_family! {
///     /// Commands for projects.
///     pub enum ProjectCommand: Command {
///         /// Create a project.
///         Create(CreateProject) => "io.stratavore.command.project.create.v1", "session-orchestrator.project.create";
///     }
/// }
/// ```
macro_rules! message_family {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $kind:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident($payload:ty) => $type_name:literal, $routing:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant($payload), )*
        }

        impl $crate::Message for $name {
            const KIND: $crate::MessageKind = $crate::MessageKind::$kind;

            fn type_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $type_name, )* }
            }

            fn routing_key(&self) -> String {
                match self { $( Self::$variant(_) => $routing.to_owned(), )* }
            }

            fn to_data(&self) -> serde_json::Value {
                match self {
                    $( Self::$variant(payload) => serde_json::to_value(payload)
                        // Payloads are plain derived structs with string keys:
                        // serialising them to a Value cannot fail.
                        .expect("a derived payload always serialises to JSON"), )*
                }
            }

            fn from_data(type_name: &str, data: serde_json::Value) -> Result<Self, $crate::DecodeError> {
                match type_name {
                    $( $type_name => serde_json::from_value::<$payload>(data)
                        .map(Self::$variant)
                        .map_err(|source| $crate::DecodeError::Payload { type_name: type_name.to_owned(), source }), )*
                    other => Err($crate::DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn types() -> &'static [$crate::TypeInfo] {
                const TYPES: &[$crate::TypeInfo] = &[
                    $( $crate::TypeInfo {
                        type_name: $type_name,
                        kind: $crate::MessageKind::$kind,
                        routing_key: $routing,
                        schema: || schemars::schema_for!($payload),
                    }, )*
                ];
                TYPES
            }
        }
    };
}

pub(crate) use message_family;
