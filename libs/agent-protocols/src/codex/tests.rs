use super::*;
use crate::TEXT_CHUNK_MAX_BYTES;

const STARTED: &str = r#"{"type":"thread.started","thread_id":"t1"}"#;
const TURN: &str = r#"{"type":"turn.started"}"#;
const RETRY: &str = r#"{"type":"error","message":"Reconnecting... 2/5"}"#;

fn completed(input: u64, cached: u64, output: u64) -> String {
    format!(
        r#"{{"type":"turn.completed","usage":{{"input_tokens":{input},"cached_input_tokens":{cached},"output_tokens":{output}}}}}"#
    )
}

fn message(text: &str) -> String {
    serde_json::json!({
        "type": "item.completed",
        "item": {"id": "item_1", "type": "agent_message", "text": text}
    })
    .to_string()
}

fn usage(input: u64, output: u64, creation: u64, read: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: creation,
        cache_read_input_tokens: read,
    }
}

fn run(start: ParserStart, lines: &[&str]) -> (Vec<AgentFact>, CodexJsonParser) {
    let mut parser = CodexJsonParser::new(start);
    let mut facts: Vec<AgentFact> = lines.iter().flat_map(|l| parser.feed(l)).collect();
    facts.extend(parser.finish());
    (facts, parser)
}

fn usages(facts: &[AgentFact]) -> Vec<(u32, Vec<String>, TokenUsage)> {
    facts
        .iter()
        .filter_map(|f| match f {
            AgentFact::UsageReported {
                turn,
                message_ids,
                usage,
                ..
            } => Some((*turn, message_ids.clone(), *usage)),
            _ => None,
        })
        .collect()
}

fn outcome(facts: &[AgentFact]) -> Option<Outcome> {
    facts.iter().find_map(|f| match f {
        AgentFact::Finished { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

#[test]
fn thread_started_starts_the_session_named_by_the_thread() {
    let mut parser = CodexJsonParser::new(ParserStart::default());
    assert_eq!(
        parser.feed(STARTED),
        vec![AgentFact::SessionStarted {
            session_id: "t1".into(),
            model: None,
            cwd: None,
        }]
    );
    assert_eq!(parser.thread_id(), Some("t1"));
}

#[test]
fn two_turns_in_one_output_count_the_growth_of_the_running_total() {
    let first = completed(1000, 800, 50);
    let second = completed(2500, 2000, 120);
    let (facts, parser) = run(
        ParserStart::default(),
        &[STARTED, TURN, &first, TURN, &second],
    );
    assert_eq!(
        usages(&facts),
        vec![
            (1, vec!["turn-1".to_owned()], usage(200, 50, 0, 800)),
            (2, vec!["turn-2".to_owned()], usage(300, 70, 0, 1200)),
        ]
    );
    assert_eq!(parser.counted_usage(), usage(500, 120, 0, 2000));
    assert_eq!(parser.thread_usage_total(), usage(500, 120, 0, 2000));
}

#[test]
fn the_first_completed_turn_binds_the_thread_once() {
    let first = completed(10, 0, 1);
    let second = completed(20, 0, 2);
    let (facts, parser) = run(
        ParserStart::default(),
        &[STARTED, TURN, &first, TURN, &second],
    );
    let bound: Vec<&AgentFact> = facts
        .iter()
        .filter(|f| matches!(f, AgentFact::SessionBound { .. }))
        .collect();
    assert_eq!(
        bound,
        [&AgentFact::SessionBound {
            session_id: "t1".into()
        }]
    );
    assert!(parser.is_bound());
}

#[test]
fn a_failed_turn_binds_nothing_and_reports_no_usage() {
    let failed = r#"{"type":"turn.failed","error":{"message":"boom"}}"#;
    let (facts, parser) = run(ParserStart::default(), &[STARTED, TURN, failed]);
    assert!(usages(&facts).is_empty());
    assert!(!parser.is_bound());
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: "boom".into()
        })
    );
}

#[test]
fn a_completed_last_turn_succeeds_with_its_last_message() {
    let answer = message("All tests pass.");
    let done = completed(10, 0, 3);
    let (facts, _) = run(ParserStart::default(), &[STARTED, TURN, &answer, &done]);
    let Some(AgentFact::Finished {
        is_error,
        result_text,
        total_cost_usd,
        counted_usage,
        outcome,
        ..
    }) = facts.last().cloned()
    else {
        panic!("no Finished last in {facts:?}");
    };
    assert!(!is_error);
    assert_eq!(result_text.as_deref(), Some("All tests pass."));
    assert_eq!(total_cost_usd, None);
    assert_eq!(counted_usage, usage(10, 3, 0, 0));
    assert_eq!(outcome, Outcome::Succeeded);
}

#[test]
fn no_turn_ended_means_no_finished_and_no_usage() {
    let (facts, _) = run(ParserStart::default(), &[STARTED, TURN, RETRY, RETRY]);
    assert_eq!(outcome(&facts), None);
    assert!(usages(&facts).is_empty());
}

#[test]
fn a_turn_cut_short_after_a_completed_one_leaves_the_end_to_the_exit_status() {
    let done = completed(10, 0, 3);
    let (facts, _) = run(ParserStart::default(), &[STARTED, TURN, &done, TURN, RETRY]);
    assert_eq!(outcome(&facts), None);
    assert_eq!(usages(&facts).len(), 1);
}

#[test]
fn finish_reports_once() {
    let done = completed(10, 0, 3);
    let (_, mut parser) = run(ParserStart::default(), &[STARTED, TURN, &done]);
    assert!(parser.finish().is_empty());
}

#[test]
fn error_lines_are_reported_with_the_clis_words_and_are_not_progress() {
    let mut parser = CodexJsonParser::new(ParserStart::default());
    parser.feed(STARTED);
    parser.feed(TURN);
    assert_eq!(
        parser.feed(RETRY),
        vec![AgentFact::ErrorReported {
            message: "Reconnecting... 2/5".into()
        }]
    );
    let warning = r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Falling back"}}"#;
    assert_eq!(
        parser.feed(warning),
        vec![AgentFact::ErrorReported {
            message: "Falling back".into()
        }]
    );
    assert_eq!(parser.stats().last_progress_line, 0);
}

#[test]
fn progress_is_items_agent_text_and_turn_ends() {
    let mut parser = CodexJsonParser::new(ParserStart::default());
    parser.feed(STARTED);
    parser.feed(TURN);
    assert_eq!(parser.stats().last_progress_line, 0);
    parser.feed(r#"{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#);
    assert_eq!(parser.stats().last_progress_line, 3);
    parser.feed(RETRY);
    parser.feed(r#"{"type":"item.updated","item":{"id":"item_1","type":"todo_list","items":[]}}"#);
    assert_eq!(parser.stats().last_progress_line, 5);
    parser.feed(&message("done"));
    assert_eq!(parser.stats().last_progress_line, 6);
    parser.feed(RETRY);
    parser.feed(&completed(1, 0, 1));
    assert_eq!(parser.stats().last_progress_line, 8);
}

#[test]
fn only_a_completed_agent_message_is_text() {
    let mut parser = CodexJsonParser::new(ParserStart::default());
    let partial =
        r#"{"type":"item.updated","item":{"id":"item_1","type":"agent_message","text":"hal"}}"#;
    assert!(parser.feed(partial).is_empty());
    assert_eq!(
        parser.feed(&message("half done")),
        vec![AgentFact::TextChunk {
            role: TextRole::Assistant,
            text: "half done".into()
        }]
    );
}

#[test]
fn long_agent_messages_are_split_into_capped_chunks() {
    let text = "y".repeat(TEXT_CHUNK_MAX_BYTES + 5);
    let mut parser = CodexJsonParser::new(ParserStart::default());
    let sizes: Vec<usize> = parser
        .feed(&message(&text))
        .iter()
        .filter_map(|f| match f {
            AgentFact::TextChunk { text, .. } => Some(text.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [TEXT_CHUNK_MAX_BYTES, 5]);
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_skipped() {
    let (facts, parser) = run(
        ParserStart::default(),
        &[
            "not json",
            "[1]",
            "",
            r#"{"type":"thread.started"}"#,
            r#"{"type":"error"}"#,
            r#"{"type":"item.completed"}"#,
            r#"{"type":"item.completed","item":{"id":"x"}}"#,
            r#"{"type":"telemetry"}"#,
            r#"{"no_type":true}"#,
            STARTED,
        ],
    );
    assert_eq!(
        parser.stats(),
        LineStats {
            lines_seen: 10,
            last_progress_line: 0,
            malformed_lines: 6,
            unknown_lines: 2,
        }
    );
    assert_eq!(facts.len(), 1);
}

#[test]
fn a_turn_completed_without_usage_still_ends_and_binds() {
    let (facts, parser) = run(
        ParserStart::default(),
        &[STARTED, TURN, r#"{"type":"turn.completed"}"#],
    );
    assert!(usages(&facts).is_empty());
    assert!(parser.is_bound());
    assert_eq!(parser.stats().malformed_lines, 1);
    assert_eq!(outcome(&facts), Some(Outcome::Succeeded));
}

#[test]
fn a_turn_failed_without_a_message_fails_in_codexs_own_words() {
    let (facts, parser) = run(
        ParserStart::default(),
        &[STARTED, TURN, r#"{"type":"turn.failed","error":{}}"#],
    );
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: "turn failed".into()
        })
    );
    assert_eq!(parser.stats().malformed_lines, 1);
}

#[test]
fn the_same_lines_from_the_same_start_give_the_same_facts() {
    let start = ParserStart {
        usage_baseline: usage(5, 5, 0, 5),
    };
    let lines = [
        STARTED.to_owned(),
        TURN.to_owned(),
        message("x"),
        RETRY.to_owned(),
        completed(100, 50, 10),
    ];
    let once = || {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (facts, _) = run(start, &refs);
        serde_json::to_string(&facts).unwrap_or_default()
    };
    assert_eq!(once(), once());
    assert!(once().contains(r#""input_tokens":45"#));
}
