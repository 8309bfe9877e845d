//! Given a runner, when its node is declared lost, then it is relaunched
//! or lost.

use super::tests::{DEADLINE, POLICY, given, id, node, offered, running, then};
use super::*;
use stratavore_events::runner::{AttemptRelaunched, RunnerEnded};

fn lost_fact(session_node: Option<&str>, shared_storage: bool) -> Fact {
    let (n, inc) = node();
    Fact::NodeLost {
        node: n,
        incarnation: inc,
        session_node: session_node.map(str::to_owned),
        shared_storage,
        fresh_session_id: "s-fresh".into(),
        launch_deadline_ms: DEADLINE,
    }
}

fn bind(h: &mut Vec<RunnerEvent>) {
    let d = decide_fact(
        &given(h),
        Fact::SessionBound {
            attempt: 1,
            session_id: "s-1".into(),
        },
        0,
        POLICY,
    );
    then(h, &d);
}

fn relaunched(attempt: u32) -> RunnerEvent {
    RunnerEvent::Relaunched(AttemptRelaunched {
        runner_id: id(),
        attempt,
        node: node().0,
        reason: "node_lost".into(),
    })
}

fn lost(attempt: u32) -> RunnerEvent {
    RunnerEvent::Lost(RunnerEnded {
        runner_id: id(),
        attempt,
        exit_code: None,
        reason: "node_lost".into(),
    })
}

#[test]
fn a_running_runner_whose_session_is_not_bound_is_relaunched_afresh_as_the_next_attempt() {
    let mut h = running(0);
    let d = decide_fact(&given(&h), lost_fact(None, false), 0, POLICY);
    assert_eq!(d.events, vec![relaunched(1), offered(2, false, "s-fresh")]);
    assert_eq!(
        d.effects,
        vec![Effect::Offer {
            attempt: 2,
            resume: false
        }]
    );
    let r = then(&mut h, &d);
    assert_eq!(
        (r.state, r.attempt, r.placement),
        (RunnerState::Starting, 2, None)
    );
    assert_eq!(r.restarts, 0, "a relaunch is not the runner's failure");
    assert_eq!(r.last_error.as_deref(), Some("node_lost"));
}

#[test]
fn a_runner_whose_bound_session_lives_on_the_lost_node_is_lost_and_not_restarted_afresh() {
    for session_node in [Some("node-a"), None] {
        let mut h = running(3);
        bind(&mut h);
        let d = decide_fact(&given(&h), lost_fact(session_node, false), 0, POLICY);
        assert_eq!(d.events, vec![lost(1)], "{session_node:?}");
        assert!(d.effects.is_empty());
        assert_eq!(then(&mut h, &d).state, RunnerState::Lost);
    }
}

#[test]
fn on_shared_storage_a_bound_session_is_relaunched_and_resumed() {
    let mut h = running(0);
    bind(&mut h);
    let d = decide_fact(&given(&h), lost_fact(Some("node-a"), true), 0, POLICY);
    assert_eq!(d.events, vec![relaunched(1), offered(2, true, "s-1")]);
    assert_eq!(
        d.effects,
        vec![Effect::Offer {
            attempt: 2,
            resume: true
        }]
    );
}

#[test]
fn a_claimed_attempt_not_yet_started_and_a_paused_one_are_relaunched_too() {
    let mut h = vec![super::tests::approved(0), offered(1, false, "s-1")];
    let (n, inc) = node();
    let d = decide_fact(
        &given(&h),
        Fact::Claimed {
            attempt: 1,
            node: n,
            incarnation: inc,
        },
        0,
        POLICY,
    );
    then(&mut h, &d);
    let d = decide_fact(&given(&h), lost_fact(None, false), 0, POLICY);
    assert_eq!(d.events, vec![relaunched(1), offered(2, false, "s-fresh")]);

    let mut h = running(0);
    let d = decide_control(&given(&h), Want::Paused).unwrap();
    then(&mut h, &d);
    let d = decide_fact(&given(&h), lost_fact(None, false), 0, POLICY);
    let r = then(&mut h, &d);
    assert_eq!((r.state, r.pause), (RunnerState::Starting, None));
}

#[test]
fn a_runner_being_stopped_is_lost_with_its_node_not_relaunched() {
    let mut h = running(0);
    let d = decide_control(&given(&h), Want::Stopped).unwrap();
    then(&mut h, &d);
    let d = decide_fact(&given(&h), lost_fact(None, false), 0, POLICY);
    assert_eq!(d.events, vec![lost(1)]);
}

#[test]
fn a_runner_on_another_node_or_incarnation_or_already_ended_is_left_alone() {
    let h = running(0);
    let r = given(&h);
    for (n, inc) in [
        ("node-b".to_owned(), node().1),
        (node().0, Uuid::from_u128(8)),
    ] {
        let fact = Fact::NodeLost {
            node: n,
            incarnation: inc,
            session_node: None,
            shared_storage: false,
            fresh_session_id: "x".into(),
            launch_deadline_ms: DEADLINE,
        };
        assert_eq!(decide_fact(&r, fact, 0, POLICY), Decision::default());
    }
    // Running elsewhere, though an earlier attempt bound its session on
    // the lost node: it runs, so the loss is not its own.
    let mut h = running(0);
    bind(&mut h);
    let fact = Fact::NodeLost {
        node: "node-b".into(),
        incarnation: Uuid::from_u128(8),
        session_node: Some("node-b".into()),
        shared_storage: false,
        fresh_session_id: "x".into(),
        launch_deadline_ms: DEADLINE,
    };
    assert_eq!(
        decide_fact(&given(&h), fact, 0, POLICY),
        Decision::default()
    );

    let mut h = running(0);
    let d = decide_fact(
        &given(&h),
        Fact::ProcessExited {
            attempt: 1,
            code: Some(0),
            outcome: ExitOutcome::Clean,
        },
        0,
        POLICY,
    );
    then(&mut h, &d);
    assert_eq!(
        decide_fact(&given(&h), lost_fact(None, false), 0, POLICY),
        Decision::default()
    );
}

#[test]
fn a_restart_that_would_resume_a_session_held_by_the_lost_node_cannot_happen_so_the_runner_is_lost()
{
    let mut h = running(3);
    bind(&mut h);
    let crash = Fact::ProcessExited {
        attempt: 1,
        code: Some(1),
        outcome: ExitOutcome::Error("crash".into()),
    };
    let d = decide_fact(&given(&h), crash.clone(), 0, POLICY);
    assert_eq!(then(&mut h, &d).state, RunnerState::Restarting);
    let d = decide_fact(&given(&h), lost_fact(Some("node-a"), false), 0, POLICY);
    assert_eq!(d.events, vec![lost(1)]);
    // On shared storage, or with its session unbound, the restart goes on.
    assert_eq!(
        decide_fact(&given(&h), lost_fact(Some("node-a"), true), 0, POLICY),
        Decision::default()
    );
    let mut h = running(3);
    let d = decide_fact(&given(&h), crash, 0, POLICY);
    then(&mut h, &d);
    assert_eq!(
        decide_fact(&given(&h), lost_fact(None, false), 0, POLICY),
        Decision::default()
    );
}

#[test]
fn a_resume_waiting_in_the_lost_nodes_own_queue_is_lost() {
    let mut h = running(3);
    bind(&mut h);
    let d = decide_fact(
        &given(&h),
        Fact::ProcessExited {
            attempt: 1,
            code: Some(1),
            outcome: ExitOutcome::Error("crash".into()),
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &d);
    let d = decide_fact(
        &r,
        Fact::WaitOver {
            attempt: 1,
            fresh_session_id: "unused".into(),
            launch_deadline_ms: DEADLINE,
            slot_free: true,
            slot_retry_at_ms: 0,
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &d);
    assert_eq!(
        (r.state, r.placement.as_ref()),
        (RunnerState::Starting, None)
    );
    let d = decide_fact(&r, lost_fact(Some("node-a"), false), 0, POLICY);
    assert_eq!(d.events, vec![lost(2)]);
}
