//! Tests of the whole stack: provisioning, roles and topology.

mod provisioning;
mod roles;
