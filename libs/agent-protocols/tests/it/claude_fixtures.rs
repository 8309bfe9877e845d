use stratavore_agent_protocols::{AgentFact, ClaudeStreamParser, Outcome, TextRole};

use crate::{finished, kinds, outcome, usage, usage_reports};

fn fixture(name: &str) -> String {
    crate::fixture("claude", name)
}

fn parse_text(text: &str) -> (Vec<AgentFact>, ClaudeStreamParser) {
    let mut parser = ClaudeStreamParser::new();
    let facts = crate::fold(&mut parser, text);
    (facts, parser)
}

fn parse(name: &str) -> (Vec<AgentFact>, ClaudeStreamParser) {
    parse_text(&fixture(name))
}

#[test]
fn two_tool_turns_report_exact_totals_once_per_turn() {
    let (facts, parser) = parse("two-turns-with-tools.jsonl");
    assert_eq!(
        usage_reports(&facts),
        vec![
            (
                1,
                vec!["msg_01Vq8DkR2yH6nJtP4sLwXc9A".to_owned()],
                usage(3, 87, 4811, 12044)
            ),
            (
                2,
                vec!["msg_01Kc3WnF7pT9xR5mLyB2hJ8G".to_owned()],
                usage(5, 41, 310, 16855)
            ),
        ]
    );
    assert_eq!(parser.counted_usage(), usage(8, 128, 5121, 28899));
    assert_eq!(parser.malformed_lines(), 0);
    assert_eq!(parser.unknown_lines(), 0);
}

#[test]
fn repeated_partial_usage_is_counted_once_at_its_final_value() {
    // The first message's two lines carry output 2 then 87: a sum would say
    // 89, the first copy 2.
    let (facts, _) = parse("two-turns-with-tools.jsonl");
    let first = usage_reports(&facts)
        .first()
        .map(|(_, _, u)| u.output_tokens);
    assert_eq!(first, Some(87));
}

#[test]
fn a_message_repeated_after_its_turn_is_not_billed_again() {
    let text = fixture("two-turns-with-tools.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    // The first message's complete line again, after the tool result.
    let mut replayed = lines[..4].to_vec();
    replayed.push(lines[2]);
    replayed.extend_from_slice(&lines[4..]);
    let (facts, _) = parse_text(&replayed.join("\n"));
    let (expected, _) = parse("two-turns-with-tools.jsonl");
    assert_eq!(usage_reports(&facts), usage_reports(&expected));
}

#[test]
fn the_session_is_bound_right_after_the_first_completed_turn() {
    let (facts, _) = parse("two-turns-with-tools.jsonl");
    assert_eq!(
        kinds(&facts),
        [
            "started", "text", "usage", "bound", "text", "usage", "text", "finished"
        ]
    );
    assert!(facts.contains(&AgentFact::SessionBound {
        session_id: "5b0f6f0e-2c1d-4f7a-9e3b-7d4c2a1e8f90".into()
    }));
}

#[test]
fn a_successful_result_reports_cost_turns_and_both_usages() {
    let (facts, _) = parse("two-turns-with-tools.jsonl");
    let Some(AgentFact::Finished {
        is_error,
        subtype,
        total_cost_usd,
        num_turns,
        duration_ms,
        reported_usage,
        counted_usage,
        outcome,
        result_text,
    }) = finished(&facts).cloned()
    else {
        panic!("no Finished fact in {facts:?}");
    };
    assert!(!is_error);
    assert_eq!(subtype.as_deref(), Some("success"));
    assert_eq!(total_cost_usd, Some(0.02981745));
    assert_eq!(num_turns, Some(2));
    assert_eq!(duration_ms, Some(14873));
    assert_eq!(reported_usage, Some(usage(8, 128, 5121, 28899)));
    assert_eq!(counted_usage, usage(8, 128, 5121, 28899));
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(result_text.is_some_and(|t| t.starts_with("One test fails")));
}

#[test]
fn the_real_cli_without_login_fails_although_its_subtype_says_success() {
    let (facts, parser) = parse("no-login.jsonl");
    assert!(matches!(
        facts.first(),
        Some(AgentFact::SessionStarted { session_id, model, .. })
            if session_id == "0f8e3c52-6a4b-4d1e-9c7a-2b5d8e1f4a63"
                && model.as_deref() == Some("claude-opus-4-8[1m]")
    ));
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: "Not logged in · Please run /login".into()
        })
    );
    // The synthetic message's zero usage is a turn, but an error result
    // binds nothing.
    assert_eq!(usage_reports(&facts).len(), 1);
    assert!(!parser.is_bound());
    assert!(
        !facts
            .iter()
            .any(|f| matches!(f, AgentFact::SessionBound { .. }))
    );
    assert!(facts.contains(&AgentFact::TextChunk {
        role: TextRole::Assistant,
        text: "Not logged in · Please run /login".into()
    }));
    assert_eq!(parser.malformed_lines() + parser.unknown_lines(), 0);
}

#[test]
fn the_2_1_332_cli_without_login_fails_with_its_text_and_the_session_id() {
    let (facts, parser) = parse("no-login-2.1.332.jsonl");
    assert_eq!(
        facts.first(),
        Some(&AgentFact::SessionStarted {
            session_id: "3c9a4f1e-7b2d-4e8a-9f60-1d5b7c2e8a94".into(),
            model: Some("claude-opus-5-5".into()),
            cwd: Some("/work/main/.local/tmp/rec/claude".into()),
        })
    );
    assert_eq!(
        kinds(&facts),
        ["started", "text", "usage", "text", "finished"]
    );
    let Some(AgentFact::Finished {
        is_error,
        subtype,
        result_text,
        counted_usage,
        outcome,
        ..
    }) = finished(&facts).cloned()
    else {
        panic!("no Finished fact in {facts:?}");
    };
    assert!(is_error);
    assert_eq!(subtype.as_deref(), Some("success"));
    assert_eq!(
        result_text.as_deref(),
        Some("Not logged in · Please run /login")
    );
    assert_eq!(counted_usage, usage(0, 0, 0, 0));
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: "Not logged in · Please run /login".into()
        }
    );
    assert!(!parser.is_bound());
    assert_eq!(parser.lines_seen(), 3);
    assert_eq!(parser.malformed_lines() + parser.unknown_lines(), 0);
}

#[test]
fn a_resume_of_an_unknown_session_fails_with_the_errors_text() {
    let (facts, parser) = parse("resume-unknown-session.jsonl");
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: "No conversation found with session ID: 11111111-2222-4333-8444-555555555555"
                .into()
        })
    );
    assert!(usage_reports(&facts).is_empty());
    assert!(!parser.is_bound());
}

#[test]
fn a_usage_limit_waits_for_quota_until_the_reset_time() {
    let (facts, parser) = parse("rate-limited.jsonl");
    assert_eq!(
        outcome(&facts),
        Some(Outcome::RateLimited {
            resets_at: Some(1_764_208_800),
            message: "Claude AI usage limit reached|1764208800".into()
        })
    );
    // The tool turn before the limit was completed and counts.
    assert!(parser.is_bound());
    assert_eq!(usage_reports(&facts)[0].2, usage(4, 63, 2200, 9800));
}

#[test]
fn every_error_shape_maps_to_its_outcome() {
    let result = |fields: &str| {
        let line = format!(r#"{{"type":"result","session_id":"s",{fields}}}"#);
        let (facts, _) = parse_text(&line);
        outcome(&facts)
    };
    let failed = |reason: &str| {
        Some(Outcome::Failed {
            reason: reason.into(),
        })
    };
    let limited = |resets_at: Option<i64>, message: &str| {
        Some(Outcome::RateLimited {
            resets_at,
            message: message.into(),
        })
    };
    let cases = [
        (
            r#""subtype":"success","is_error":false,"result":"ok""#,
            Some(Outcome::Succeeded),
        ),
        // is_error decides, whatever the subtype says, both ways.
        (
            r#""subtype":"error_max_turns","is_error":false"#,
            Some(Outcome::Succeeded),
        ),
        (
            r#""subtype":"success","is_error":true,"result":"Invalid API key · Please run /login""#,
            failed("Invalid API key · Please run /login"),
        ),
        (
            r#""subtype":"error_during_execution","is_error":true"#,
            failed("error_during_execution"),
        ),
        // No is_error at all: the subtype is all there is.
        (r#""subtype":"error_max_turns""#, failed("error_max_turns")),
        (r#""is_error":true,"errors":["a","b"]"#, failed("a; b")),
        (
            r#""is_error":true,"result":"Claude AI usage limit reached|1760000000""#,
            limited(
                Some(1_760_000_000),
                "Claude AI usage limit reached|1760000000",
            ),
        ),
        (
            r#""is_error":true,"result":"5-hour limit reached ∙ resets 3pm""#,
            limited(None, "5-hour limit reached ∙ resets 3pm"),
        ),
        (
            r#""is_error":true,"result":"API Error: 429 rate_limit_error""#,
            limited(None, "API Error: 429 rate_limit_error"),
        ),
        (
            r#""is_error":true,"api_error_status":429,"result":"API Error""#,
            limited(None, "API Error"),
        ),
        (
            r#""is_error":true,"result":"API Error: 529 Overloaded""#,
            failed("API Error: 529 Overloaded"),
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(result(fields), expected, "{fields}");
    }
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_change_nothing() {
    let clean = fixture("two-turns-with-tools.jsonl");
    let mut noisy: Vec<String> = Vec::new();
    for (i, line) in clean.lines().enumerate() {
        noisy.push(line.to_owned());
        if i == 1 {
            noisy.push("{\"type\":\"assistant\",\"message\":".into()); // cut short
            noisy.push("npm WARN something".into());
            noisy.push(r#"{"type":"telemetry","ok":true}"#.into());
            noisy.push(String::new());
        }
    }
    let (noisy_facts, parser) = parse_text(&noisy.join("\n"));
    let (clean_facts, _) = parse_text(&clean);
    assert_eq!(noisy_facts, clean_facts);
    assert_eq!(parser.malformed_lines(), 2);
    assert_eq!(parser.unknown_lines(), 1);
}

#[test]
fn reading_a_transcript_again_gives_the_same_facts() {
    for name in [
        "two-turns-with-tools.jsonl",
        "rate-limited.jsonl",
        "no-login.jsonl",
        "no-login-2.1.332.jsonl",
    ] {
        let (first, _) = parse(name);
        let (second, _) = parse(name);
        assert_eq!(first, second, "{name}");
    }
}

#[test]
fn progress_ends_at_the_result_line() {
    let (_, parser) = parse("two-turns-with-tools.jsonl");
    assert_eq!(parser.last_progress_line(), 6);
    assert_eq!(parser.lines_seen(), 6);
}

#[test]
fn facts_serialise_with_a_tag() {
    let (facts, _) = parse("rate-limited.jsonl");
    let json = serde_json::to_string(&facts).unwrap_or_default();
    assert!(json.contains(r#""fact":"usage_reported""#));
    assert!(json.contains(r#""kind":"rate_limited""#));
    let back: Vec<AgentFact> = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, facts);
}
