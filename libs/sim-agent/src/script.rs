//! The script that tells the simulated agent how to behave.

use std::path::PathBuf;

use serde::Deserialize;

/// The prefix that carries a script inside the prompt: `sim:{"turns":2}`.
pub const PROMPT_PREFIX: &str = "sim:";

/// How the simulated agent behaves; every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Script {
    /// Turns to run. Without it: 1, or 0 when `rate_limit` is set (a limit
    /// usually hits the first call). Every turn but the last calls a tool.
    pub turns: Option<u32>,
    /// Usage of each assistant message.
    pub tokens_per_turn: Tokens,
    /// Lines over which each assistant message is printed, with partial
    /// usage on all but the last, as the real CLI does.
    pub repeat_usage: u32,
    /// Wait before each turn, as a model's latency.
    pub turn_delay_ms: u64,
    /// Keep taking turns until this long after the start.
    pub run_for_ms: Option<u64>,
    /// Exit with this code, printing no result, after `crash_after_turns`.
    pub crash_exit_code: Option<i32>,
    /// Completed turns before the crash (0: right after init).
    pub crash_after_turns: u32,
    /// After the turns, sleep forever printing nothing.
    pub hang: bool,
    /// Ignore SIGTERM, so only SIGKILL ends the agent.
    pub ignore_sigterm: bool,
    /// End with a usage-limit error result that resets this many seconds
    /// from now, and exit 1.
    pub rate_limit: Option<u64>,
    /// On a resume (`--resume`), the limit has reset: `rate_limit` does
    /// not apply and the run finishes normally, as a real agent's resumed
    /// session does once its quota window is over.
    pub resume_succeeds: bool,
    /// Start `sleep` grandchildren (plain, `setsid`, `env -i`) and print
    /// their pids.
    pub grandchildren: bool,
    /// The assistant's final reply.
    pub text: Option<String>,
    /// A recorded output (a JSONL fixture of Claude Code, Codex, OpenCode,
    /// ...) to print instead of simulating: its lines go to stdout
    /// unchanged, then the agent exits with `replay_exit_code`. Only
    /// `hang`, `ignore_sigterm` and `grandchildren` still apply (their pids
    /// go to stderr, so stdout stays byte-identical); the turn, crash and
    /// rate-limit fields are not used. A relative path is taken from the
    /// agent's working folder.
    pub replay: Option<PathBuf>,
    /// Wait between two replayed lines.
    pub replay_interval_ms: u64,
    /// Exit code after a replay.
    pub replay_exit_code: i32,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            turns: None,
            tokens_per_turn: Tokens::default(),
            repeat_usage: 1,
            turn_delay_ms: 0,
            run_for_ms: None,
            crash_exit_code: None,
            crash_after_turns: 0,
            hang: false,
            ignore_sigterm: false,
            rate_limit: None,
            resume_succeeds: false,
            grandchildren: false,
            text: None,
            replay: None,
            replay_interval_ms: 0,
            replay_exit_code: 0,
        }
    }
}

/// Token counts of one assistant message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tokens {
    /// `input_tokens`.
    pub input: u64,
    /// `output_tokens`.
    pub output: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation: u64,
    /// `cache_read_input_tokens`.
    pub cache_read: u64,
}

impl Default for Tokens {
    /// Small but distinct values, so a test can tell the counters apart.
    fn default() -> Self {
        Self {
            input: 12,
            output: 34,
            cache_creation: 56,
            cache_read: 78,
        }
    }
}

/// A script that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// `SIM_AGENT_SCRIPT` is not a valid script.
    #[error("SIM_AGENT_SCRIPT is not a valid script: {0}")]
    FromEnv(#[source] serde_json::Error),
    /// The `sim:` prefix of the prompt is not followed by a valid script.
    #[error("the prompt's sim: script is not valid: {0}")]
    FromPrompt(#[source] serde_json::Error),
}

impl Script {
    /// The script from the environment's `SIM_AGENT_SCRIPT` if given, else
    /// from a `sim:` prefix of the prompt (text after the JSON is ignored),
    /// else the defaults.
    pub fn resolve(from_env: Option<&str>, prompt: &str) -> Result<Self, ScriptError> {
        if let Some(json) = from_env {
            return serde_json::from_str(json).map_err(ScriptError::FromEnv);
        }
        let Some(rest) = prompt.trim_start().strip_prefix(PROMPT_PREFIX) else {
            return Ok(Self::default());
        };
        serde_json::Deserializer::from_str(rest)
            .into_iter::<Self>()
            .next()
            .unwrap_or_else(|| serde_json::from_str("{}"))
            .map_err(ScriptError::FromPrompt)
    }

    /// The script of `SIM_AGENT_SCRIPT` when it asks for a replay, else
    /// None. Called before the command line is parsed: a replay stands in
    /// for any agent CLI, whose command line is not Claude Code's.
    pub fn replay_from_env(from_env: Option<&str>) -> Result<Option<Self>, ScriptError> {
        let Some(json) = from_env else {
            return Ok(None);
        };
        let script: Self = serde_json::from_str(json).map_err(ScriptError::FromEnv)?;
        Ok(script.replay.is_some().then_some(script))
    }

    /// The script as it applies to this run: a resume of a script with
    /// `resume_succeeds` runs without its rate limit.
    #[must_use]
    pub fn for_run(self, resuming: bool) -> Script {
        if resuming && self.resume_succeeds {
            Script {
                rate_limit: None,
                ..self
            }
        } else {
            self
        }
    }

    /// Turns to run: `turns`, else 1 (0 when a rate limit is set).
    #[must_use]
    pub fn planned_turns(&self) -> u32 {
        self.turns
            .unwrap_or(if self.rate_limit.is_some() { 0 } else { 1 })
    }

    /// Lines per assistant message, at least 1.
    #[must_use]
    pub fn lines_per_message(&self) -> u32 {
        self.repeat_usage.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_script_gives_one_small_successful_turn() {
        let script = Script::resolve(None, "hello").ok();
        assert_eq!(script, Some(Script::default()));
        assert_eq!(Script::default().planned_turns(), 1);
    }

    #[test]
    fn a_resume_that_succeeds_drops_the_rate_limit_and_only_on_a_resume() {
        let limited = Script {
            rate_limit: Some(60),
            resume_succeeds: true,
            ..Script::default()
        };
        assert_eq!(limited.clone().for_run(false).rate_limit, Some(60));
        assert_eq!(limited.clone().for_run(true).rate_limit, None);
        let always = Script {
            resume_succeeds: false,
            ..limited
        };
        assert_eq!(always.for_run(true).rate_limit, Some(60));
    }

    #[test]
    fn the_environment_wins_over_the_prompt() {
        let script = Script::resolve(Some(r#"{"turns":3}"#), r#"sim:{"turns":5}"#);
        assert_eq!(script.ok().and_then(|s| s.turns), Some(3));
    }

    #[test]
    fn a_prompt_prefix_is_read_and_trailing_text_ignored() {
        let script = Script::resolve(None, r#"sim:{"turns":2,"repeat_usage":3} then fix it"#);
        let script = script.ok();
        assert_eq!(script.as_ref().and_then(|s| s.turns), Some(2));
        assert_eq!(script.map(|s| s.lines_per_message()), Some(3));
    }

    #[test]
    fn a_misspelt_field_is_refused() {
        assert!(matches!(
            Script::resolve(Some(r#"{"turn":2}"#), ""),
            Err(ScriptError::FromEnv(_))
        ));
        assert!(matches!(
            Script::resolve(None, "sim:{nope"),
            Err(ScriptError::FromPrompt(_))
        ));
    }

    #[test]
    fn only_a_script_with_a_replay_is_a_replay() {
        let replay =
            Script::replay_from_env(Some(r#"{"replay":"out.jsonl","replay_exit_code":2}"#));
        let replay = replay.ok().flatten();
        assert_eq!(
            replay.as_ref().and_then(|s| s.replay.clone()),
            Some(PathBuf::from("out.jsonl"))
        );
        assert_eq!(
            replay.map(|s| (s.replay_interval_ms, s.replay_exit_code)),
            Some((0, 2))
        );
        assert!(matches!(
            Script::replay_from_env(Some(r#"{"turns":2}"#)),
            Ok(None)
        ));
        assert!(matches!(Script::replay_from_env(None), Ok(None)));
        assert!(matches!(
            Script::replay_from_env(Some("{nope")),
            Err(ScriptError::FromEnv(_))
        ));
    }

    #[test]
    fn a_rate_limit_alone_takes_no_turn() {
        let script = Script {
            rate_limit: Some(60),
            ..Script::default()
        };
        assert_eq!(script.planned_turns(), 0);
    }
}
