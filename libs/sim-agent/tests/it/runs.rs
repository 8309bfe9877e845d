use stratavore_agent_protocols::{AgentFact, Outcome, TokenUsage};

use crate::sim::{SimHome, new_session_id, parse, stderr, write_stdin};

fn usage_reports(facts: &[AgentFact]) -> Vec<TokenUsage> {
    facts
        .iter()
        .filter_map(|f| match f {
            AgentFact::UsageReported { usage, .. } => Some(*usage),
            _ => None,
        })
        .collect()
}

fn finished(facts: &[AgentFact]) -> Option<(bool, Option<u32>, Option<TokenUsage>, Outcome)> {
    facts.iter().find_map(|f| match f {
        AgentFact::Finished {
            is_error,
            num_turns,
            reported_usage,
            outcome,
            ..
        } => Some((*is_error, *num_turns, *reported_usage, outcome.clone())),
        _ => None,
    })
}

const DEFAULT_USAGE: TokenUsage = TokenUsage {
    input_tokens: 12,
    output_tokens: 34,
    cache_creation_input_tokens: 56,
    cache_read_input_tokens: 78,
};

#[test]
fn a_default_run_parses_into_one_bound_successful_turn() {
    let home = SimHome::new();
    let id = new_session_id();
    let output = home
        .command(Some("hello"), &["--session-id", &id, "--model", "opus"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let parsed = parse(&output.stdout);
    assert!(matches!(
        parsed.facts.first(),
        Some(AgentFact::SessionStarted { session_id, model, cwd })
            if *session_id == id && model.as_deref() == Some("opus") && cwd.is_some()
    ));
    assert_eq!(usage_reports(&parsed.facts), [DEFAULT_USAGE]);
    assert!(parsed.facts.contains(&AgentFact::SessionBound {
        session_id: id.clone()
    }));
    assert_eq!(
        finished(&parsed.facts),
        Some((false, Some(1), Some(DEFAULT_USAGE), Outcome::Succeeded))
    );
    assert_eq!(
        parsed.parser.malformed_lines() + parsed.parser.unknown_lines(),
        0
    );
    assert!(home.session_file(&id).exists());
}

#[test]
fn repeated_usage_lines_are_counted_once_per_message() {
    let home = SimHome::new();
    let script = r#"{"turns":3,"repeat_usage":4,
        "tokens_per_turn":{"input":100,"output":200,"cache_creation":300,"cache_read":400}}"#;
    let output = home.run(script, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let parsed = parse(&output.stdout);
    let per_turn = TokenUsage {
        input_tokens: 100,
        output_tokens: 200,
        cache_creation_input_tokens: 300,
        cache_read_input_tokens: 400,
    };
    assert_eq!(usage_reports(&parsed.facts), [per_turn; 3]);
    // 3 messages over 4 lines each, and 2 tool results: the repeats are real.
    let assistant_lines = parsed
        .stdout
        .lines()
        .filter(|l| l.contains(r#""type":"assistant""#))
        .count();
    assert_eq!(assistant_lines, 12);
    let totals = finished(&parsed.facts).and_then(|(_, _, reported, _)| reported);
    assert_eq!(
        totals,
        Some(per_turn.saturating_add(per_turn).saturating_add(per_turn))
    );
    assert_eq!(parsed.parser.counted_usage(), totals.unwrap_or_default());
}

#[test]
fn a_crash_exits_with_its_code_after_its_turns_and_prints_no_result() {
    let home = SimHome::new();
    let output = home.run(
        r#"{"turns":3,"crash_exit_code":137,"crash_after_turns":2}"#,
        &[],
    );
    assert_eq!(output.status.code(), Some(137 & 0xff));
    let parsed = parse(&output.stdout);
    assert_eq!(usage_reports(&parsed.facts).len(), 2);
    assert!(finished(&parsed.facts).is_none());
    assert!(parsed.parser.is_bound());
}

#[test]
fn a_rate_limit_ends_in_a_rate_limited_outcome_and_exit_1() {
    let home = SimHome::new();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let output = home.run(r#"{"rate_limit":3600}"#, &[]);
    assert_eq!(output.status.code(), Some(1));
    let parsed = parse(&output.stdout);
    let Some((
        true,
        _,
        _,
        Outcome::RateLimited {
            resets_at: Some(at),
            message,
        },
    )) = finished(&parsed.facts)
    else {
        panic!("not rate limited: {}", parsed.stdout);
    };
    assert!((before + 3600..=before + 3700).contains(&at), "{at}");
    assert!(message.starts_with("Claude AI usage limit reached|"));
    assert!(!parsed.parser.is_bound());
}

#[test]
fn a_prompt_on_stdin_is_read_to_its_end() {
    let home = SimHome::new();
    let output = write_stdin(
        &mut home.command(None, &[]),
        "sim:{\"turns\":2,\"text\":\"from stdin\"}\nand a second line\n",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let parsed = parse(&output.stdout);
    assert_eq!(usage_reports(&parsed.facts).len(), 2);
    assert!(
        parsed
            .facts
            .iter()
            .any(|f| matches!(f, AgentFact::TextChunk { text, .. } if text == "from stdin"))
    );
}

#[test]
fn a_script_in_the_prompt_is_used_without_the_environment() {
    let home = SimHome::new();
    let output = home
        .command(Some(r#"sim:{"turns":2} fix the bug"#), &[])
        .output()
        .expect("run");
    assert_eq!(usage_reports(&parse(&output.stdout).facts).len(), 2);
}

#[test]
fn a_timed_run_keeps_taking_turns_until_its_time_is_up() {
    let home = SimHome::new();
    let started = std::time::Instant::now();
    let output = home.run(r#"{"run_for_ms":300,"turn_delay_ms":50}"#, &[]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let parsed = parse(&output.stdout);
    assert!(usage_reports(&parsed.facts).len() >= 4, "{}", parsed.stdout);
    assert_eq!(
        finished(&parsed.facts).map(|f| f.3),
        Some(Outcome::Succeeded)
    );
}

#[test]
fn stream_json_without_verbose_is_refused_like_the_real_cli() {
    let home = SimHome::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stratavore-sim-agent"))
        .args(["-p", "hi", "--output-format", "stream-json"])
        .env("HOME", &home.path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("requires --verbose"));
    assert!(output.stdout.is_empty());
}
