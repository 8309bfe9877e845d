//! Agents that cannot start, and directories the shim cannot use.

use std::fs;

use stratavore_agent_shim::runner_dir::{self, ExitReason};

use crate::harness::{PROMPTLY, ShimRun};

#[test]
fn a_missing_executable_is_recorded_as_spawn_failed() {
    let mut run = ShimRun::new("missing-exe");
    let mut spec = run.spec("");
    spec.argv = vec!["/nonexistent/agent".into(), "-p".into()];
    run.start(&spec);

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::SpawnFailed);
    assert_eq!((record.code, record.signal), (None, None));
    let detail = record.detail.expect("detail");
    assert!(detail.contains("/nonexistent/agent"), "{detail}");
    assert_eq!(runner_dir::read_agent_pid(&run.dir).expect("read"), None);
}

#[test]
fn an_unreadable_spec_is_recorded_as_spawn_failed() {
    let mut run = ShimRun::new("bad-spec");
    fs::write(run.dir.join(runner_dir::SPEC_FILE), "{\"argv\": 3}").expect("spec");
    run.start_shim();

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::SpawnFailed);
    let detail = record.detail.expect("detail");
    assert!(detail.contains("spec.json"), "{detail}");
}

#[test]
fn a_runner_dir_that_cannot_be_written_makes_the_shim_exit_2() {
    let mut run = ShimRun::new("no-dir");
    fs::remove_dir_all(&run.dir).expect("remove dir");
    run.start_shim();

    assert_eq!(run.wait_shim().code(), Some(2));
}
