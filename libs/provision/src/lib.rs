//! Provisioning of the infrastructure Stratavore runs on: an embedded
//! PostgreSQL with pgvector, the RabbitMQ broker, private instances of
//! both for tests that kill or restart them, the real agent CLIs at
//! pinned versions, and the sentence-embedding model.
#![deny(missing_docs)]

pub mod agent_clis;
pub mod embedding_model;
pub mod external_command;
mod local_files;
pub mod loopback;
pub mod os_user;
pub mod pip_wheel;
pub mod postgres_install;
pub mod postgres_kill;
pub mod postgres_private;
pub mod postgres_server;
pub mod rabbitmq_private_node;
pub mod rabbitmq_server;
pub mod stack;
pub mod unique_name;
