//! The lease: a CLOCK_BOOTTIME deadline that only the supervisor extends.

use std::time::{Duration, Instant};

use stratavore_agent_shim::runner_dir::{ExitReason, ExitRecord, Want};

use crate::harness::{PROMPTLY, ShimRun, is_gone, parse_pids};

const TREE: &str = "setsid sh -c 'echo $$; exec sleep 1000' & sleep 1000";

#[test]
fn a_lease_that_runs_out_kills_the_whole_tree() {
    let mut run = ShimRun::new("lease-runs-out");
    run.lease_in(Duration::from_millis(500));
    run.start(&run.spec(TREE));
    let grandchild = parse_pids(&run.stdout_lines(1))[0];

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::LeaseExpired);
    assert_eq!(record.signal, Some(9));
    assert!(is_gone(grandchild));
}

#[test]
fn a_lease_already_past_kills_at_once() {
    let mut run = ShimRun::new("lease-past");
    stratavore_agent_shim::runner_dir::write_lease(&run.dir, 1).expect("lease");
    run.start(&run.spec(TREE));

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::LeaseExpired);
}

#[test]
fn without_any_lease_file_the_tree_dies_after_the_lease_grace() {
    let mut run = ShimRun::new("lease-missing");
    let mut spec = run.spec(TREE);
    spec.lease_grace_ms = 300;
    spec.write(&run.dir).expect("spec");
    run.start_shim();

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::LeaseExpired);
}

#[test]
fn a_renewed_lease_keeps_the_agent_running_past_its_first_deadline() {
    let mut run = ShimRun::new("lease-renewed");
    run.lease_in(Duration::from_millis(300));
    run.start(&run.spec(TREE));

    let renew_until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < renew_until {
        run.lease_in(Duration::from_millis(300));
        assert_eq!(ExitRecord::read(&run.dir).expect("read"), None);
        std::thread::sleep(Duration::from_millis(50));
    }

    run.control(1, Want::Killed);
    assert_eq!(run.wait_exit(PROMPTLY).reason, ExitReason::KilledOnRequest);
}
