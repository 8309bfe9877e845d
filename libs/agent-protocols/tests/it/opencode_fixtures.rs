use stratavore_agent_protocols::{
    AgentFact, AgentParser, LineStats, OpencodeJsonParser, Outcome, TextRole,
};

use crate::{errors, finished, kinds, outcome, usage, usage_reports};

fn fixture(name: &str) -> String {
    crate::fixture("opencode", name)
}

fn parse_text(text: &str) -> (Vec<AgentFact>, OpencodeJsonParser) {
    let mut parser = OpencodeJsonParser::new();
    let facts = crate::fold(&mut parser, text);
    (facts, parser)
}

fn parse(name: &str) -> (Vec<AgentFact>, OpencodeJsonParser) {
    parse_text(&fixture(name))
}

fn total_cost(facts: &[AgentFact]) -> Option<f64> {
    match finished(facts) {
        Some(AgentFact::Finished { total_cost_usd, .. }) => *total_cost_usd,
        _ => None,
    }
}

#[test]
fn three_steps_report_exact_totals_with_reasoning_as_output() {
    let (facts, parser) = parse("steps-text-and-tool.jsonl");
    assert_eq!(
        usage_reports(&facts),
        vec![
            (
                1,
                vec!["msg_c560e3d91001Hq2VbW7nLr4kTz".to_owned()],
                usage(1820, 96 + 64, 2048, 11264)
            ),
            (
                2,
                vec!["msg_c560e3e52002Jp8XcD1mQs6vUa".to_owned()],
                usage(412, 233, 0, 13312)
            ),
            (
                3,
                vec!["msg_c560e3f13003Kn5YeF3pRt8wVb".to_owned()],
                usage(95, 61 + 128, 0, 13696)
            ),
        ]
    );
    assert_eq!(parser.counted_usage(), usage(2327, 582, 2048, 38272));
    assert_eq!(
        parser.stats(),
        LineStats {
            lines_seen: 10,
            last_progress_line: 10,
            malformed_lines: 0,
            unknown_lines: 0,
        }
    );
}

#[test]
fn finished_steps_succeed_with_the_summed_cost_and_the_last_text() {
    let (facts, _) = parse("steps-text-and-tool.jsonl");
    assert_eq!(
        kinds(&facts),
        [
            "started", "text", "usage", "bound", "usage", "text", "usage", "finished"
        ]
    );
    assert_eq!(
        facts.first(),
        Some(&AgentFact::SessionStarted {
            session_id: "ses_3a9f1c27e6ffe1QvN4kR8tB2xY".into(),
            model: None,
            cwd: None,
        })
    );
    let Some(AgentFact::Finished {
        is_error,
        result_text,
        total_cost_usd,
        counted_usage,
        outcome,
        ..
    }) = finished(&facts).cloned()
    else {
        panic!("no Finished fact in {facts:?}");
    };
    assert!(!is_error);
    assert_eq!(
        result_text.as_deref(),
        Some("Fixed the off-by-one in `parseRange`; all 24 tests pass.")
    );
    // 0.0189192 + 0.0087246 + 0.0072288, as OpenCode priced each step.
    let cost = total_cost_usd.unwrap_or_default();
    assert!((cost - 0.0348726).abs() < 1e-12, "{cost}");
    assert_eq!(counted_usage, usage(2327, 582, 2048, 38272));
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(facts.contains(&AgentFact::TextChunk {
        role: TextRole::Assistant,
        text: "I'll run the tests first.".into()
    }));
}

#[test]
fn progress_is_text_tools_and_finished_steps_not_step_starts() {
    let text = fixture("steps-text-and-tool.jsonl");
    let mut parser = OpencodeJsonParser::new();
    let progress: Vec<u64> = text
        .lines()
        .map(|line| {
            parser.feed(line);
            parser.stats().last_progress_line
        })
        .collect();
    assert_eq!(progress, [0, 2, 3, 4, 4, 6, 7, 7, 9, 10]);
}

#[test]
fn an_error_after_a_finished_step_fails_the_run_and_keeps_the_steps_usage() {
    let (facts, parser) = parse("error-after-step.jsonl");
    let message = "prompt is too long: 213412 tokens > 200000 maximum";
    assert_eq!(
        kinds(&facts),
        ["started", "text", "usage", "bound", "error", "finished"]
    );
    assert_eq!(errors(&facts), [message]);
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: message.into()
        })
    );
    assert!(matches!(
        finished(&facts),
        Some(AgentFact::Finished { is_error: true, subtype: Some(name), .. }) if name == "APIError"
    ));
    assert_eq!(parser.counted_usage(), usage(2210, 140, 9800, 0));
    assert_eq!(total_cost(&facts), Some(0.04548));
    assert!(parser.is_bound());
    // The error line is no progress: the finished step was the last.
    assert_eq!(parser.stats().last_progress_line, 3);
}

#[test]
fn a_429_waits_for_quota_whatever_the_message_says() {
    let (facts, parser) = parse("quota-429.jsonl");
    assert_eq!(kinds(&facts), ["started", "error", "finished"]);
    assert_eq!(
        outcome(&facts),
        Some(Outcome::RateLimited {
            resets_at: None,
            message: "You exceeded your current quota, please check your plan and billing \
                      details."
                .into()
        })
    );
    assert!(usage_reports(&facts).is_empty());
    assert_eq!(total_cost(&facts), None);
    assert!(!parser.is_bound());
}

#[test]
fn the_real_cli_offline_prints_nothing_so_the_parser_reports_nothing() {
    let (facts, parser) = parse("offline-1.18.33.jsonl");
    assert!(facts.is_empty());
    assert_eq!(parser.stats(), LineStats::default());
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_change_nothing() {
    let clean = fixture("steps-text-and-tool.jsonl");
    let mut noisy: Vec<String> = Vec::new();
    for (i, line) in clean.lines().enumerate() {
        noisy.push(line.to_owned());
        if i == 3 {
            noisy.push(r#"{"type":"step_finish","sessionID":"x","part":"#.into()); // cut short
            noisy.push("Performing one time database migration...".into());
            noisy.push(r#"{"type":"step_finish","part":{"id":"p"}}"#.into());
            noisy.push(r#"{"type":"session.compacted"}"#.into());
        }
    }
    let (noisy_facts, parser) = parse_text(&noisy.join("\n"));
    let (clean_facts, _) = parse_text(&clean);
    assert_eq!(noisy_facts, clean_facts);
    assert_eq!(parser.stats().malformed_lines, 3);
    assert_eq!(parser.stats().unknown_lines, 1);
}

#[test]
fn reading_a_transcript_again_gives_the_same_facts() {
    for name in [
        "steps-text-and-tool.jsonl",
        "error-after-step.jsonl",
        "quota-429.jsonl",
        "offline-1.18.33.jsonl",
    ] {
        let (first, _) = parse(name);
        let (second, _) = parse(name);
        assert_eq!(first, second, "{name}");
    }
}
