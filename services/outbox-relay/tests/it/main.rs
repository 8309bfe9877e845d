//! The outbox relay against real Postgres (with pgvector) and RabbitMQ.
//! Tests whose names start with `serial_` kill processes or restart
//! servers; `make test` runs them after the parallel suite, one at a time.

mod support;

mod append_errors;
mod broker_cut;
mod concurrent_appends;
mod failover;
mod kill_relay;
mod lease_check;
mod postgres_restart;
mod subscriber;
mod unroutable;
