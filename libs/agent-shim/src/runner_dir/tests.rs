use super::*;

/// A fresh directory under the workspace's `.local/tmp`, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.local/tmp/shim-tests")
            .join(format!("unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch dir");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn spec() -> ShimSpec {
    ShimSpec {
        argv: vec!["claude".into(), "-p".into()],
        cwd: "/srv/project".into(),
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        runner: "r-1".into(),
        attempt: 2,
        node: "node-a".into(),
        stdin: StdinSource::Prompt,
        term_grace_ms: 10_000,
        lease_grace_ms: 1_000,
        stdout_path: None,
        stderr_path: None,
    }
}

#[test]
fn spec_round_trips_and_names_its_mark() {
    let dir = ScratchDir::new("spec");
    spec().write(&dir.0).expect("write");
    assert_eq!(ShimSpec::read(&dir.0).expect("read"), spec());
    assert_eq!(spec().runner_mark(), "r-1:2");
}

#[test]
fn spec_without_lease_grace_gets_the_default() {
    let json = r#"{"argv":["a"],"cwd":"/","env":{},"runner":"r","attempt":1,
        "node":"n","stdin":"null","term_grace_ms":10000}"#;
    let parsed: ShimSpec = serde_json::from_str(json).expect("parse");
    assert_eq!(parsed.lease_grace_ms, 5_000);
    assert_eq!(parsed.stdin, StdinSource::Null);
}

#[test]
fn a_spec_without_transcript_paths_keeps_them_in_the_runner_directory() {
    let json = r#"{"argv":["a"],"cwd":"/","env":{},"runner":"r","attempt":1,
        "node":"n","stdin":"null","term_grace_ms":10000}"#;
    let parsed: ShimSpec = serde_json::from_str(json).expect("parse");
    let dir = Path::new("/data/runners/r/1");
    assert_eq!(parsed.stdout_file(dir), dir.join(STDOUT_FILE));
    assert_eq!(parsed.stderr_file(dir), dir.join(STDERR_FILE));
    // Old readers must not see fields they do not know.
    let written = serde_json::to_string(&parsed).expect("json");
    assert!(!written.contains("stdout_path"), "{written}");
}

#[test]
fn transcript_paths_are_absolute_or_taken_from_the_runner_directory() {
    let dir = Path::new("/data/runners/r/1");
    let named = ShimSpec {
        stdout_path: Some("/data/sessions/s.jsonl".into()),
        stderr_path: Some("err.log".into()),
        ..spec()
    };
    assert_eq!(
        named.stdout_file(dir),
        PathBuf::from("/data/sessions/s.jsonl")
    );
    assert_eq!(named.stderr_file(dir), dir.join("err.log"));
    let dir = ScratchDir::new("paths");
    named.write(&dir.0).expect("write");
    assert_eq!(ShimSpec::read(&dir.0).expect("read"), named);
}

#[test]
fn missing_spec_is_an_error() {
    let dir = ScratchDir::new("nospec");
    assert!(matches!(
        ShimSpec::read(&dir.0),
        Err(RunnerDirError::Io { .. })
    ));
}

#[test]
fn control_round_trips_and_is_absent_before_the_first_write() {
    let dir = ScratchDir::new("control");
    assert_eq!(read_control(&dir.0).expect("read"), None);
    let control = Control {
        rev: 7,
        want: Want::Paused,
    };
    write_control(&dir.0, &control).expect("write");
    assert_eq!(read_control(&dir.0).expect("read"), Some(control));
    let text = fs::read_to_string(dir.0.join(CONTROL_FILE)).expect("raw");
    assert_eq!(text, r#"{"rev":7,"want":"paused"}"#);
    assert!(!dir.0.join("control.tmp").exists());
}

#[test]
fn lease_round_trips_and_garbage_is_an_error() {
    let dir = ScratchDir::new("lease");
    assert_eq!(read_lease(&dir.0).expect("read"), None);
    write_lease(&dir.0, 123_456_789_000).expect("write");
    assert_eq!(read_lease(&dir.0).expect("read"), Some(123_456_789_000));
    assert_eq!(
        fs::read_to_string(dir.0.join(LEASE_FILE)).expect("raw"),
        "123456789000\n"
    );
    fs::write(dir.0.join(LEASE_FILE), "12x").expect("garble");
    assert!(matches!(
        read_lease(&dir.0),
        Err(RunnerDirError::NotANumber { .. })
    ));
}

#[test]
fn pids_round_trip() {
    let dir = ScratchDir::new("pids");
    assert_eq!(read_shim_pid(&dir.0).expect("read"), None);
    write_shim_pid(&dir.0, 41).expect("write");
    write_agent_pid(&dir.0, 42).expect("write");
    assert_eq!(read_shim_pid(&dir.0).expect("read"), Some(41));
    assert_eq!(read_agent_pid(&dir.0).expect("read"), Some(42));
}

#[test]
fn exit_record_round_trips_with_snake_case_reasons() {
    let dir = ScratchDir::new("exit");
    assert_eq!(ExitRecord::read(&dir.0).expect("read"), None);
    let record = ExitRecord {
        code: None,
        signal: Some(9),
        reason: ExitReason::LeaseExpired,
        detail: None,
        ended_boottime_ns: 5,
    };
    record.write(&dir.0).expect("write");
    assert_eq!(ExitRecord::read(&dir.0).expect("read"), Some(record));
    let text = fs::read_to_string(dir.0.join(EXIT_FILE)).expect("raw");
    assert!(text.contains(r#""reason":"lease_expired""#), "{text}");
}

#[test]
fn boottime_advances() {
    let before = boottime_ns();
    assert!(before > 0);
    assert!(boottime_ns() >= before);
}
