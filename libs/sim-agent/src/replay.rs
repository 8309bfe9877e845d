//! Replaying a recorded output: the simulated agent prints a fixture of a
//! real CLI (Claude Code, Codex, OpenCode, ...) line by line, so that the
//! runner and the parsers meet that CLI's real output with its timing,
//! exit code and misbehaviour, without the CLI, a login or the network.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::process::{hang_forever, start_misbehaving};
use crate::run::SimError;
use crate::script::Script;

/// Prints the lines of `script.replay` to `stdout` unchanged (byte for
/// byte, a last line without a newline included), flushing each and
/// waiting `replay_interval_ms` between two, then returns
/// `replay_exit_code`, or hangs when `hang` is set.
///
/// Grandchildren's pids go to `stderr` as one
/// `{"type":"sim","grandchildren":[..]}` line, so stdout stays the
/// recording's. A script without `replay` replays nothing and exits with
/// `replay_exit_code`.
pub fn replay(
    script: &Script,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, SimError> {
    // Opened before anything else, so a wrong path fails at once and alone.
    let recording = match &script.replay {
        Some(path) => Some((path, File::open(path).map_err(unreadable(path))?)),
        None => None,
    };
    if let Some(pids) = start_misbehaving(script.grandchildren, script.ignore_sigterm)? {
        writeln!(stderr, "{}", json!({"type": "sim", "grandchildren": pids}))?;
        stderr.flush()?;
    }
    if let Some((path, file)) = recording {
        let interval = Duration::from_millis(script.replay_interval_ms);
        print_lines(BufReader::new(file), path, interval, stdout)?;
    }
    if script.hang {
        hang_forever();
    }
    Ok(script.replay_exit_code)
}

fn print_lines(
    mut reader: impl BufRead,
    path: &Path,
    interval: Duration,
    stdout: &mut dyn Write,
) -> Result<(), SimError> {
    let mut line = Vec::new();
    for index in 0_u64.. {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(unreadable(path))?
            == 0
        {
            break;
        }
        if index > 0 && !interval.is_zero() {
            thread::sleep(interval);
        }
        stdout.write_all(&line)?;
        // A reader sees each line when it is printed, as with a live CLI.
        stdout.flush()?;
    }
    Ok(())
}

fn unreadable(path: &Path) -> impl FnOnce(io::Error) -> SimError {
    let path = path.to_owned();
    move |source| SimError::Replay { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_printed_byte_for_byte() {
        let bytes = b"{\"a\":1}\n\n  {\"b\": 2}\r\nno newline at the end";
        let mut out = Vec::new();
        let printed = print_lines(
            &bytes[..],
            Path::new("exact.jsonl"),
            Duration::ZERO,
            &mut out,
        );
        assert!(printed.is_ok());
        assert_eq!(out, bytes);
    }

    #[test]
    fn a_missing_recording_is_an_error_that_names_it() {
        let script = Script {
            replay: Some("/nonexistent/recording.jsonl".into()),
            ..Script::default()
        };
        let error = replay(&script, &mut Vec::new(), &mut Vec::new()).err();
        assert!(
            error
                .map(|e| e.to_string())
                .is_some_and(|e| e.contains("/nonexistent/recording.jsonl")),
        );
    }
}
