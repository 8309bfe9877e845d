use super::*;
use crate::agent_events::test_events::{assert_named_as_columns, at, process_event, runner_event};
use crate::progress::{Progress, Step};
use stratavore_events::process::{
    ProcessCostReconciled, ProcessErrorReported, ProcessStalled, ProcessStarted, UsageReported,
};
use stratavore_events::runner::{
    AttemptOffered, AttemptRelaunched, LaunchApproved, RestartScheduled, RunnerEnded,
};

fn runner() -> Uuid {
    Uuid::from_u128(7)
}

fn said_runner(s: i64, event: RunnerEvent) -> AgentEvent {
    runner_event(runner(), s, event)
}

fn said_process(s: i64, event: ProcessEvent) -> AgentEvent {
    process_event(runner(), s, event)
}

fn approval() -> AgentEvent {
    said_runner(
        0,
        RunnerEvent::LaunchApproved(LaunchApproved {
            command_id: Uuid::now_v7(),
            runner_id: runner(),
            project: "web".into(),
            path: "/srv/web".into(),
            profile: "demo".into(),
            session_id: "launch-session".into(),
            resume: false,
            model: Some("sonnet".into()),
            permission: None,
            max_restarts: 3,
            prompt: "fix it".into(),
            allowed_tools: vec!["Read".into()],
        }),
    )
}

fn offer(s: i64, attempt: u32) -> AgentEvent {
    said_runner(
        s,
        RunnerEvent::Offered(AttemptOffered {
            runner_id: runner(),
            attempt,
            resume: attempt > 1,
            session_id: format!("session-{attempt}"),
            launch_deadline_ms: 0,
        }),
    )
}

fn ended(s: i64, attempt: u32, exit_code: Option<i32>, reason: &str) -> AgentEvent {
    said_runner(
        s,
        RunnerEvent::Exited(RunnerEnded {
            runner_id: runner(),
            attempt,
            exit_code,
            reason: reason.into(),
        }),
    )
}

fn stalled(s: i64, attempt: u32) -> AgentEvent {
    said_process(
        s,
        ProcessEvent::Stalled(ProcessStalled {
            runner_id: runner(),
            attempt,
            idle_ms: 60_000,
            policy: "report".into(),
        }),
    )
}

fn usage(s: i64, attempt: u32, cost: f64) -> AgentEvent {
    AgentEvent::Progress(Progress {
        id: Uuid::now_v7(),
        time: at(s),
        step: Step::Usage(UsageReported {
            runner_id: runner(),
            attempt,
            turn: 1,
            input_tokens: 10,
            output_tokens: 20,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            cost_usd: cost,
            model: None,
            session_id: String::new(),
        }),
    })
}

fn folded(events: &[AgentEvent]) -> Option<RunnerRow> {
    let mut row = None;
    for e in events {
        RunnerRow::fold(&mut row, e);
    }
    row
}

#[test]
fn the_approval_makes_the_row_and_nothing_before_it_does() {
    assert_eq!(
        folded(&[offer(1, 1), usage(2, 1, 0.5), stalled(3, 1)]),
        None
    );
    let row = folded(&[offer(1, 1), approval()]).expect("approved");
    assert_eq!(row.state, "requested");
    assert_eq!(row.attempt, 0, "the offer before the approval was not kept");
    assert_eq!(row.session_id.as_deref(), Some("launch-session"));
    assert_eq!(row.allowed_tools, vec!["Read".to_owned()]);
    assert_eq!((row.created_at, row.totals.updated_at), (at(0), at(0)));
    let again = folded(&[approval(), approval()]).unwrap();
    assert_eq!(again, row, "a second approval changes nothing");
}

#[test]
fn an_offer_moves_to_its_attempt_and_ends_only_an_earlier_attempts_stall() {
    let row = folded(&[approval(), offer(1, 1), stalled(2, 1), offer(3, 1)]).unwrap();
    assert_eq!(row.totals.stalled_attempt, Some(1), "same attempt: kept");
    let row = folded(&[approval(), offer(1, 1), stalled(2, 1), offer(3, 2)]).unwrap();
    assert_eq!(
        (row.attempt, row.state.as_str(), row.totals.stalled_attempt),
        (2, "starting", None)
    );
    assert_eq!(row.session_id.as_deref(), Some("session-2"));
    assert_eq!(row.totals.updated_at, at(3));
}

#[test]
fn facts_of_an_earlier_attempt_are_not_taken() {
    let started = |attempt, pid| {
        said_process(
            5,
            ProcessEvent::Started(ProcessStarted {
                runner_id: runner(),
                attempt,
                node: "n1".into(),
                pid,
            }),
        )
    };
    let error = |attempt| {
        said_process(
            6,
            ProcessEvent::ErrorReported(ProcessErrorReported {
                runner_id: runner(),
                attempt,
                message: format!("error of {attempt}"),
            }),
        )
    };
    let row = folded(&[
        approval(),
        offer(1, 2),
        started(1, 11),
        error(1),
        stalled(7, 1),
    ])
    .unwrap();
    assert_eq!((row.pid, row.last_error.as_deref()), (None, None));
    assert_eq!(row.totals.stalled_attempt, None);
    assert_eq!(row.totals.updated_at, at(1), "nothing changed it");
    let row = folded(&[approval(), offer(1, 2), started(2, 12), error(3)]).unwrap();
    assert_eq!(row.pid, Some(12));
    assert_eq!(
        row.last_error.as_deref(),
        Some("error of 3"),
        "a later attempt's"
    );
    assert_eq!(row.totals.updated_at, at(6));
}

#[test]
fn an_end_keeps_an_earlier_exit_code_and_a_clean_reason_is_no_error() {
    let row = folded(&[
        approval(),
        offer(1, 1),
        ended(5, 1, Some(3), "agent_failed"),
    ])
    .unwrap();
    assert_eq!(
        (row.state.as_str(), row.exit_code, row.last_error.as_deref()),
        ("exited", Some(3), Some("agent_failed"))
    );
    let row = folded(&[
        approval(),
        ended(5, 1, Some(3), "agent_failed"),
        ended(6, 1, None, "completed"),
    ])
    .unwrap();
    assert_eq!(
        (row.exit_code, row.last_error.as_deref()),
        (Some(3), Some("agent_failed"))
    );
}

#[test]
fn a_restart_waits_until_its_time_and_a_relaunch_counts_only_at_the_lost_attempt() {
    let restart = said_runner(
        4,
        RunnerEvent::RestartScheduled(RestartScheduled {
            runner_id: runner(),
            attempt: 1,
            not_before_ms: 1_800_000_010_250,
            reason: "agent_failed".into(),
        }),
    );
    let row = folded(&[approval(), offer(1, 1), restart]).unwrap();
    assert_eq!(row.state, "restarting");
    assert_eq!(
        row.resume_at,
        Some(at(10) + chrono::TimeDelta::milliseconds(250))
    );
    let relaunch = |attempt| {
        said_runner(
            9,
            RunnerEvent::Relaunched(AttemptRelaunched {
                runner_id: runner(),
                attempt,
                node: "n1".into(),
                reason: "node_lost".into(),
            }),
        )
    };
    let row = folded(&[approval(), offer(1, 2), relaunch(1)]).unwrap();
    assert_eq!(
        (row.state.as_str(), row.last_error.as_deref()),
        ("starting", None)
    );
    assert_eq!(row.totals.updated_at, at(9), "marked changed all the same");
    let row = folded(&[approval(), offer(1, 2), relaunch(2)]).unwrap();
    assert_eq!(
        (row.state.as_str(), row.last_error.as_deref()),
        ("restarting", Some("node_lost"))
    );
}

#[test]
fn a_reconciled_cost_replaces_the_priced_one() {
    let reconciled = said_process(
        8,
        ProcessEvent::CostReconciled(ProcessCostReconciled {
            runner_id: runner(),
            attempt: 1,
            priced_cost_usd: 0.75,
            reported_cost_usd: 0.5,
        }),
    );
    let row = folded(&[
        approval(),
        offer(1, 1),
        usage(2, 1, 0.25),
        usage(3, 1, 0.5),
        reconciled,
    ])
    .unwrap();
    assert!((row.totals.usage.cost_usd - 0.5).abs() < 1e-12);
    assert_eq!(row.totals.usage.input_tokens, 20);
    assert_eq!(row.totals.updated_at, at(8));
}

#[test]
fn a_row_is_named_as_the_tables_columns() {
    let row = folded(&[approval()]).unwrap();
    assert_named_as_columns(&row, super::super::fold::COLUMNS);
}
