use super::*;
use crate::TEXT_CHUNK_MAX_BYTES;

fn line(kind: &str, part: serde_json::Value) -> String {
    serde_json::json!({"type": kind, "timestamp": 1, "sessionID": "ses_1", "part": part})
        .to_string()
}

fn step_start() -> String {
    line(
        "step_start",
        serde_json::json!({"id": "prt_s", "type": "step-start"}),
    )
}

fn step_finish(id: &str, input: u64, output: u64, reasoning: u64, cost: f64) -> String {
    line(
        "step_finish",
        serde_json::json!({
            "id": id, "messageID": format!("msg_{id}"), "type": "step-finish",
            "reason": "stop", "cost": cost,
            "tokens": {"input": input, "output": output, "reasoning": reasoning,
                       "cache": {"read": 100, "write": 10}}
        }),
    )
}

fn text(body: &str) -> String {
    line(
        "text",
        serde_json::json!({"id": "prt_t", "type": "text", "text": body}),
    )
}

fn error(error: serde_json::Value) -> String {
    serde_json::json!({"type": "error", "timestamp": 1, "sessionID": "ses_1", "error": error})
        .to_string()
}

fn run(lines: &[&str]) -> (Vec<AgentFact>, OpencodeJsonParser) {
    let mut parser = OpencodeJsonParser::new();
    let mut facts: Vec<AgentFact> = lines.iter().flat_map(|l| parser.feed(l)).collect();
    facts.extend(parser.finish());
    (facts, parser)
}

fn outcome(facts: &[AgentFact]) -> Option<Outcome> {
    facts.iter().find_map(|f| match f {
        AgentFact::Finished { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

#[test]
fn the_first_line_starts_the_session() {
    let mut parser = OpencodeJsonParser::new();
    assert_eq!(
        parser.feed(&step_start()),
        vec![AgentFact::SessionStarted {
            session_id: "ses_1".into(),
            model: None,
            cwd: None
        }]
    );
    assert!(parser.feed(&step_start()).is_empty());
}

#[test]
fn a_step_reports_reasoning_as_output_and_both_cache_counters() {
    let mut parser = OpencodeJsonParser::new();
    parser.feed(&step_start());
    let facts = parser.feed(&step_finish("a", 7, 20, 30, 0.5));
    assert_eq!(
        facts.first(),
        Some(&AgentFact::UsageReported {
            turn: 1,
            message_ids: vec!["msg_a".into()],
            usage: TokenUsage {
                input_tokens: 7,
                output_tokens: 50,
                cache_creation_input_tokens: 10,
                cache_read_input_tokens: 100,
            },
            model: None,
        })
    );
    assert_eq!(
        facts.get(1),
        Some(&AgentFact::SessionBound {
            session_id: "ses_1".into()
        })
    );
}

#[test]
fn a_step_finish_printed_twice_is_counted_once() {
    let finish = step_finish("a", 7, 20, 0, 0.25);
    let (facts, parser) = run(&[&step_start(), &finish, &finish]);
    let reports = facts
        .iter()
        .filter(|f| matches!(f, AgentFact::UsageReported { .. }))
        .count();
    assert_eq!(reports, 1);
    assert_eq!(parser.counted_usage().input_tokens, 7);
    assert_eq!(parser.counted_cost_usd(), Some(0.25));
}

#[test]
fn finished_steps_succeed_with_the_summed_cost_and_the_last_text() {
    let (facts, _) = run(&[
        &step_start(),
        &text("first"),
        &step_finish("a", 1, 1, 0, 0.25),
        &step_start(),
        &text("last"),
        &step_finish("b", 1, 1, 0, 0.5),
    ]);
    let Some(AgentFact::Finished {
        is_error,
        result_text,
        total_cost_usd,
        outcome,
        ..
    }) = facts.last().cloned()
    else {
        panic!("no Finished last in {facts:?}");
    };
    assert!(!is_error);
    assert_eq!(result_text.as_deref(), Some("last"));
    assert_eq!(total_cost_usd, Some(0.75));
    assert_eq!(outcome, Outcome::Succeeded);
}

#[test]
fn a_step_left_open_or_no_step_at_all_leaves_the_end_to_the_exit_status() {
    let (cut_short, _) = run(&[
        &step_start(),
        &step_finish("a", 1, 1, 0, 0.0),
        &step_start(),
        &text("half"),
    ]);
    assert_eq!(outcome(&cut_short), None);
    let (nothing, _) = run(&[]);
    assert!(nothing.is_empty());
}

#[test]
fn an_error_fails_the_run_even_after_finished_steps() {
    let (facts, parser) = run(&[
        &step_start(),
        &step_finish("a", 1, 1, 0, 0.0),
        &error(serde_json::json!({"name": "UnknownError", "data": {"message": "boom"}})),
    ]);
    assert!(facts.contains(&AgentFact::ErrorReported {
        message: "boom".into()
    }));
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: "boom".into()
        })
    );
    assert!(parser.is_bound());
}

#[test]
fn every_error_shape_maps_to_its_outcome() {
    let failed = |reason: &str| {
        Some(Outcome::Failed {
            reason: reason.into(),
        })
    };
    let limited = |message: &str| {
        Some(Outcome::RateLimited {
            resets_at: None,
            message: message.into(),
        })
    };
    let cases = [
        (
            serde_json::json!({"name": "ProviderAuthError", "data": {"providerID": "anthropic", "message": "invalid x-api-key"}}),
            failed("invalid x-api-key"),
        ),
        (
            serde_json::json!({"name": "APIError", "data": {"message": "You exceeded your current quota", "statusCode": 429, "isRetryable": false}}),
            limited("You exceeded your current quota"),
        ),
        (
            serde_json::json!({"name": "APIError", "data": {"message": "Bad gateway", "statusCode": 502, "responseBody": "{\"error\":{\"type\":\"rate_limit_error\"}}"}}),
            limited("Bad gateway"),
        ),
        (
            serde_json::json!({"name": "APIError", "data": {"message": "Rate limit exceeded", "statusCode": 500}}),
            limited("Rate limit exceeded"),
        ),
        (
            serde_json::json!({"name": "APIError", "data": {"message": "Overloaded", "statusCode": 529}}),
            failed("Overloaded"),
        ),
        (
            serde_json::json!({"name": "MessageOutputLengthError", "data": {}}),
            failed("MessageOutputLengthError"),
        ),
        (serde_json::json!({}), failed(ERROR_WITHOUT_MESSAGE)),
    ];
    for (shape, expected) in cases {
        let (facts, _) = run(&[&error(shape.clone())]);
        assert_eq!(outcome(&facts), expected, "{shape}");
    }
}

#[test]
fn a_limit_is_not_hidden_by_a_later_error() {
    let (facts, _) = run(&[
        &error(
            serde_json::json!({"name": "APIError", "data": {"message": "slow down", "statusCode": 429}}),
        ),
        &error(serde_json::json!({"name": "UnknownError", "data": {"message": "aborted"}})),
    ]);
    assert_eq!(
        outcome(&facts),
        Some(Outcome::RateLimited {
            resets_at: None,
            message: "slow down".into()
        })
    );
}

#[test]
fn progress_is_text_tools_reasoning_and_finished_steps_not_starts_or_errors() {
    let mut parser = OpencodeJsonParser::new();
    parser.feed(&step_start());
    assert_eq!(parser.stats().last_progress_line, 0);
    parser.feed(&line(
        "tool_use",
        serde_json::json!({"id": "p", "type": "tool"}),
    ));
    assert_eq!(parser.stats().last_progress_line, 2);
    parser.feed(&error(serde_json::json!({"name": "UnknownError"})));
    parser.feed(&step_start());
    assert_eq!(parser.stats().last_progress_line, 2);
    parser.feed(&line(
        "reasoning",
        serde_json::json!({"id": "r", "type": "reasoning", "text": "hm"}),
    ));
    assert_eq!(parser.stats().last_progress_line, 5);
    parser.feed(&text("hi"));
    assert_eq!(parser.stats().last_progress_line, 6);
    parser.feed(&step_finish("a", 1, 1, 0, 0.0));
    assert_eq!(parser.stats().last_progress_line, 7);
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_skipped() {
    let (facts, parser) = run(&[
        "{",
        "42",
        "",
        r#"{"type":"text","sessionID":"ses_1"}"#,
        r#"{"type":"step_finish","part":{"id":"x"}}"#,
        r#"{"type":"text","part":{"id":"x"}}"#,
        r#"{"type":"error"}"#,
        r#"{"type":"session.idle"}"#,
        r#"{"type":"done","reason":"idle"}"#,
    ]);
    assert_eq!(
        parser.stats(),
        LineStats {
            lines_seen: 9,
            last_progress_line: 0,
            malformed_lines: 6,
            unknown_lines: 1,
        }
    );
    // Only the session, from the first line that named one.
    assert_eq!(facts.len(), 1);
}

#[test]
fn long_text_is_split_into_capped_chunks() {
    let mut parser = OpencodeJsonParser::new();
    let sizes: Vec<usize> = parser
        .feed(&text(&"z".repeat(TEXT_CHUNK_MAX_BYTES + 1)))
        .iter()
        .filter_map(|f| match f {
            AgentFact::TextChunk { text, .. } => Some(text.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [TEXT_CHUNK_MAX_BYTES, 1]);
}
