//! The message bus: the CloudEvents AMQP binding, the broker topology, and a
//! publisher with confirms, on RabbitMQ through lapin.

#![deny(missing_docs)]

pub mod amqp_binding;
pub mod asyncapi;
pub mod connection;
pub mod live;
pub mod publisher;
pub mod topology;

pub use amqp_binding::{AmqpMessage, BindingError, decode_event, encode_event};
pub use connection::{BrokerError, connect};
pub use live::{
    ListenError, LiveError, LiveListener, decode_live, listen_live, live_outgoing, live_routing_key,
};
pub use publisher::{Confirms, OutgoingMessage, PublishError, Publisher};
pub use topology::{QueueSpec, Topology, TopologyError};
