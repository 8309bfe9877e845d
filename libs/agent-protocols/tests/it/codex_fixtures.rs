use stratavore_agent_protocols::{
    AgentFact, AgentParser, CodexJsonParser, LineStats, Outcome, ParserStart, TextRole, TokenUsage,
};

use crate::{errors, finished, kinds, outcome, reported_total, usage, usage_reports};

const THREAD: &str = "019b4e2a-6c1f-7d30-a8e4-3f5c2d9b7a61";
const OFFLINE_THREAD: &str = "01a219d2-b4ed-74c1-9c13-845c8257eb45";

fn fixture(name: &str) -> String {
    crate::fixture("codex", name)
}

fn parse_text_from(baseline: TokenUsage, text: &str) -> (Vec<AgentFact>, CodexJsonParser) {
    let mut parser = CodexJsonParser::new(ParserStart {
        usage_baseline: baseline,
    });
    let facts = crate::fold(&mut parser, text);
    (facts, parser)
}

fn parse(name: &str) -> (Vec<AgentFact>, CodexJsonParser) {
    parse_text_from(TokenUsage::default(), &fixture(name))
}

#[test]
fn a_run_with_tools_reports_its_one_turn_with_cached_input_inside_input() {
    let (facts, parser) = parse("tools-and-messages.jsonl");
    // input 48213 of which 40960 cached; reasoning 1152 already in the 1874.
    assert_eq!(
        usage_reports(&facts),
        vec![(1, vec!["turn-1".to_owned()], usage(7253, 1874, 0, 40960))]
    );
    assert_eq!(parser.counted_usage(), usage(7253, 1874, 0, 40960));
    assert_eq!(parser.thread_usage_total(), usage(7253, 1874, 0, 40960));
    assert_eq!(
        kinds(&facts),
        [
            "started", "text", "error", "text", "usage", "bound", "finished"
        ]
    );
    assert!(facts.contains(&AgentFact::SessionBound {
        session_id: THREAD.into()
    }));
    assert_eq!(
        parser.stats(),
        LineStats {
            lines_seen: 16,
            last_progress_line: 16,
            malformed_lines: 0,
            unknown_lines: 0,
        }
    );
}

#[test]
fn a_completed_run_succeeds_with_its_last_agent_message_and_no_cost() {
    let (facts, _) = parse("tools-and-messages.jsonl");
    let Some(AgentFact::Finished {
        is_error,
        subtype,
        result_text,
        total_cost_usd,
        num_turns,
        duration_ms,
        reported_usage,
        counted_usage,
        outcome,
    }) = finished(&facts).cloned()
    else {
        panic!("no Finished fact in {facts:?}");
    };
    assert!(!is_error);
    assert_eq!(subtype, None);
    assert_eq!(
        result_text.as_deref(),
        Some(
            "Fixed: `split_lines` now keeps a final line without a newline. All 12 parser tests pass."
        )
    );
    assert_eq!(total_cost_usd, None);
    assert_eq!(num_turns, None);
    assert_eq!(duration_ms, None);
    assert_eq!(reported_usage, None);
    assert_eq!(counted_usage, usage(7253, 1874, 0, 40960));
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(facts.contains(&AgentFact::TextChunk {
        role: TextRole::Assistant,
        text: "The parser drops the last line when it has no newline; fixing `split_lines`.".into()
    }));
}

#[test]
fn a_retry_in_the_middle_of_a_run_is_reported_but_is_not_progress() {
    let text = fixture("tools-and-messages.jsonl");
    let mut parser = CodexJsonParser::new(ParserStart::default());
    let mut progress = Vec::new();
    for line in text.lines() {
        parser.feed(line);
        progress.push(parser.stats().last_progress_line);
    }
    // Lines 1-2 (thread, turn) are no progress; line 12, the retry, keeps
    // line 11's.
    assert_eq!(
        progress,
        [0, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 13, 14, 15, 16]
    );
}

#[test]
fn a_resume_counts_from_the_threads_last_total_so_nothing_is_billed_twice() {
    let (first, first_parser) = parse("tools-and-messages.jsonl");
    let baseline = first_parser.thread_usage_total();
    let (resumed, resumed_parser) =
        parse_text_from(baseline, &fixture("resume-tools-and-messages.jsonl"));
    // The resume's turn.completed says 112596 input (99328 cached) and 2990
    // output for the whole thread; the resume itself spent the difference.
    assert_eq!(
        usage_reports(&resumed),
        vec![(1, vec!["turn-1".to_owned()], usage(6015, 1116, 0, 58368))]
    );
    assert_eq!(resumed_parser.counted_usage(), usage(6015, 1116, 0, 58368));
    // Both runs together: exactly the thread's last running total.
    let together = reported_total(&first).saturating_add(reported_total(&resumed));
    assert_eq!(together, usage(13268, 2990, 0, 99328));
    assert_eq!(resumed_parser.thread_usage_total(), together);
    assert!(resumed.contains(&AgentFact::SessionStarted {
        session_id: THREAD.into(),
        model: None,
        cwd: None,
    }));
    assert_eq!(outcome(&resumed), Some(Outcome::Succeeded));
}

#[test]
fn a_resume_without_its_baseline_would_bill_the_first_run_again() {
    let (first, _) = parse("tools-and-messages.jsonl");
    let (resumed, _) = parse("resume-tools-and-messages.jsonl");
    // What the launch's baseline prevents: the thread's whole history
    // counted a second time.
    assert_eq!(reported_total(&resumed), usage(13268, 2990, 0, 99328));
    assert_eq!(
        reported_total(&first).saturating_add(reported_total(&resumed)),
        usage(20521, 4864, 0, 140288)
    );
}

#[test]
fn a_running_total_below_the_baseline_restarted_and_counts_whole() {
    // The thread of turn-failed.jsonl, resumed after its context-window
    // overflow: Codex zeroed its counters then, so the report (23140 input,
    // 9216 cached, 812 output) is below the total the launch carried.
    let before_overflow = usage(61284, 3650, 0, 180224);
    let (facts, parser) = parse_text_from(before_overflow, &fixture("resume-after-overflow.jsonl"));
    assert_eq!(
        usage_reports(&facts),
        vec![(1, vec!["turn-1".to_owned()], usage(13924, 812, 0, 9216))]
    );
    assert_eq!(parser.thread_usage_total(), usage(13924, 812, 0, 9216));
    assert_eq!(outcome(&facts), Some(Outcome::Succeeded));
}

#[test]
fn the_real_cli_offline_names_the_thread_and_reports_every_retry_without_progress() {
    let (facts, parser) = parse("offline-0.171.0.jsonl");
    assert_eq!(
        facts.first(),
        Some(&AgentFact::SessionStarted {
            session_id: OFFLINE_THREAD.into(),
            model: None,
            cwd: None,
        })
    );
    let dns = "stream disconnected before completion: failed to lookup address information: \
               Name does not resolve";
    let waiting = "Reconnecting... waiting for network (Connection failed: error sending request)";
    let mut expected: Vec<String> = (2..=5)
        .map(|n| format!("Reconnecting... {n}/5 ({dns})"))
        .collect();
    expected.push(format!(
        "Falling back from WebSockets to HTTPS transport. {dns}"
    ));
    expected.extend(std::iter::repeat_n(waiting.to_owned(), 3));
    assert_eq!(errors(&facts), expected);
    // No turn ended: no usage, no binding, no Finished (the exit status
    // and the stall timer decide).
    assert_eq!(kinds(&facts).len(), 9);
    assert!(!parser.is_bound());
    assert_eq!(
        parser.stats(),
        LineStats {
            lines_seen: 10,
            last_progress_line: 0,
            malformed_lines: 0,
            unknown_lines: 0,
        }
    );
}

#[test]
fn however_many_retries_follow_offline_progress_stays_at_zero() {
    let text = fixture("offline-0.171.0.jsonl");
    let last = text.lines().last().unwrap_or_default().to_owned();
    let mut parser = CodexJsonParser::new(ParserStart::default());
    let mut reported = 0;
    for line in text.lines().chain(std::iter::repeat_n(last.as_str(), 1000)) {
        reported += errors(&parser.feed(line)).len();
    }
    assert_eq!(reported, 1008);
    assert_eq!(parser.stats().lines_seen, 1010);
    assert_eq!(parser.stats().last_progress_line, 0);
    assert!(parser.finish().is_empty());
}

#[test]
fn the_real_cli_resuming_offline_names_the_same_thread() {
    let (facts, parser) = parse("resume-offline-0.171.0.jsonl");
    assert_eq!(
        facts.first(),
        Some(&AgentFact::SessionStarted {
            session_id: OFFLINE_THREAD.into(),
            model: None,
            cwd: None,
        })
    );
    assert_eq!(errors(&facts).len(), 8);
    assert!(usage_reports(&facts).is_empty());
    assert_eq!(outcome(&facts), None);
    assert_eq!(parser.stats().last_progress_line, 0);
}

#[test]
fn the_real_cli_resuming_an_unknown_thread_prints_nothing() {
    let (facts, parser) = parse("resume-unknown-thread-0.171.0.jsonl");
    assert!(facts.is_empty());
    assert_eq!(parser.stats(), LineStats::default());
}

#[test]
fn a_failed_turn_fails_the_run_with_codexs_message_and_binds_nothing() {
    let (facts, parser) = parse("turn-failed.jsonl");
    let message = "Codex ran out of room in the model's context window. Start a new thread or \
                   clear earlier history before retrying.";
    assert_eq!(kinds(&facts), ["started", "error", "finished"]);
    assert_eq!(errors(&facts), [message]);
    assert_eq!(
        outcome(&facts),
        Some(Outcome::Failed {
            reason: message.into()
        })
    );
    assert!(matches!(
        finished(&facts),
        Some(AgentFact::Finished { is_error: true, result_text: Some(text), counted_usage, .. })
            if text == message && counted_usage.is_zero()
    ));
    assert!(!parser.is_bound());
    assert_eq!(parser.stats().last_progress_line, 7);
}

#[test]
fn every_error_shape_maps_to_its_outcome() {
    let limited = |message: &str| {
        Some(Outcome::RateLimited {
            resets_at: None,
            message: message.into(),
        })
    };
    assert_eq!(
        outcome(&parse("usage-limit.jsonl").0),
        limited(
            "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit \
             https://chatgpt.com/codex/settings/usage to purchase more credits or try again at \
             3:28 PM."
        )
    );
    assert_eq!(
        outcome(&parse("rate-limited-429.jsonl").0),
        limited(
            "exceeded retry limit, last status: 429 Too Many Requests, request id: \
             req_8f3b1c2d4e5a6978"
        )
    );
    assert_eq!(
        outcome(&parse("turn-failed.jsonl").0),
        Some(Outcome::Failed {
            reason: "Codex ran out of room in the model's context window. Start a new thread or \
                     clear earlier history before retrying."
                .into()
        })
    );
    assert_eq!(
        outcome(&parse("tools-and-messages.jsonl").0),
        Some(Outcome::Succeeded)
    );
    assert_eq!(outcome(&parse("offline-0.171.0.jsonl").0), None);
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_change_nothing() {
    let clean = fixture("tools-and-messages.jsonl");
    let mut noisy: Vec<String> = Vec::new();
    for (i, line) in clean.lines().enumerate() {
        noisy.push(line.to_owned());
        if i == 4 {
            noisy.push(r#"{"type":"item.completed","item":"#.into()); // cut short
            noisy.push("WARN codex_core::rollout: state db discrepancy".into());
            noisy.push(r#"{"type":"turn.failed"}"#.replace("turn.failed", "session.mystery"));
            noisy.push(r#"{"type":"error"}"#.into());
            noisy.push(String::new());
        }
    }
    let (noisy_facts, parser) = parse_text_from(TokenUsage::default(), &noisy.join("\n"));
    let (clean_facts, _) = parse("tools-and-messages.jsonl");
    assert_eq!(noisy_facts, clean_facts);
    assert_eq!(parser.stats().malformed_lines, 3);
    assert_eq!(parser.stats().unknown_lines, 1);
    assert_eq!(parser.stats().lines_seen, 21);
}

#[test]
fn reading_a_transcript_again_gives_the_same_facts() {
    for name in [
        "tools-and-messages.jsonl",
        "resume-tools-and-messages.jsonl",
        "turn-failed.jsonl",
        "usage-limit.jsonl",
        "rate-limited-429.jsonl",
        "offline-0.171.0.jsonl",
        "resume-after-overflow.jsonl",
    ] {
        let (first, _) = parse(name);
        let (second, _) = parse(name);
        assert_eq!(first, second, "{name}");
    }
}
