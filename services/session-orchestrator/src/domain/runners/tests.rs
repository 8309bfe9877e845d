//! Given events, when a command or fact, then events and effects.

use super::*;
use stratavore_events::runner::LaunchApproved;

pub(super) const POLICY: RestartPolicy = RestartPolicy {
    base_ms: 1000,
    max_ms: 60_000,
};

pub(super) fn id() -> Uuid {
    Uuid::from_u128(1)
}

pub(super) fn node() -> (String, Uuid) {
    ("node-a".to_owned(), Uuid::from_u128(7))
}

pub(super) fn approved(max_restarts: u32) -> RunnerEvent {
    RunnerEvent::LaunchApproved(LaunchApproved {
        command_id: Uuid::from_u128(9),
        runner_id: id(),
        project: "web".into(),
        path: "/srv/projects/web".into(),
        profile: "demo".into(),
        session_id: "s-1".into(),
        resume: false,
        model: None,
        permission: None,
        max_restarts,
        prompt: "hello".into(),
        allowed_tools: vec!["Read".into()],
    })
}

pub(super) fn offered(attempt: u32, resume: bool, session: &str) -> RunnerEvent {
    RunnerEvent::Offered(AttemptOffered {
        runner_id: id(),
        attempt,
        resume,
        session_id: session.into(),
        launch_deadline_ms: DEADLINE,
    })
}

pub(super) const DEADLINE: i64 = 123_000;

pub(super) fn given(events: &[RunnerEvent]) -> Runner {
    events.iter().fold(None, apply).expect("a runner")
}

/// Fold a decision's events onto the history.
pub(super) fn then(history: &mut Vec<RunnerEvent>, d: &Decision) -> Runner {
    history.extend(d.events.iter().cloned());
    given(history)
}

pub(super) fn running(max_restarts: u32) -> Vec<RunnerEvent> {
    let mut h = vec![approved(max_restarts), offered(1, false, "s-1")];
    let r = given(&h);
    let (n, inc) = node();
    let d = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 1,
            node: n.clone(),
            incarnation: inc,
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &d);
    let d = decide_fact(
        &r,
        Fact::ProcessStarted {
            attempt: 1,
            node: n,
            pid: 42,
        },
        0,
        POLICY,
    );
    assert_eq!(then(&mut h, &d).state, RunnerState::Running);
    h
}

#[test]
fn the_first_claim_of_the_current_attempt_is_started_and_any_other_is_revoked() {
    let mut h = vec![approved(0), offered(1, false, "s-1")];
    let r = given(&h);
    let (n, inc) = node();
    let d = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 1,
            node: n.clone(),
            incarnation: inc,
        },
        0,
        POLICY,
    );
    assert_eq!(
        d.effects,
        vec![Effect::Start {
            node: n.clone(),
            incarnation: inc,
            attempt: 1
        }]
    );
    let r = then(&mut h, &d);
    let second = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 1,
            node: "node-b".into(),
            incarnation: inc,
        },
        0,
        POLICY,
    );
    assert!(second.events.is_empty());
    assert!(matches!(second.effects[0], Effect::Revoke { .. }));
    let stale = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 0,
            node: n,
            incarnation: inc,
        },
        0,
        POLICY,
    );
    assert!(matches!(stale.effects[0], Effect::Revoke { .. }));
}

#[test]
fn a_clean_exit_ends_the_runner_and_does_not_restart() {
    let mut h = running(3);
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
    let r = then(&mut h, &d);
    assert_eq!(r.state, RunnerState::Exited);
    assert!(d.effects.is_empty());
}

#[test]
fn an_abnormal_exit_restarts_with_exponential_backoff_up_to_the_limit_then_fails() {
    let mut h = running(2);
    let mut waits = Vec::new();
    for attempt in 1..=2 {
        let crash = Fact::ProcessExited {
            attempt,
            code: Some(3),
            outcome: ExitOutcome::Error("exit 3".into()),
        };
        let d = decide_fact(&given(&h), crash, 10_000, POLICY);
        match &d.events[0] {
            RunnerEvent::RestartScheduled(s) => waits.push(s.not_before_ms - 10_000),
            other => panic!("{other:?}"),
        }
        let r = then(&mut h, &d);
        assert_eq!(r.state, RunnerState::Restarting);
        let d = decide_fact(
            &r,
            Fact::WaitOver {
                attempt,
                fresh_session_id: format!("fresh-{attempt}"),
                launch_deadline_ms: DEADLINE,
                slot_free: true,
                slot_retry_at_ms: 0,
            },
            0,
            POLICY,
        );
        assert_eq!(
            d.effects,
            vec![Effect::Offer {
                attempt: attempt + 1,
                resume: false
            }]
        );
        let r = then(&mut h, &d);
        assert_eq!((r.state, r.attempt), (RunnerState::Starting, attempt + 1));
        let (n, inc) = node();
        let d = decide_fact(
            &r,
            Fact::Claimed {
                attempt: attempt + 1,
                node: n.clone(),
                incarnation: inc,
            },
            0,
            POLICY,
        );
        let r = then(&mut h, &d);
        let d = decide_fact(
            &r,
            Fact::ProcessStarted {
                attempt: attempt + 1,
                node: n,
                pid: 50,
            },
            0,
            POLICY,
        );
        then(&mut h, &d);
    }
    assert_eq!(waits, vec![1000, 2000]);
    let crash = Fact::ProcessExited {
        attempt: 3,
        code: Some(3),
        outcome: ExitOutcome::Error("exit 3".into()),
    };
    let d = decide_fact(&given(&h), crash, 0, POLICY);
    assert_eq!(then(&mut h, &d).state, RunnerState::Failed);
}

#[test]
fn a_restart_resumes_a_bound_session_and_starts_afresh_under_a_new_id_otherwise() {
    // Not bound: a fresh session id, never a failing resume.
    let mut h = running(1);
    let crash = Fact::ProcessExited {
        attempt: 1,
        code: Some(1),
        outcome: ExitOutcome::Error("crash".into()),
    };
    let d = decide_fact(&given(&h), crash.clone(), 0, POLICY);
    let r = then(&mut h, &d);
    let d = decide_fact(
        &r,
        Fact::WaitOver {
            attempt: 1,
            fresh_session_id: "s-2".into(),
            launch_deadline_ms: DEADLINE,
            slot_free: true,
            slot_retry_at_ms: 0,
        },
        0,
        POLICY,
    );
    assert_eq!(d.events, vec![offered(2, false, "s-2")]);

    // Bound: the same session, resumed.
    let mut h = running(1);
    let d = decide_fact(
        &given(&h),
        Fact::SessionBound {
            attempt: 1,
            session_id: "s-1".into(),
        },
        0,
        POLICY,
    );
    then(&mut h, &d);
    let d = decide_fact(&given(&h), crash, 0, POLICY);
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
    assert_eq!(d.events, vec![offered(2, true, "s-1")]);
}

#[test]
fn an_exit_the_node_caused_offers_the_next_attempt_at_once_using_no_restart() {
    let node_failure = || Fact::ProcessExited {
        attempt: 1,
        code: None,
        outcome: ExitOutcome::NodeFailure {
            reason: "the supervisor was away past the lease".into(),
            fresh_session_id: "s-2".into(),
            launch_deadline_ms: DEADLINE,
        },
    };
    // Not bound, no restarts allowed: relaunched afresh all the same.
    let mut h = running(0);
    let d = decide_fact(&given(&h), node_failure(), 0, POLICY);
    assert_eq!(
        d.events,
        vec![
            RunnerEvent::Relaunched(AttemptRelaunched {
                runner_id: id(),
                attempt: 1,
                node: node().0,
                reason: "the supervisor was away past the lease".into(),
            }),
            offered(2, false, "s-2"),
        ]
    );
    let r = then(&mut h, &d);
    assert_eq!(
        (r.state, r.restarts, r.attempt),
        (RunnerState::Starting, 0, 2)
    );

    // Bound: its session is resumed (offered to the node that holds it).
    let mut h = running(0);
    let d = decide_fact(
        &given(&h),
        Fact::SessionBound {
            attempt: 1,
            session_id: "s-1".into(),
        },
        0,
        POLICY,
    );
    then(&mut h, &d);
    let d = decide_fact(&given(&h), node_failure(), 0, POLICY);
    assert_eq!(d.events[1], offered(2, true, "s-1"));

    // Being stopped, it simply ends.
    let mut h = running(0);
    let d = decide_control(&given(&h), Want::Stopped).unwrap();
    then(&mut h, &d);
    let d = decide_fact(&given(&h), node_failure(), 0, POLICY);
    assert!(
        matches!(d.events[..], [RunnerEvent::Exited(_)]),
        "{:?}",
        d.events
    );
}

#[test]
fn a_quota_wait_that_ends_without_a_free_slot_waits_again_and_resumes_once_there_is_one() {
    let mut h = running(0);
    let d = decide_fact(
        &given(&h),
        Fact::ProcessExited {
            attempt: 1,
            code: Some(1),
            outcome: ExitOutcome::RateLimited {
                resume_at_ms: 99_000,
                message: "usage limit".into(),
            },
        },
        0,
        POLICY,
    );
    then(&mut h, &d);
    let over = |slot_free| Fact::WaitOver {
        attempt: 1,
        fresh_session_id: "fresh".into(),
        launch_deadline_ms: DEADLINE,
        slot_free,
        slot_retry_at_ms: 104_000,
    };
    let d = decide_fact(&given(&h), over(false), 99_000, POLICY);
    match &d.events[..] {
        [RunnerEvent::WaitingQuota(q)] => {
            assert_eq!((q.attempt, q.resume_at_ms), (1, 104_000));
            assert!(q.message.contains("free slot"), "{}", q.message);
        }
        other => panic!("{other:?}"),
    }
    let r = then(&mut h, &d);
    assert_eq!(r.state, RunnerState::WaitingQuota);
    let d = decide_fact(&r, over(true), 104_000, POLICY);
    assert_eq!(d.events, vec![offered(2, false, "fresh")]);

    // A restart's backoff kept its slot: it never waits for one.
    let mut h = running(1);
    let crash = Fact::ProcessExited {
        attempt: 1,
        code: Some(1),
        outcome: ExitOutcome::Error("crash".into()),
    };
    let d = decide_fact(&given(&h), crash, 0, POLICY);
    let r = then(&mut h, &d);
    let d = decide_fact(&r, over(false), 99_000, POLICY);
    assert_eq!(d.events, vec![offered(2, false, "fresh")]);
}

#[test]
fn a_rate_limited_exit_waits_for_the_quota_instead_of_failing() {
    let mut h = running(0);
    let limited = ExitOutcome::RateLimited {
        resume_at_ms: 99_000,
        message: "usage limit".into(),
    };
    let d = decide_fact(
        &given(&h),
        Fact::ProcessExited {
            attempt: 1,
            code: Some(1),
            outcome: limited,
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &d);
    assert_eq!(r.state, RunnerState::WaitingQuota);
    let stop = decide_control(&r, Want::Stopped).unwrap();
    assert!(
        matches!(stop.events[0], RunnerEvent::Cancelled(_)),
        "stopping cancels the wait"
    );
}

#[test]
fn stop_before_placement_cancels_and_the_later_claim_is_revoked() {
    let mut h = vec![approved(0), offered(1, false, "s-1")];
    let d = decide_control(&given(&h), Want::Stopped).unwrap();
    assert!(d.effects.is_empty());
    let r = then(&mut h, &d);
    assert_eq!(r.state, RunnerState::Cancelled);
    let (n, inc) = node();
    let claim = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 1,
            node: n,
            incarnation: inc,
        },
        0,
        POLICY,
    );
    assert!(claim.events.is_empty());
    assert!(matches!(claim.effects[0], Effect::Revoke { .. }));
}

#[test]
fn stop_pause_and_resume_become_desired_states_on_the_runners_node() {
    let mut h = running(0);
    let pause = decide_control(&given(&h), Want::Paused).unwrap();
    assert_eq!(
        pause.effects,
        vec![Effect::Control {
            node: "node-a".into(),
            attempt: 1,
            want: Want::Paused
        }]
    );
    let r = then(&mut h, &pause);
    assert_eq!(r.pause, Some(PauseCause::User));
    assert_eq!(
        decide_control(&r, Want::Paused).unwrap(),
        Decision::default(),
        "pausing twice is a no-op"
    );
    let resume = decide_control(&r, Want::Running).unwrap();
    let r = then(&mut h, &resume);
    assert_eq!(r.state, RunnerState::Running);
    let stop = decide_control(&r, Want::Stopped).unwrap();
    let r = then(&mut h, &stop);
    assert_eq!(r.state, RunnerState::Stopping);
    let kill = decide_control(&r, Want::Killed).unwrap();
    assert_eq!(
        kill.effects,
        vec![Effect::Control {
            node: "node-a".into(),
            attempt: 1,
            want: Want::Killed
        }]
    );
    let exit = decide_fact(
        &r,
        Fact::ProcessExited {
            attempt: 1,
            code: None,
            outcome: ExitOutcome::Error("SIGTERM".into()),
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &exit);
    assert_eq!(
        r.state,
        RunnerState::Exited,
        "a requested stop is not a failure"
    );
}

#[test]
fn illegal_transitions_are_refused_with_a_typed_error() {
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
    let done = then(&mut h, &d);
    for want in [Want::Paused, Want::Running, Want::Stopped, Want::Killed] {
        assert_eq!(
            decide_control(&done, want),
            Err(IllegalTransition {
                state: RunnerState::Exited,
                want
            })
        );
    }
    let starting = given(&[approved(0), offered(1, false, "s-1")]);
    assert!(
        decide_control(&starting, Want::Paused).is_err(),
        "nothing to pause yet"
    );
}

#[test]
fn facts_of_a_stale_attempt_decide_nothing_and_its_process_is_killed_on_sight() {
    let h = running(1);
    let r = given(&h);
    let stale_exit = decide_fact(
        &r,
        Fact::ProcessExited {
            attempt: 0,
            code: Some(1),
            outcome: ExitOutcome::Error("x".into()),
        },
        0,
        POLICY,
    );
    assert_eq!(stale_exit, Decision::default());
    let stale_start = decide_fact(
        &r,
        Fact::ProcessStarted {
            attempt: 0,
            node: "node-b".into(),
            pid: 7,
        },
        0,
        POLICY,
    );
    assert!(stale_start.events.is_empty());
    assert_eq!(
        stale_start.effects,
        vec![Effect::Control {
            node: "node-b".into(),
            attempt: 0,
            want: Want::Killed
        }]
    );
}

#[test]
fn a_launch_no_node_starts_in_time_fails_with_that_reason() {
    let mut h = vec![approved(0), offered(1, false, "s-1")];
    let d = decide_fact(&given(&h), Fact::LaunchTimedOut { attempt: 1 }, 0, POLICY);
    let r = then(&mut h, &d);
    assert_eq!(r.state, RunnerState::Failed);
    assert_eq!(r.last_error.as_deref(), Some("launch_timeout"));
    let late = decide_fact(&r, Fact::LaunchTimedOut { attempt: 1 }, 0, POLICY);
    assert_eq!(
        late,
        Decision::default(),
        "a timer that fires twice decides once"
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = RestartPolicy {
        base_ms: 500,
        max_ms: 3000,
    };
    assert_eq!(
        (0..5).map(|n| p.backoff_ms(n)).collect::<Vec<_>>(),
        vec![500, 1000, 2000, 3000, 3000]
    );
    assert_eq!(p.backoff_ms(200), 3000);
}

#[test]
fn each_runner_has_at_most_one_timer_set_and_cleared_by_its_events() {
    let mut h = vec![approved(1), offered(1, false, "s-1")];
    assert_eq!(
        timer_change(&h[1]),
        TimerChange::Set {
            kind: TimerKind::LaunchTimeout,
            attempt: 1,
            due_ms: DEADLINE
        }
    );
    let r = given(&h);
    let (n, inc) = node();
    let d = decide_fact(
        &r,
        Fact::Claimed {
            attempt: 1,
            node: n.clone(),
            incarnation: inc,
        },
        0,
        POLICY,
    );
    assert_eq!(
        timer_change(&d.events[0]),
        TimerChange::Keep,
        "placing keeps the launch deadline"
    );
    let r = then(&mut h, &d);
    let d = decide_fact(
        &r,
        Fact::ProcessStarted {
            attempt: 1,
            node: n,
            pid: 1,
        },
        0,
        POLICY,
    );
    assert_eq!(timer_change(&d.events[0]), TimerChange::Clear);
    let r = then(&mut h, &d);
    let crash = Fact::ProcessExited {
        attempt: 1,
        code: Some(2),
        outcome: ExitOutcome::Error("x".into()),
    };
    let d = decide_fact(&r, crash, 5_000, POLICY);
    assert_eq!(
        timer_change(&d.events[0]),
        TimerChange::Set {
            kind: TimerKind::WaitOver,
            attempt: 1,
            due_ms: 6_000
        }
    );
}

#[test]
fn an_attempt_claimed_by_an_old_incarnation_and_never_started_is_offered_again() {
    let mut h = vec![approved(0), offered(1, false, "s-1")];
    let (n, old) = node();
    let d = decide_fact(
        &given(&h),
        Fact::Claimed {
            attempt: 1,
            node: n.clone(),
            incarnation: old,
        },
        0,
        POLICY,
    );
    let r = then(&mut h, &d);
    let fresh = Uuid::from_u128(99);
    let reincarnated = |node: &str, incarnation: Uuid, session: &str| Fact::NodeReincarnated {
        node: node.into(),
        incarnation,
        fresh_session_id: session.into(),
        launch_deadline_ms: DEADLINE,
    };
    let same = decide_fact(&r, reincarnated(&n, old, "x"), 0, POLICY);
    assert_eq!(
        same,
        Decision::default(),
        "the same incarnation registering again strands nothing"
    );
    let other_node = decide_fact(&r, reincarnated("node-b", fresh, "x"), 0, POLICY);
    assert_eq!(other_node, Decision::default());
    let d = decide_fact(&r, reincarnated(&n, fresh, "s-2"), 0, POLICY);
    assert_eq!(d.events, vec![offered(2, false, "s-2")]);
    assert_eq!(
        d.effects,
        vec![Effect::Offer {
            attempt: 2,
            resume: false
        }]
    );
}

#[test]
fn the_published_state_names_are_exactly_the_state_machines() {
    use RunnerState as S;
    let all = [
        S::Requested,
        S::Starting,
        S::Running,
        S::Paused,
        S::Stopping,
        S::Restarting,
        S::WaitingQuota,
        S::Exited,
        S::Failed,
        S::Lost,
        S::Rejected,
        S::Cancelled,
    ];
    let names: Vec<String> = all
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, stratavore_events::runner::RUNNER_STATES);
}

#[test]
fn the_launch_spec_keeps_the_approved_tools_and_older_snapshots_read_as_none() {
    let r = given(&[approved(0)]);
    assert_eq!(r.launch.allowed_tools, ["Read"]);
    let mut snapshot = serde_json::to_value(&r).unwrap();
    if let Some(launch) = snapshot["launch"].as_object_mut() {
        launch.remove("allowed_tools");
    }
    let old: Runner = serde_json::from_value(snapshot).unwrap();
    assert!(old.launch.allowed_tools.is_empty());
}
