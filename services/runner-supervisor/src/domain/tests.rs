//! The process stream derived from recorded and documented Claude Code
//! transcripts, and its determinism across restarts.

use stratavore_agent_shim::runner_dir::{ExitReason, ExitRecord};
use stratavore_events::process::{ProcessEvent, ProcessExited, UsageReported};
use uuid::Uuid;

use super::stall::{StallMarker, StallPolicy};
use super::transcript_events::{
    AttemptIdentity, AttemptSetup, DerivedEvent, FIRST_DERIVED_VERSION, TranscriptDeriver, event_id,
};

const NO_LOGIN: &str =
    include_str!("../../../../libs/agent-protocols/tests/fixtures/claude/no-login.jsonl");
const TWO_TURNS: &str = include_str!(
    "../../../../libs/agent-protocols/tests/fixtures/claude/two-turns-with-tools.jsonl"
);
const RATE_LIMITED: &str =
    include_str!("../../../../libs/agent-protocols/tests/fixtures/claude/rate-limited.jsonl");
const RESUME_UNKNOWN: &str = include_str!(
    "../../../../libs/agent-protocols/tests/fixtures/claude/resume-unknown-session.jsonl"
);

const RUNNER: Uuid = Uuid::from_u128(0x0192_3c4d_5e6f_7a8b_9c0d_1e2f_3a4b_5c6d);
const ATTEMPT: u32 = 2;
/// The session id of the two-turn and rate-limited fixtures' init lines.
const FIXTURE_SESSION: &str = "5b0f6f0e-2c1d-4f7a-9e3b-7d4c2a1e8f90";
const LAUNCH_SESSION: &str = "launch-session";

fn identity() -> AttemptIdentity {
    AttemptIdentity {
        runner_id: RUNNER,
        attempt: ATTEMPT,
        node: "node-a".to_owned(),
    }
}

fn deriver() -> TranscriptDeriver {
    TranscriptDeriver::new(identity(), AttemptSetup::claude(LAUNCH_SESSION))
}

fn exit(code: Option<i32>, signal: Option<i32>, reason: ExitReason) -> ExitRecord {
    ExitRecord {
        code,
        signal,
        reason,
        detail: None,
        ended_boottime_ns: 0,
    }
}

fn exited_with(code: i32) -> ExitRecord {
    exit(Some(code), None, ExitReason::Exited)
}

fn feed(deriver: &mut TranscriptDeriver, transcript: &str) -> Vec<DerivedEvent> {
    transcript
        .lines()
        .flat_map(|line| deriver.feed_line(line))
        .collect()
}

fn derive_all(transcript: &str, end: &ExitRecord) -> Vec<DerivedEvent> {
    let mut d = deriver();
    let mut events = feed(&mut d, transcript);
    events.extend(d.finish(end, None));
    events
}

fn kinds(events: &[DerivedEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match &e.event {
            ProcessEvent::Claimed(_) => "claimed",
            ProcessEvent::Spawning(_) => "spawning",
            ProcessEvent::Started(_) => "started",
            ProcessEvent::UsageReported(_) => "usage_reported",
            ProcessEvent::SessionBound(_) => "session_bound",
            ProcessEvent::TextChunked(_) => "text_chunked",
            ProcessEvent::Exited(_) => "exited",
            ProcessEvent::Failed(_) => "failed",
            ProcessEvent::SessionStarted(_) => "session_started",
            ProcessEvent::ErrorReported(_) => "error_reported",
            ProcessEvent::CostReconciled(_) => "cost_reconciled",
            ProcessEvent::Stalled(_) => "stalled",
        })
        .collect()
}

fn usages(events: &[DerivedEvent]) -> Vec<&UsageReported> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            ProcessEvent::UsageReported(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn last_exit(events: &[DerivedEvent]) -> &ProcessExited {
    match events.last().map(|e| &e.event) {
        Some(ProcessEvent::Exited(exited)) => exited,
        other => panic!("the stream does not end in process.exited: {other:?}"),
    }
}

fn text_chunks(events: &[DerivedEvent]) -> Vec<(&str, &str, &str)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            ProcessEvent::TextChunked(t) => {
                Some((t.session_id.as_str(), t.role.as_str(), t.text.as_str()))
            }
            _ => None,
        })
        .collect()
}

fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-12,
        "{actual} != {expected} USD"
    );
}

#[test]
fn no_login_ends_in_a_failed_exit_with_the_clis_own_words() {
    let events = derive_all(NO_LOGIN, &exited_with(1));
    assert_eq!(
        kinds(&events),
        [
            "session_started",
            "text_chunked",
            "usage_reported",
            "text_chunked",
            "cost_reconciled",
            "exited"
        ]
    );
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "failed");
    assert_eq!(
        exited.message.as_deref(),
        Some("Not logged in · Please run /login")
    );
    assert_eq!((exited.code, exited.signal), (Some(1), None));
    assert_eq!(exited.reason, "exited");
    assert_eq!(exited.node, "node-a");
    assert_eq!((exited.runner_id, exited.attempt), (RUNNER, ATTEMPT));
    assert_eq!(exited.resets_at, None);
}

#[test]
fn two_turns_give_two_priced_usages_a_binding_text_and_a_success() {
    let events = derive_all(TWO_TURNS, &exited_with(0));
    assert_eq!(
        kinds(&events),
        [
            "session_started",
            "text_chunked",
            "usage_reported",
            "session_bound",
            "text_chunked",
            "usage_reported",
            "text_chunked",
            "cost_reconciled",
            "exited",
        ]
    );
    let usages = usages(&events);
    let counts: Vec<_> = usages
        .iter()
        .map(|u| {
            (
                u.turn,
                u.input_tokens,
                u.output_tokens,
                u.cache_creation_input_tokens,
                u.cache_read_input_tokens,
            )
        })
        .collect();
    assert_eq!(counts, [(1, 3, 87, 4811, 12044), (2, 5, 41, 310, 16855)]);
    assert_usd(usages[0].cost_usd, 0.022_968_45);
    assert_usd(usages[1].cost_usd, 0.006_849);
    // Together they are what Claude Code itself reports as the run's cost.
    assert_usd(usages[0].cost_usd + usages[1].cost_usd, 0.029_817_45);
    for u in &usages {
        assert_eq!(u.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!((u.runner_id, u.attempt), (RUNNER, ATTEMPT));
    }
    match &events[0].event {
        ProcessEvent::SessionStarted(started) => {
            assert_eq!(started.session_id, FIXTURE_SESSION);
            assert_eq!(started.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        }
        other => panic!("expected session_started, got {other:?}"),
    }
    for u in &usages {
        assert_eq!(u.session_id, FIXTURE_SESSION);
    }
    match &events[3].event {
        ProcessEvent::SessionBound(bound) => assert_eq!(bound.session_id, FIXTURE_SESSION),
        other => panic!("expected session_bound, got {other:?}"),
    }
    let chunks = text_chunks(&events);
    assert_eq!(
        chunks.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        [
            (FIXTURE_SESSION, "assistant"),
            (FIXTURE_SESSION, "assistant"),
            (FIXTURE_SESSION, "result"),
        ]
    );
    assert_eq!(chunks[0].2, "I'll run the test suite to see what fails.");
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "succeeded");
    assert_eq!(exited.message, None);
    assert_eq!(exited.code, Some(0));
}

#[test]
fn a_usage_limit_ends_rate_limited_with_its_reset_time() {
    let events = derive_all(RATE_LIMITED, &exited_with(1));
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "rate_limited");
    assert_eq!(exited.resets_at, Some(1_764_208_800));
    assert_eq!(
        exited.message.as_deref(),
        Some("Claude AI usage limit reached|1764208800")
    );
    // The turn before the limit was spent and saved.
    let usages = usages(&events);
    assert_eq!(usages[0].output_tokens, 63);
    assert_usd(usages[0].cost_usd, 0.012_147);
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| **k == "session_bound")
            .count(),
        1
    );
}

#[test]
fn versions_are_consecutive_from_four_and_ids_are_the_event_ids_of_them() {
    for transcript in [NO_LOGIN, TWO_TURNS, RATE_LIMITED, RESUME_UNKNOWN] {
        let events = derive_all(transcript, &exited_with(1));
        for (n, event) in (FIRST_DERIVED_VERSION..).zip(&events) {
            assert_eq!(event.version, n);
            assert_eq!(event.id, event_id(RUNNER, ATTEMPT, n));
        }
    }
}

#[test]
fn reading_the_same_transcript_again_derives_identical_events() {
    for (transcript, end) in [
        (NO_LOGIN, exited_with(1)),
        (TWO_TURNS, exited_with(0)),
        (RATE_LIMITED, exited_with(1)),
        (RESUME_UNKNOWN, exited_with(1)),
    ] {
        let first = derive_all(transcript, &end);
        let again = derive_all(transcript, &end);
        assert!(!first.is_empty());
        assert_eq!(first, again);
    }
}

#[test]
fn a_restart_mid_transcript_rederives_what_was_derived_before_it_unchanged() {
    let lines: Vec<&str> = TWO_TURNS.lines().collect();
    let half = lines.len() / 2;
    let mut before_crash = deriver();
    let derived_before: Vec<_> = lines[..half]
        .iter()
        .flat_map(|line| before_crash.feed_line(line))
        .collect();
    assert!(!derived_before.is_empty());

    let after_restart = derive_all(TWO_TURNS, &exited_with(0));
    assert_eq!(derived_before[..], after_restart[..derived_before.len()]);
    assert_eq!(after_restart, derive_all(TWO_TURNS, &exited_with(0)));
}

#[test]
fn malformed_and_unknown_lines_change_nothing_and_are_counted() {
    let mut noisy = String::new();
    for (n, line) in TWO_TURNS.lines().enumerate() {
        if n == 2 {
            noisy.push_str("{not json\n");
            noisy.push_str("{\"type\":\"mystery\",\"session_id\":\"other\"}\n");
            noisy.push_str("[1,2,3]\n");
        }
        noisy.push_str(line);
        noisy.push('\n');
    }
    let mut d = deriver();
    let mut events = feed(&mut d, &noisy);
    events.extend(d.finish(&exited_with(0), None));
    assert_eq!(events, derive_all(TWO_TURNS, &exited_with(0)));
    let stats = d.stats();
    assert_eq!(stats.malformed_lines, 2);
    assert_eq!(stats.unknown_lines, 1);
    assert_eq!(stats.lines_seen, 9);
}

#[test]
fn a_crash_without_a_result_bills_the_open_turn_and_fails_with_the_exit_code() {
    let without_result: String = TWO_TURNS
        .lines()
        .filter(|line| !line.contains("\"type\":\"result\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let events = derive_all(&without_result, &exited_with(3));
    let usages = usages(&events);
    assert_eq!(usages.len(), 2, "the open second turn is billed too");
    assert_usd(usages[1].cost_usd, 0.006_849);
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "failed");
    assert_eq!(exited.message.as_deref(), Some("exited with code 3"));
    assert!(
        !kinds(&events).contains(&"cost_reconciled"),
        "a crashed run keeps the priced figure"
    );
}

#[test]
fn the_cost_is_known_from_the_table_mid_run_and_reconciled_with_the_result() {
    let lines: Vec<&str> = TWO_TURNS.lines().collect();
    let result_at = lines
        .iter()
        .position(|l| l.contains("\"type\":\"result\""))
        .unwrap();
    let mut d = deriver();
    let before: Vec<_> = lines[..result_at]
        .iter()
        .flat_map(|l| d.feed_line(l))
        .collect();
    let priced: f64 = usages(&before).iter().map(|u| u.cost_usd).sum();
    // Mid-run, before any figure of the agent's own, the table priced the
    // first turn (the second is billed when it ends, at the result).
    assert_usd(priced, 0.022_968_45);
    let after = d.feed_line(lines[result_at]);
    let priced = priced + usages(&after).iter().map(|u| u.cost_usd).sum::<f64>();
    let reconciled = after
        .iter()
        .find_map(|e| match &e.event {
            ProcessEvent::CostReconciled(c) => Some(c),
            _ => None,
        })
        .expect("the result reconciles the cost");
    assert_usd(reconciled.priced_cost_usd, priced);
    assert_usd(reconciled.reported_cost_usd, 0.029_817_45);
}

fn stopped_on_request() -> ExitRecord {
    exit(None, Some(15), ExitReason::StoppedOnRequest)
}

#[test]
fn a_stall_the_node_stopped_ends_the_attempt_as_stalled_saying_why() {
    let lines: Vec<&str> = NO_LOGIN.lines().take(1).collect();
    let mut d = deriver();
    let mut events: Vec<_> = lines.iter().flat_map(|l| d.feed_line(l)).collect();
    events.extend(d.stall(StallMarker {
        after_line: 1,
        idle_ms: 5_000,
        policy: StallPolicy::Stop,
    }));
    events.extend(d.finish(&stopped_on_request(), None));
    assert_eq!(kinds(&events), ["session_started", "stalled", "exited"]);
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "stalled");
    assert_eq!(exited.reason, "stopped_on_request");
    assert!(
        exited.message.as_deref().unwrap().contains("no progress"),
        "{:?}",
        exited.message
    );
}

#[test]
fn a_flagged_stall_changes_no_outcome() {
    let mut d = deriver();
    let mut events = d.stall(StallMarker {
        after_line: 0,
        idle_ms: 5_000,
        policy: StallPolicy::Flag,
    });
    events.extend(feed(&mut d, TWO_TURNS));
    events.extend(d.finish(&exited_with(0), None));
    assert_eq!(kinds(&events)[0], "stalled");
    assert_eq!(last_exit(&events).outcome, "succeeded");
}

#[test]
fn stalls_read_back_after_a_restart_are_derived_where_they_were() {
    let lines: Vec<&str> = TWO_TURNS.lines().collect();
    let markers = [
        StallMarker {
            after_line: 0,
            idle_ms: 1_000,
            policy: StallPolicy::Flag,
        },
        StallMarker {
            after_line: 3,
            idle_ms: 2_000,
            policy: StallPolicy::Stop,
        },
    ];
    // Live: each stall seen once the lines before it were read.
    let mut live = deriver();
    let mut first = live.stall(markers[0].clone());
    for line in &lines[..3] {
        first.extend(live.feed_line(line));
    }
    first.extend(live.stall(markers[1].clone()));
    for line in &lines[3..] {
        first.extend(live.feed_line(line));
    }
    first.extend(live.finish(&stopped_on_request(), None));
    // Restarted: the markers come from the runner directory up front.
    let mut setup = AttemptSetup::claude(LAUNCH_SESSION);
    setup.stalls = vec![markers[1].clone(), markers[0].clone()];
    let mut again = TranscriptDeriver::new(identity(), setup);
    let mut second = feed(&mut again, TWO_TURNS);
    second.extend(again.finish(&stopped_on_request(), None));
    assert_eq!(first, second);
    assert_eq!(kinds(&first).iter().filter(|k| **k == "stalled").count(), 2);
    assert_eq!(last_exit(&first).outcome, "stalled");
}

#[test]
fn a_killed_agent_fails_with_its_signal_and_the_exit_reason() {
    let events = derive_all(
        TWO_TURNS
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
        &exit(None, Some(9), ExitReason::LeaseExpired),
    );
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "failed");
    assert_eq!(exited.message.as_deref(), Some("killed by signal 9"));
    assert_eq!(exited.reason, "lease_expired");
    assert_eq!((exited.code, exited.signal), (None, Some(9)));
}

#[test]
fn a_reported_success_with_a_non_zero_exit_is_a_failure() {
    let events = derive_all(
        TWO_TURNS,
        &exit(Some(143), None, ExitReason::StoppedOnRequest),
    );
    let exited = last_exit(&events);
    assert_eq!(exited.outcome, "failed");
    assert_eq!(exited.message.as_deref(), Some("exited with code 143"));
    assert_eq!(exited.reason, "stopped_on_request");
}

#[test]
fn a_spawn_failure_ends_the_stream_in_process_failed_with_the_shims_detail() {
    let mut end = exit(None, None, ExitReason::SpawnFailed);
    end.detail = Some("no such executable: claude".to_owned());
    let events = derive_all("", &end);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].version, FIRST_DERIVED_VERSION);
    match &events[0].event {
        ProcessEvent::Failed(failed) => {
            assert_eq!(failed.reason, "no such executable: claude");
            assert_eq!(failed.node, "node-a");
        }
        other => panic!("expected process.failed, got {other:?}"),
    }
}

#[test]
fn text_without_an_init_line_belongs_to_the_launch_session() {
    let events = derive_all(RESUME_UNKNOWN, &exited_with(1));
    assert_eq!(
        text_chunks(&events),
        [(
            LAUNCH_SESSION,
            "result",
            "No conversation found with session ID: 11111111-2222-4333-8444-555555555555"
        )]
    );
    assert_eq!(last_exit(&events).outcome, "failed");
}

#[test]
fn the_stream_ends_with_its_exit_event() {
    let mut d = deriver();
    feed(&mut d, NO_LOGIN);
    let end = d.finish(&exited_with(1), None);
    assert_eq!(kinds(&end), ["exited"]);
    assert!(d.is_finished());
    assert!(d.finish(&exited_with(1), None).is_empty());
    assert!(
        d.feed_line(NO_LOGIN.lines().last().unwrap_or_default())
            .is_empty()
    );
    assert_eq!(d.next_version(), end[0].version + 1);
}

#[test]
fn the_exit_carries_the_transcript_the_shell_described() {
    let file = stratavore_events::process::TranscriptFile {
        path: "/data/sessions/s.jsonl".to_owned(),
        bytes: 1234,
        sha256: "ab".repeat(32),
    };
    let mut d = deriver();
    feed(&mut d, TWO_TURNS);
    let events = d.finish(&exited_with(0), Some(file.clone()));
    assert_eq!(last_exit(&events).transcript, Some(file));
}

#[test]
fn a_model_missing_from_the_table_is_priced_as_an_estimate_and_counted() {
    let unknown = TWO_TURNS.replace("claude-sonnet-4-5-20250929", "mystery-model");
    let mut d = deriver();
    let events = feed(&mut d, &unknown);
    assert_eq!(d.estimated_costs(), 2);
    // The default row is Opus's: five times Sonnet's rates.
    assert_usd(usages(&events)[0].cost_usd, 5.0 * 0.022_968_45);
}

#[test]
fn an_attempt_killed_mid_turn_bills_the_open_turn_then_ends_in_the_given_exit() {
    let without_result: String = TWO_TURNS
        .lines()
        .filter(|line| !line.contains("\"type\":\"result\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut d = deriver();
    let mut events = feed(&mut d, &without_result);
    let restart = ProcessEvent::Exited(ProcessExited {
        runner_id: RUNNER,
        attempt: ATTEMPT,
        node: "node-a".to_owned(),
        code: None,
        signal: None,
        reason: "supervisor_restart".to_owned(),
        outcome: "failed".to_owned(),
        message: None,
        resets_at: None,
        transcript: None,
    });
    events.extend(d.finish_interrupted(restart.clone()));
    assert_eq!(
        usages(&events).len(),
        2,
        "the open second turn is billed too"
    );
    let last = events.last().map(|e| e.event.clone());
    assert_eq!(last, Some(restart.clone()));
    assert!(d.is_finished());
    assert!(d.finish_interrupted(restart).is_empty(), "the stream ended");
    assert!(
        d.finish(&exited_with(0), None).is_empty(),
        "the stream ended"
    );
}
