use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sim::{SimHome, send_signal, stderr};

/// A few lines as `codex exec --json` prints them, with the odd bytes a
/// recording may hold: an empty line, trailing spaces, a CRLF and a last
/// line without a newline.
const CODEX_RECORDING: &str = concat!(
    r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}"#,
    "\n",
    r#"{"type":"turn.started"}"#,
    "\n\n",
    r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"Done."}}   "#,
    "\r\n",
    r#"{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}"#,
);

fn write_recording(home: &SimHome, text: &str) -> PathBuf {
    let path = home.path.join("recording.jsonl");
    std::fs::write(&path, text).expect("write the recording");
    path
}

fn script(recording: &Path, extra: &str) -> String {
    let path = serde_json::to_string(&recording.to_string_lossy()).expect("a JSON string");
    format!(r#"{{"replay":{path}{extra}}}"#)
}

/// The sim agent started as a profile's executable with `args`, the way
/// the supervisor starts the `codex` or `opencode` profile.
fn agent(home: &SimHome, args: &[&str], script: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stratavore-sim-agent"));
    command
        .args(args)
        .env("HOME", &home.path)
        .env("SIM_AGENT_SCRIPT", script)
        .current_dir(&home.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

const CODEX_RESUME: [&str; 6] = [
    "exec",
    "--json",
    "--skip-git-repo-check",
    "resume",
    "0199a213-81c0-7800-8aa1-bbab2a035a53",
    "fix the bug",
];

#[test]
fn a_replay_under_codex_arguments_prints_the_recording_byte_for_byte_and_exits_with_its_code() {
    let home = SimHome::new();
    let recording = write_recording(&home, CODEX_RECORDING);
    let output: Output = agent(
        &home,
        &CODEX_RESUME,
        &script(&recording, r#","replay_exit_code":3"#),
    )
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(output.stdout, CODEX_RECORDING.as_bytes());
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
    // A replay keeps no session.
    assert!(!home.path.join(".sim-agent").exists());
}

#[test]
fn a_replay_waits_its_interval_between_lines_under_opencode_arguments() {
    let home = SimHome::new();
    let text = "{\"type\":\"step_start\"}\n{\"type\":\"text\"}\n{\"type\":\"step_finish\"}\n";
    let recording = write_recording(&home, text);
    let mut child = agent(
        &home,
        &["run", "--format", "json", "say hi"],
        &script(&recording, r#","replay_interval_ms":150"#),
    )
    .spawn()
    .expect("spawn");
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while let Some(Ok(line)) = lines.next() {
        arrivals.push((line, started.elapsed()));
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let printed: Vec<&str> = arrivals.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(printed, text.lines().collect::<Vec<_>>());
    // Each line is flushed as printed: the last comes two intervals after
    // the first, not all at once at the end.
    let spread = arrivals[2].1.saturating_sub(arrivals[0].1);
    assert!(spread >= Duration::from_millis(250), "{spread:?}");
}

#[test]
fn a_replay_in_the_prompt_works_under_claude_arguments() {
    let home = SimHome::new();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../agent-protocols/tests/fixtures/claude/two-turns-with-tools.jsonl");
    let expected = std::fs::read(&fixture).expect("read the Claude fixture");
    let prompt = format!("sim:{} do it", script(&fixture, ""));
    let output = home.command(Some(&prompt), &[]).output().expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(output.stdout, expected);
}

#[test]
fn a_hanging_replay_that_ignores_sigterm_prints_its_lines_then_waits_for_sigkill() {
    let home = SimHome::new();
    let recording = write_recording(&home, "{\"n\":1}\n{\"n\":2}\n");
    let mut child = agent(
        &home,
        &CODEX_RESUME,
        &script(&recording, r#","hang":true,"ignore_sigterm":true"#),
    )
    .spawn()
    .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut read).expect("read a line");
    }
    assert_eq!(read, "{\"n\":1}\n{\"n\":2}\n");
    // SIGTERM is ignored before the first line is printed.
    send_signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "died of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    assert_eq!(child.wait().expect("wait").signal(), Some(9));
}

#[test]
fn a_replay_with_grandchildren_names_them_on_stderr_and_keeps_stdout_exact() {
    let home = SimHome::new();
    let recording = write_recording(&home, CODEX_RECORDING);
    let output = agent(
        &home,
        &CODEX_RESUME,
        &script(&recording, r#","grandchildren":true"#),
    )
    .output()
    .expect("run");
    assert_eq!(output.stdout, CODEX_RECORDING.as_bytes());
    let line: serde_json::Value = serde_json::from_slice(&output.stderr).expect("one JSON line");
    let pids: Vec<u32> = line["grandchildren"]
        .as_array()
        .expect("pids")
        .iter()
        .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect();
    for pid in &pids {
        send_signal(*pid, "KILL");
    }
    assert_eq!(pids.len(), 3);
}

#[test]
fn a_missing_recording_fails_naming_it_and_prints_nothing() {
    let home = SimHome::new();
    let missing = home.path.join("no-such-recording.jsonl");
    let output = agent(&home, &CODEX_RESUME, &script(&missing, ""))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output).contains("no-such-recording.jsonl"),
        "{}",
        stderr(&output)
    );
}
