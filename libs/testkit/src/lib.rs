//! The one test kit of the workspace (DESIGN.md section 7): a database per
//! test created from a migrated template, a broker prefix per test, private
//! Postgres and RabbitMQ instances for tests that restart them, a loopback
//! TCP proxy that delays and cuts connections, services as real processes,
//! the installed agent CLIs and embedding model, and polling with a
//! deadline instead of sleeps.

#![deny(missing_docs)]

pub mod agent_clis;
pub mod broker;
pub mod database;
pub mod env;
pub mod paths;
pub mod private;
pub mod process;
pub mod tcp_proxy;
pub mod wait;

pub use agent_clis::agent_cli;
pub use broker::{Subscriber, TestBroker};
pub use database::TestDatabase;
pub use env::TestEnv;
pub use paths::{embedding_model_dir, scratch_dir};
pub use private::{private_postgres, private_rabbitmq};
pub use process::ServiceProcess;
pub use tcp_proxy::{CutMode, TcpProxy};
pub use wait::wait_until;
