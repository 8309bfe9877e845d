use super::*;
use crate::agent_events::test_events::{assert_named_as_columns, at, process_event, runner_event};
use crate::progress::{Progress, Step};
use stratavore_events::process::{
    ProcessClaim, ProcessCostReconciled, ProcessExited, ProcessSessionBound, ProcessStarted,
    TextChunked, TranscriptFile,
};
use stratavore_events::runner::{AttemptOffered, AttemptPlaced, RunnerEnded};

fn runner() -> Uuid {
    Uuid::from_u128(9)
}

fn said_runner(s: i64, event: RunnerEvent) -> AgentEvent {
    runner_event(runner(), s, event)
}

fn said_process(s: i64, event: ProcessEvent) -> AgentEvent {
    process_event(runner(), s, event)
}

fn offer(s: i64, attempt: u32, resume: bool) -> AgentEvent {
    said_runner(
        s,
        RunnerEvent::Offered(AttemptOffered {
            runner_id: runner(),
            attempt,
            resume,
            session_id: "offered".into(),
            launch_deadline_ms: 0,
        }),
    )
}

fn runner_ended(s: i64, attempt: u32) -> AgentEvent {
    said_runner(
        s,
        RunnerEvent::Exited(RunnerEnded {
            runner_id: runner(),
            attempt,
            exit_code: Some(0),
            reason: "completed".into(),
        }),
    )
}

fn process_exited(s: i64, transcript: bool) -> AgentEvent {
    said_process(
        s,
        ProcessEvent::Exited(ProcessExited {
            runner_id: runner(),
            attempt: 1,
            node: "n2".into(),
            code: Some(0),
            signal: None,
            reason: "exited".into(),
            outcome: "completed".into(),
            message: None,
            resets_at: None,
            transcript: transcript.then(|| TranscriptFile {
                path: "/t/s.jsonl".into(),
                bytes: 42,
                sha256: "ab".into(),
            }),
        }),
    )
}

/// Fold as the batch fold does: the events about the attempt, in order,
/// into the row its first one made.
fn folded(events: &[AgentEvent]) -> AttemptRow {
    let first = events
        .iter()
        .find(|e| attempt_changed(e).is_some())
        .expect("an event about the attempt");
    let mut row = AttemptRow::new(runner(), 1, first.time());
    for e in events.iter().filter(|e| attempt_changed(e) == Some(1)) {
        row.apply(e);
    }
    row
}

#[test]
fn which_events_are_about_an_attempt() {
    assert_eq!(attempt_changed(&offer(1, 3, false)), Some(3));
    assert_eq!(attempt_changed(&runner_ended(1, 2)), Some(2));
    assert_eq!(
        attempt_changed(&runner_ended(1, 0)),
        None,
        "ended before any offer"
    );
    let claim = said_process(
        1,
        ProcessEvent::Claimed(ProcessClaim {
            runner_id: runner(),
            attempt: 1,
            node: "n1".into(),
            incarnation: Uuid::nil(),
        }),
    );
    assert_eq!(attempt_changed(&claim), None, "a claim is not a placement");
    assert_eq!(attempt_changed(&process_exited(1, false)), Some(1));
}

#[test]
fn an_offer_a_placement_and_a_start_say_where_and_which_session() {
    let placed = said_runner(
        2,
        RunnerEvent::Placed(AttemptPlaced {
            runner_id: runner(),
            attempt: 1,
            node: "n1".into(),
            incarnation: Uuid::nil(),
        }),
    );
    let started = |s| {
        said_process(
            s,
            ProcessEvent::Started(ProcessStarted {
                runner_id: runner(),
                attempt: 1,
                node: "n1".into(),
                pid: 5,
            }),
        )
    };
    let row = folded(&[offer(1, 1, true), placed, started(4), started(6)]);
    assert_eq!(row.session_id(), Some("offered"));
    assert_eq!(row.resume, Some(true));
    assert_eq!(row.node.as_deref(), Some("n1"));
    assert_eq!(row.started_at, Some(at(4)), "the first start");
    assert_eq!(row.facts.last_active_at, at(6));
}

#[test]
fn the_process_end_wins_over_the_runners_and_keeps_its_transcript() {
    let row = folded(&[process_exited(5, true), runner_ended(7, 1)]);
    assert_eq!(row.ended_at, Some(at(5)), "the process's own end is kept");
    assert_eq!(row.node.as_deref(), Some("n2"));
    assert_eq!(
        (
            row.transcript_path.as_deref(),
            row.transcript_bytes,
            row.transcript_sha256.as_deref()
        ),
        (Some("/t/s.jsonl"), Some(42), Some("ab"))
    );
    assert_eq!(row.facts.last_active_at, at(7));
    let row = folded(&[runner_ended(7, 1), process_exited(5, false)]);
    assert_eq!(row.ended_at, Some(at(5)), "the process's time replaces it");
    assert_eq!(row.facts.last_active_at, at(7), "the latest time");
    assert_eq!(row.transcript_path, None);
}

#[test]
fn the_agents_session_and_binding_and_its_reconciled_cost() {
    let bound = said_process(
        3,
        ProcessEvent::SessionBound(ProcessSessionBound {
            runner_id: runner(),
            attempt: 1,
            session_id: "agent".into(),
        }),
    );
    let text = AgentEvent::Progress(Progress {
        id: Uuid::now_v7(),
        time: at(2),
        step: Step::Text(TextChunked {
            runner_id: runner(),
            attempt: 1,
            session_id: "named-by-text".into(),
            role: "assistant".into(),
            text: "hi".into(),
        }),
    });
    let reconciled = said_process(
        4,
        ProcessEvent::CostReconciled(ProcessCostReconciled {
            runner_id: runner(),
            attempt: 1,
            priced_cost_usd: 0.25,
            reported_cost_usd: 1.0,
        }),
    );
    let row = folded(&[offer(1, 1, false), text, bound, reconciled]);
    assert_eq!(row.session_id(), Some("agent"), "the binding names it");
    assert!(row.bound);
    assert_eq!(row.facts.messages, 1);
    assert!((row.facts.usage.cost_usd - 0.75).abs() < 1e-12);
}

#[test]
fn a_row_is_named_as_the_tables_columns() {
    let row = folded(&[offer(1, 1, false), process_exited(2, true)]);
    assert_named_as_columns(&row, super::super::fold::COLUMNS);
}
