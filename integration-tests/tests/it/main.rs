//! Tests of the whole stack: provisioning, roles and topology, and the
//! project flow across gateway, relay and orchestrator.

mod budgets_api;
mod consumer_crashes;
mod consumer_faults;
mod drain_batches;
mod inbox_index;
mod infrastructure_faults;
mod launch_saga;
mod liveness_faults;
mod multi_node;
mod node_faults;
mod node_liveness;
mod nodes_api;
mod progress_batches;
mod projects_api;
mod provisioning;
mod quota_waits;
mod real_agents;
mod rebuild;
mod rebuild_lock;
mod replayed_agents;
mod roles;
mod runner_e2e;
mod runner_logs;
mod runners_api;
mod search_api;
mod search_index;
mod session_ids;
mod sessions_api;
mod spending_runs;
mod supervisor_e2e;
mod supervisor_faults;
mod supervisor_recording;
mod support;
