//! The lines the simulated agent prints, shaped as Claude Code's
//! `stream-json` (compared against recorded output of version 2.1.197).
//! Pure: ids and times come in as arguments.

use serde_json::{Value, json};

use crate::script::Tokens;

/// The model named when the launch names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5-20250929";

/// The version the simulated agent claims, marked as simulated.
pub const VERSION: &str = "2.1.197-sim";

/// The model of messages the CLI makes up itself, with no API call.
pub const SYNTHETIC_MODEL: &str = "<synthetic>";

/// `system`/`init`: the first line of every run.
#[must_use]
pub fn init_line(session_id: &str, model: &str, cwd: &str, uuid: &str) -> Value {
    json!({
        "type": "system",
        "subtype": "init",
        "cwd": cwd,
        "session_id": session_id,
        "tools": ["Bash", "Edit", "Read", "Write"],
        "mcp_servers": [],
        "model": model,
        "permissionMode": "default",
        "slash_commands": [],
        "apiKeySource": "none",
        "claude_code_version": VERSION,
        "output_style": "default",
        "agents": [],
        "plugins": [],
        "uuid": uuid,
    })
}

/// One assistant message to print.
#[derive(Debug, Clone)]
pub struct AssistantMessage<'a> {
    /// The session it belongs to.
    pub session_id: &'a str,
    /// `message.id`, the same on every line of the message.
    pub message_id: &'a str,
    /// `message.model`.
    pub model: &'a str,
    /// The reply text.
    pub text: &'a str,
    /// A tool call `(tool_use id, command)` after the text, if any.
    pub tool_use: Option<(&'a str, &'a str)>,
    /// The message's final usage.
    pub usage: Tokens,
    /// The top-level `error` field the CLI sets on API failures.
    pub error: Option<&'a str>,
}

/// Prints `message` over `lines` lines as the CLI does: one content block
/// per line, each with a copy of the usage. Copy `k` of `n` carries `k/n`
/// of every counter (the last one all of it), so only the largest value of
/// each counter is right. Extra lines carry `thinking` blocks first.
#[must_use]
pub fn assistant_lines(message: &AssistantMessage<'_>, lines: u32, uuids: &[String]) -> Vec<Value> {
    let mut blocks = vec![json!({"type": "text", "text": message.text})];
    if let Some((id, command)) = message.tool_use {
        blocks.push(json!({
            "type": "tool_use", "id": id, "name": "Bash",
            "input": {"command": command, "description": "Run a command"},
        }));
    }
    let lines = lines.max(1);
    let line_count = usize::try_from(lines).unwrap_or(usize::MAX);
    let per_line: Vec<Vec<Value>> = if line_count < blocks.len() {
        // Fewer lines than blocks: the CLI never splits a block, so one
        // line carries them all.
        vec![blocks]
    } else {
        let thinking = line_count - blocks.len();
        (0..thinking)
            .map(|_| vec![json!({"type": "thinking", "thinking": "Considering the request.", "signature": "sim"})])
            .chain(blocks.into_iter().map(|b| vec![b]))
            .collect()
    };
    let total = u64::try_from(per_line.len()).unwrap_or(u64::MAX);
    let last = per_line.len();
    per_line
        .into_iter()
        .enumerate()
        .map(|(index, content)| {
            let k = u64::try_from(index + 1).unwrap_or(u64::MAX);
            let stop_reason = if index + 1 == last {
                Some(if message.tool_use.is_some() {
                    "tool_use"
                } else {
                    "end_turn"
                })
            } else {
                None
            };
            let mut line = json!({
                "type": "assistant",
                "message": {
                    "id": message.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": message.model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": null,
                    "usage": usage_json(scaled(message.usage, k, total)),
                    "context_management": null,
                },
                "parent_tool_use_id": null,
                "session_id": message.session_id,
                "uuid": uuids.get(index).cloned().unwrap_or_default(),
            });
            if let (Some(error), Some(object)) = (message.error, line.as_object_mut()) {
                object.insert("error".into(), json!(error));
            }
            line
        })
        .collect()
}

/// The `user` line that carries a tool's result back to the model.
#[must_use]
pub fn tool_result_line(session_id: &str, tool_use_id: &str, output: &str, uuid: &str) -> Value {
    json!({
        "type": "user",
        "message": {"role": "user", "content": [
            {"tool_use_id": tool_use_id, "type": "tool_result", "content": output, "is_error": false}
        ]},
        "parent_tool_use_id": null,
        "session_id": session_id,
        "uuid": uuid,
        "tool_use_result": {"stdout": output, "stderr": "", "interrupted": false, "isImage": false},
    })
}

/// The final `result` line.
#[derive(Debug, Clone)]
pub struct RunResult<'a> {
    /// The session it belongs to.
    pub session_id: &'a str,
    /// `is_error`.
    pub is_error: bool,
    /// `result`.
    pub text: &'a str,
    /// `api_error_status` (429 for a limit).
    pub api_error_status: Option<u16>,
    /// Turns taken in this run.
    pub num_turns: u32,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Usage of every message of this run.
    pub usage: Tokens,
}

/// The final `result` line; like the real CLI, the subtype stays `success`
/// even for an API error, and `is_error` tells.
#[must_use]
pub fn result_line(result: &RunResult<'_>, uuid: &str) -> Value {
    json!({
        "type": "result",
        "subtype": "success",
        "is_error": result.is_error,
        "api_error_status": result.api_error_status,
        "duration_ms": result.duration_ms,
        "duration_api_ms": result.duration_ms,
        "num_turns": result.num_turns,
        "result": result.text,
        "stop_reason": if result.is_error { "stop_sequence" } else { "end_turn" },
        "session_id": result.session_id,
        "total_cost_usd": cost_usd(result.usage),
        "usage": usage_json(result.usage),
        "modelUsage": {},
        "permission_denials": [],
        "uuid": uuid,
    })
}

/// The CLI's answer to `--resume` of a session with no conversation: an
/// error result whose message is in `errors`, not `result`.
#[must_use]
pub fn no_conversation_line(session_id: &str, uuid: &str) -> Value {
    json!({
        "type": "result",
        "subtype": "error_during_execution",
        "duration_ms": 0,
        "duration_api_ms": 0,
        "is_error": true,
        "num_turns": 0,
        "stop_reason": null,
        "session_id": session_id,
        "total_cost_usd": 0,
        "usage": usage_json(Tokens { input: 0, output: 0, cache_creation: 0, cache_read: 0 }),
        "modelUsage": {},
        "permission_denials": [],
        "uuid": uuid,
        "errors": [no_conversation_message(session_id)],
    })
}

/// The CLI's words for a resume of a session with no saved turn.
#[must_use]
pub fn no_conversation_message(session_id: &str) -> String {
    format!("No conversation found with session ID: {session_id}")
}

/// The text of a usage-limit error, as older CLIs print it.
#[must_use]
pub fn usage_limit_message(resets_at_unix: u64) -> String {
    format!("Claude AI usage limit reached|{resets_at_unix}")
}

/// Counter-wise sum.
#[must_use]
pub fn add_tokens(a: Tokens, b: Tokens) -> Tokens {
    Tokens {
        input: a.input.saturating_add(b.input),
        output: a.output.saturating_add(b.output),
        cache_creation: a.cache_creation.saturating_add(b.cache_creation),
        cache_read: a.cache_read.saturating_add(b.cache_read),
    }
}

fn scaled(tokens: Tokens, k: u64, n: u64) -> Tokens {
    let part = |v: u64| v.saturating_mul(k) / n.max(1);
    Tokens {
        input: part(tokens.input),
        output: part(tokens.output),
        cache_creation: part(tokens.cache_creation),
        cache_read: part(tokens.cache_read),
    }
}

fn usage_json(tokens: Tokens) -> Value {
    json!({
        "input_tokens": tokens.input,
        "cache_creation_input_tokens": tokens.cache_creation,
        "cache_read_input_tokens": tokens.cache_read,
        "output_tokens": tokens.output,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
    })
}

/// Sonnet list prices per million tokens: input 3, output 15, cache
/// write 3.75, cache read 0.30.
fn cost_usd(tokens: Tokens) -> f64 {
    const PER_MILLION: [f64; 4] = [3.0, 15.0, 3.75, 0.30];
    let counts = [
        tokens.input,
        tokens.output,
        tokens.cache_creation,
        tokens.cache_read,
    ];
    counts
        .iter()
        .zip(PER_MILLION)
        .map(|(count, price)| *count as f64 * price / 1_000_000.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tool: bool) -> AssistantMessage<'static> {
        AssistantMessage {
            session_id: "s",
            message_id: "msg_1",
            model: "m",
            text: "hello",
            tool_use: tool.then_some(("toolu_1", "ls")),
            usage: Tokens {
                input: 10,
                output: 20,
                cache_creation: 30,
                cache_read: 40,
            },
            error: None,
        }
    }

    #[test]
    fn only_the_last_copy_carries_the_full_usage() {
        let lines = assistant_lines(&message(true), 4, &[]);
        let outputs: Vec<u64> = lines
            .iter()
            .filter_map(|l| l["message"]["usage"]["output_tokens"].as_u64())
            .collect();
        assert_eq!(outputs, [5, 10, 15, 20]);
        assert_eq!(lines[3]["message"]["content"][0]["type"], "tool_use");
        assert_eq!(lines[3]["message"]["stop_reason"], "tool_use");
        assert!(lines.iter().all(|l| l["message"]["id"] == "msg_1"));
    }

    #[test]
    fn one_line_carries_every_block() {
        let lines = assistant_lines(&message(true), 1, &[]);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0]["message"]["content"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn the_result_prices_the_usage() {
        let line = result_line(
            &RunResult {
                session_id: "s",
                is_error: false,
                text: "ok",
                api_error_status: None,
                num_turns: 1,
                duration_ms: 5,
                usage: Tokens {
                    input: 1_000_000,
                    output: 0,
                    cache_creation: 0,
                    cache_read: 0,
                },
            },
            "u",
        );
        assert_eq!(line["total_cost_usd"].as_f64(), Some(3.0));
        assert_eq!(line["api_error_status"], Value::Null);
    }
}
