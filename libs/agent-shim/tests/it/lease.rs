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

#[test]
fn a_lease_record_without_its_check_extends_nothing() {
    let mut run = ShimRun::new("lease-unchecked");
    run.lease_in(Duration::from_millis(2_000));
    let started = Instant::now();
    run.start(&run.spec(TREE));
    let grandchild = parse_pids(&run.stdout_lines(1))[0];
    // More than one of the shim's 200 ms ticks: it has read the good lease
    // (a shim that never read one falls back on the spec's lease grace).
    std::thread::sleep(Duration::from_millis(300));

    // A far deadline written as a bare number, and then as a record whose
    // check belongs to another deadline: what a torn write could leave.
    // Each stays for more than one tick.
    let far = stratavore_agent_shim::runner_dir::boottime_ns() + 3_600_000_000_000;
    let lease = run.dir.join(stratavore_agent_shim::runner_dir::LEASE_FILE);
    std::fs::write(&lease, format!("{far}\n")).expect("bare number");
    std::thread::sleep(Duration::from_millis(450));
    std::fs::write(&lease, format!("{far:020} {:016x}\n", far ^ 1)).expect("wrong check");
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "the garbled leases were written after the first deadline: the test proves nothing"
    );
    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::LeaseExpired);
    assert!(is_gone(grandchild));
}
