use super::*;
use crate::Outcome;
use crate::TEXT_CHUNK_MAX_BYTES;

fn feed_all(parser: &mut ClaudeStreamParser, lines: &[&str]) -> Vec<AgentFact> {
    let mut facts: Vec<AgentFact> = lines.iter().flat_map(|l| parser.feed(l)).collect();
    facts.extend(parser.finish());
    facts
}

const INIT: &str = r#"{"type":"system","subtype":"init","session_id":"s1","model":"m","cwd":"/w"}"#;

fn assistant(id: &str, output: u64) -> String {
    format!(
        r#"{{"type":"assistant","message":{{"id":"{id}","model":"m","content":[{{"type":"text","text":"hi"}}],"usage":{{"input_tokens":5,"output_tokens":{output},"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}},"session_id":"s1"}}"#
    )
}

const TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"ok"}]},"session_id":"s1"}"#;

fn usage_turns(facts: &[AgentFact]) -> Vec<(u32, u64)> {
    facts
        .iter()
        .filter_map(|f| match f {
            AgentFact::UsageReported { turn, usage, .. } => Some((*turn, usage.output_tokens)),
            _ => None,
        })
        .collect()
}

#[test]
fn init_starts_the_session() {
    let mut parser = ClaudeStreamParser::new();
    assert_eq!(
        parser.feed(INIT),
        vec![AgentFact::SessionStarted {
            session_id: "s1".into(),
            model: Some("m".into()),
            cwd: Some("/w".into()),
        }]
    );
}

#[test]
fn usage_is_reported_when_the_turn_ends_not_per_line() {
    let mut parser = ClaudeStreamParser::new();
    parser.feed(INIT);
    let first = assistant("a", 1);
    let last = assistant("a", 9);
    assert!(usage_turns(&parser.feed(&first)).is_empty());
    assert!(usage_turns(&parser.feed(&last)).is_empty());
    assert_eq!(usage_turns(&parser.feed(TOOL_RESULT)), [(1, 9)]);
}

#[test]
fn the_session_is_bound_by_the_first_completed_turn_only() {
    let mut parser = ClaudeStreamParser::new();
    parser.feed(INIT);
    parser.feed(&assistant("a", 1));
    assert!(!parser.is_bound());
    let facts = parser.feed(TOOL_RESULT);
    assert!(facts.contains(&AgentFact::SessionBound {
        session_id: "s1".into()
    }));
    parser.feed(&assistant("b", 1));
    let again = parser.feed(TOOL_RESULT);
    assert!(
        !again
            .iter()
            .any(|f| matches!(f, AgentFact::SessionBound { .. }))
    );
}

#[test]
fn a_turn_open_at_the_end_is_reported_but_does_not_bind() {
    let mut parser = ClaudeStreamParser::new();
    let facts = feed_all(&mut parser, &[INIT, &assistant("a", 4)]);
    assert_eq!(usage_turns(&facts), [(1, 4)]);
    assert!(!parser.is_bound());
    assert!(parser.finish().is_empty());
}

#[test]
fn malformed_and_unknown_lines_are_counted_and_skipped() {
    let mut parser = ClaudeStreamParser::new();
    let facts = feed_all(
        &mut parser,
        &[
            "not json",
            "[1,2]",
            r#"{"type":"assistant"}"#,
            r#"{"type":"mystery"}"#,
            "",
            INIT,
        ],
    );
    assert_eq!(parser.malformed_lines(), 3);
    assert_eq!(parser.unknown_lines(), 1);
    assert_eq!(parser.lines_seen(), 6);
    assert_eq!(facts.len(), 1);
}

#[test]
fn progress_is_text_tool_results_and_results_not_other_lines() {
    let mut parser = ClaudeStreamParser::new();
    parser.feed(INIT);
    assert_eq!(parser.last_progress_line(), 0);
    parser.feed(&assistant("a", 1));
    assert_eq!(parser.last_progress_line(), 2);
    parser.feed(r#"{"type":"system","subtype":"api_retry"}"#);
    parser.feed("garbage");
    assert_eq!(parser.last_progress_line(), 2);
    parser.feed(TOOL_RESULT);
    assert_eq!(parser.last_progress_line(), 5);
}

#[test]
fn long_assistant_text_is_split_into_capped_chunks() {
    let text = "x".repeat(TEXT_CHUNK_MAX_BYTES * 2 + 1);
    let line = serde_json::json!({
        "type": "assistant",
        "message": {"id": "a", "content": [{"type": "text", "text": text}]}
    })
    .to_string();
    let mut parser = ClaudeStreamParser::new();
    let sizes: Vec<usize> = parser
        .feed(&line)
        .iter()
        .filter_map(|f| match f {
            AgentFact::TextChunk { text, .. } => Some(text.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [TEXT_CHUNK_MAX_BYTES, TEXT_CHUNK_MAX_BYTES, 1]);
}

#[test]
fn is_error_true_fails_even_with_subtype_success() {
    let mut parser = ClaudeStreamParser::new();
    let facts = parser.feed(
        r#"{"type":"result","subtype":"success","is_error":true,"result":"boom","num_turns":1}"#,
    );
    let outcome = facts.iter().find_map(|f| match f {
        AgentFact::Finished { outcome, .. } => Some(outcome.clone()),
        _ => None,
    });
    assert_eq!(
        outcome,
        Some(Outcome::Failed {
            reason: "boom".into()
        })
    );
}

#[test]
fn the_same_lines_give_the_same_facts() {
    let lines = [
        INIT.to_owned(),
        assistant("a", 1),
        assistant("b", 2),
        assistant("a", 3),
        TOOL_RESULT.to_owned(),
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1}"#.to_owned(),
    ];
    let run = || {
        let mut parser = ClaudeStreamParser::new();
        let mut facts: Vec<AgentFact> = lines.iter().flat_map(|l| parser.feed(l)).collect();
        facts.extend(parser.finish());
        serde_json::to_string(&facts).unwrap_or_default()
    };
    assert_eq!(run(), run());
    assert!(run().contains(r#""message_ids":["a","b"]"#));
}
