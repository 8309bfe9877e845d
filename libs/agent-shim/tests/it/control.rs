//! Commands through the control file.

use std::time::{Duration, Instant};

use stratavore_agent_shim::runner_dir::{ExitReason, Want};

use crate::harness::{PROMPTLY, ShimRun, is_gone, parse_pids, state_of, wait_until};

fn all_in_state(pids: &[i32], stopped: bool) -> bool {
    pids.iter()
        .all(|pid| state_of(*pid).is_some_and(|state| (state == 'T') == stopped))
}

#[test]
fn pause_freezes_the_whole_tree_resume_thaws_it_and_an_older_rev_is_ignored() {
    let mut run = ShimRun::new("pause");
    let spec = run.spec(
        "sh -c 'echo $$; exec sleep 1000' &
         setsid sh -c 'echo $$; exec sleep 1000' &
         wait",
    );
    run.start(&spec);
    let mut tree = parse_pids(&run.stdout_lines(2));
    tree.push(run.agent_pid());

    run.control(1, Want::Paused);
    wait_until(PROMPTLY, "every process stopped", || {
        all_in_state(&tree, true)
    });

    run.control(2, Want::Running);
    wait_until(PROMPTLY, "every process running", || {
        all_in_state(&tree, false)
    });

    // No acknowledgement exists for an ignored command, so watch for a
    // while (several shim ticks) that nothing freezes.
    run.control(1, Want::Paused);
    let watch_until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < watch_until {
        assert!(all_in_state(&tree, false), "an older rev was applied");
        std::thread::sleep(Duration::from_millis(20));
    }

    run.control(3, Want::Killed);
    let record = run.wait_exit(PROMPTLY);
    assert_eq!(record.reason, ExitReason::KilledOnRequest);
}

#[test]
fn stop_kills_an_agent_that_ignores_sigterm_once_the_grace_is_over() {
    let mut run = ShimRun::new("stop-ignored");
    let spec = run.spec("trap '' TERM; echo ready; sleep 1000");
    run.start(&spec);
    run.stdout_lines(1);

    let asked = Instant::now();
    run.control(1, Want::Stopped);
    let record = run.wait_exit(PROMPTLY);

    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "killed before the 300 ms grace: {:?}",
        asked.elapsed()
    );
    assert_eq!(record.reason, ExitReason::StoppedOnRequest);
    assert_eq!(record.signal, Some(9));
}

#[test]
fn stop_ends_a_paused_agent_that_honours_sigterm_without_waiting_for_the_grace() {
    let mut run = ShimRun::new("stop-honoured");
    let mut spec = run.spec("echo ready; sleep 1000");
    spec.term_grace_ms = 60_000;
    run.start(&spec);
    run.stdout_lines(1);
    let agent = run.agent_pid();
    run.control(1, Want::Paused);
    wait_until(PROMPTLY, "the agent stopped", || {
        state_of(agent) == Some('T')
    });

    run.control(2, Want::Stopped);
    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::StoppedOnRequest);
    assert_eq!(record.signal, Some(15));
}

#[test]
fn kill_ends_the_tree_at_once() {
    let mut run = ShimRun::new("kill");
    let spec = run.spec("trap '' TERM; sh -c 'echo $$; exec sleep 1000' & wait");
    run.start(&spec);
    let grandchild = parse_pids(&run.stdout_lines(1))[0];

    let asked = Instant::now();
    run.control(1, Want::Killed);
    let record = run.wait_exit(PROMPTLY);

    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(record.reason, ExitReason::KilledOnRequest);
    assert_eq!(record.signal, Some(9));
    assert!(is_gone(grandchild));
}
