//! One run of the simulated agent: check the session, take the script's
//! turns, end as the script says.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::args::{Cli, OutputFormat};
use crate::process::{hang_forever, start_misbehaving};
use crate::replay::replay;
use crate::script::{Script, ScriptError, Tokens};
use crate::session_store::{SessionError, SessionRecord, SessionStore};
use crate::stream::{
    AssistantMessage, DEFAULT_MODEL, RunResult, SYNTHETIC_MODEL, add_tokens, assistant_lines,
    init_line, no_conversation_line, result_line, tool_result_line, usage_limit_message,
};

/// The smallest wait between turns of a `run_for_ms` script, so that a
/// long run does not print as fast as it can.
const MIN_TIMED_TURN_DELAY: Duration = Duration::from_millis(20);

/// A run that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The command line is not one the real CLI would accept.
    #[error("{0}")]
    Usage(&'static str),
    /// The script is not valid.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The session cannot be used.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The recording to replay could not be read.
    #[error("cannot read the replay file {path}: {source}")]
    Replay {
        /// The file, as the script names it.
        path: PathBuf,
        /// Why it could not be opened or read.
        #[source]
        source: io::Error,
    },
    /// Reading stdin or writing stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Runs the agent; returns its exit code (errors exit 1, as the real CLI).
/// A `hang` script never returns. A script with a `replay` (from the
/// prompt: one from the environment is replayed before the command line is
/// parsed) replays it instead; `stderr` is only written then.
pub fn run(
    cli: &Cli,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, SimError> {
    let started = Instant::now();
    if !cli.print {
        return Err(SimError::Usage(
            "the simulated agent runs only in print mode (-p)",
        ));
    }
    if cli.output_format == OutputFormat::StreamJson && !cli.verbose {
        return Err(SimError::Usage(
            "When using --print, --output-format=stream-json requires --verbose",
        ));
    }
    let prompt = match &cli.prompt {
        Some(prompt) => prompt.clone(),
        None => {
            let mut prompt = String::new();
            stdin.read_to_string(&mut prompt)?;
            prompt
        }
    };
    let script = Script::resolve(cli.script.as_deref(), &prompt)?.for_run(cli.resume.is_some());
    if script.replay.is_some() {
        return replay(&script, stdout, stderr);
    }
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let store = SessionStore::under_home(&cli.home.clone().unwrap_or_else(|| PathBuf::from(".")));
    let mut out = Printer::new(stdout, cli.output_format);
    let mut session = match &cli.resume {
        Some(id) => match store.resume(id) {
            Ok(record) => record,
            Err(SessionError::NotFound(id)) => {
                out.emit(&no_conversation_line(&id, &new_id()))?;
                out.finish()?;
                return Err(SessionError::NotFound(id).into());
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            let id = cli.session_id.clone().unwrap_or_else(new_id);
            store.create(&id, &cwd)?
        }
    };
    let model = cli
        .model
        .clone()
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());

    let grandchildren = start_misbehaving(script.grandchildren, script.ignore_sigterm)?;
    out.emit(&init_line(&session.session_id, &model, &cwd, &new_id()))?;
    if let Some(pids) = grandchildren {
        out.emit(&json!({"type": "sim", "grandchildren": pids}))?;
    }

    let mut turns = TurnRunner {
        script: &script,
        model: &model,
        store: &store,
        session: &mut session,
        used: Tokens {
            input: 0,
            output: 0,
            cache_creation: 0,
            cache_read: 0,
        },
        completed: 0,
    };
    let planned = script.planned_turns();
    let time_left = |started: Instant| {
        script
            .run_for_ms
            .is_some_and(|ms| started.elapsed() < Duration::from_millis(ms))
    };
    let mut final_done = planned == 0 && script.run_for_ms.is_none();
    loop {
        if script.crash_exit_code.is_some() && turns.completed == script.crash_after_turns {
            break;
        }
        let more_time = time_left(started);
        let more = if script.rate_limit.is_some() {
            turns.completed < planned || more_time
        } else {
            !final_done
        };
        if !more {
            break;
        }
        turns.pause(script.run_for_ms.is_some());
        let last = script.rate_limit.is_none()
            && turns.completed.saturating_add(1) >= planned
            && !time_left(started);
        turns.take_turn(&mut out, last)?;
        final_done = last;
    }
    if let Some(code) = script.crash_exit_code {
        out.flush()?;
        return Ok(code);
    }
    if script.hang {
        out.flush()?;
        hang_forever();
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let used = turns.used;
    let completed = turns.completed;
    if let Some(resets_in) = script.rate_limit {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let message = usage_limit_message(now.saturating_add(resets_in));
        let synthetic = AssistantMessage {
            session_id: &session.session_id,
            message_id: &new_id(),
            model: SYNTHETIC_MODEL,
            text: &message,
            tool_use: None,
            usage: Tokens {
                input: 0,
                output: 0,
                cache_creation: 0,
                cache_read: 0,
            },
            error: Some("rate_limit"),
        };
        for line in assistant_lines(&synthetic, 1, &[new_id()]) {
            out.emit(&line)?;
        }
        let result = RunResult {
            session_id: &session.session_id,
            is_error: true,
            text: &message,
            api_error_status: Some(429),
            num_turns: completed.saturating_add(1),
            duration_ms,
            usage: used,
        };
        out.emit(&result_line(&result, &new_id()))?;
        out.finish()?;
        return Ok(1);
    }
    let text = script.text.as_deref().unwrap_or(DEFAULT_REPLY);
    let result = RunResult {
        session_id: &session.session_id,
        is_error: false,
        text: if completed == 0 { "" } else { text },
        api_error_status: None,
        num_turns: completed,
        duration_ms,
        usage: used,
    };
    out.emit(&result_line(&result, &new_id()))?;
    out.finish()?;
    Ok(0)
}

const DEFAULT_REPLY: &str = "Done: the simulated task is complete.";
const TOOL_PREAMBLE: &str = "Let me look at the project first.";
const TOOL_COMMAND: &str = "ls";
const TOOL_OUTPUT: &str = "Cargo.toml\nREADME.md\nsrc";

/// Takes turns and saves the session after each.
struct TurnRunner<'a> {
    script: &'a Script,
    model: &'a str,
    store: &'a SessionStore,
    session: &'a mut SessionRecord,
    used: Tokens,
    completed: u32,
}

impl TurnRunner<'_> {
    fn pause(&self, timed: bool) {
        let mut delay = Duration::from_millis(self.script.turn_delay_ms);
        if timed {
            delay = delay.max(MIN_TIMED_TURN_DELAY);
        }
        if !delay.is_zero() {
            thread::sleep(delay);
        }
    }

    /// One turn: an assistant message, then either a tool call and its
    /// result, or (`last`) the final reply. The turn is saved once done.
    fn take_turn(&mut self, out: &mut Printer<'_>, last: bool) -> Result<(), SimError> {
        let message_id = format!("msg_{}", Uuid::now_v7().simple());
        let tool_use_id = format!("toolu_{}", Uuid::now_v7().simple());
        let lines = self.script.lines_per_message();
        let uuids: Vec<String> = (0..lines.max(2)).map(|_| new_id()).collect();
        let message = AssistantMessage {
            session_id: &self.session.session_id,
            message_id: &message_id,
            model: self.model,
            text: if last {
                self.script.text.as_deref().unwrap_or(DEFAULT_REPLY)
            } else {
                TOOL_PREAMBLE
            },
            tool_use: (!last).then_some((tool_use_id.as_str(), TOOL_COMMAND)),
            usage: self.script.tokens_per_turn,
            error: None,
        };
        for line in assistant_lines(&message, lines, &uuids) {
            out.emit(&line)?;
        }
        if !last {
            out.emit(&tool_result_line(
                &self.session.session_id,
                &tool_use_id,
                TOOL_OUTPUT,
                &new_id(),
            ))?;
        }
        self.used = add_tokens(self.used, self.script.tokens_per_turn);
        self.completed = self.completed.saturating_add(1);
        self.session.turns_saved = self.session.turns_saved.saturating_add(1);
        self.store.save(self.session)?;
        Ok(())
    }
}

/// Prints lines in the chosen format, flushing each, as the real CLI does
/// so that a reader sees progress as it happens.
struct Printer<'a> {
    out: &'a mut dyn Write,
    format: OutputFormat,
    result: Option<Value>,
}

impl<'a> Printer<'a> {
    fn new(out: &'a mut dyn Write, format: OutputFormat) -> Self {
        Self {
            out,
            format,
            result: None,
        }
    }

    fn emit(&mut self, line: &Value) -> io::Result<()> {
        if line["type"] == "result" {
            self.result = Some(line.clone());
        }
        if self.format == OutputFormat::StreamJson {
            writeln!(self.out, "{line}")?;
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Prints what the short formats print: the result, once.
    fn finish(&mut self) -> io::Result<()> {
        match (self.format, self.result.take()) {
            (OutputFormat::Json, Some(result)) => writeln!(self.out, "{result}")?,
            (OutputFormat::Text, Some(result)) => {
                let text = result["result"]
                    .as_str()
                    .or_else(|| result["errors"][0].as_str())
                    .unwrap_or_default();
                writeln!(self.out, "{text}")?;
            }
            _ => {}
        }
        self.out.flush()
    }
}

fn new_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}
