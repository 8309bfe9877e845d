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
        format!(
            "00000000123456789000 {:016x}\n",
            lease_check(123_456_789_000)
        )
    );
    let inode = |dir: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(dir.join(LEASE_FILE)).expect("stat").ino()
    };
    let first = inode(&dir.0);
    write_lease(&dir.0, 7).expect("rewrite");
    assert_eq!(read_lease(&dir.0).expect("read"), Some(7));
    assert_eq!(inode(&dir.0), first, "rewritten in place, not replaced");
    fs::write(dir.0.join(LEASE_FILE), "12x").expect("garble");
    assert!(matches!(
        read_lease(&dir.0),
        Err(RunnerDirError::BadLease { .. })
    ));
    fs::write(dir.0.join(LEASE_FILE), "123456789000\n").expect("no check");
    assert!(matches!(
        read_lease(&dir.0),
        Err(RunnerDirError::BadLease { .. })
    ));
    fs::write(dir.0.join(LEASE_FILE), "").expect("just created");
    assert_eq!(read_lease(&dir.0).expect("read"), None);
}

/// A reader racing an in-place write may see any byte of the record from
/// the old write or the new one. Whatever the mix, it reads the old
/// deadline, the new one, or an error: never a third deadline, which could
/// be later than the supervisor ever granted.
#[test]
fn a_lease_record_torn_between_two_writes_never_reads_as_a_third_deadline() {
    let pairs = [
        (1_299_000_000_000u64, 1_300_000_000_000u64),
        (99_999_999_999, 100_000_000_000),
        (5_123_456_789_012, 5_125_456_789_012),
        (0, u64::MAX),
    ];
    for (old, new) in pairs {
        let (a, b) = (lease_record(old), lease_record(new));
        // Every mix where each differing byte comes from either record, in
        // every pattern; for a pair that differs in more than 14 bytes, every
        // pattern over the first 14 (the rest from the old record).
        let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        let tried = differing.len().min(14);
        for pattern in 0u32..(1 << tried) {
            let mut mixed = a;
            for (bit, &i) in differing.iter().take(tried).enumerate() {
                if pattern & (1 << bit) != 0 {
                    mixed[i] = b[i];
                }
            }
            if let Some(read) = parse_lease_record(&mixed) {
                assert!(
                    read == old || read == new,
                    "{old} / {new} mixed as {:?} read as {read}",
                    String::from_utf8_lossy(&mixed)
                );
            }
        }
        // And every prefix of the new record over the old, and the reverse
        // (a copy running forwards or backwards).
        for cut in 0..=a.len() {
            for mixed in [
                [&b[..cut], &a[cut..]].concat(),
                [&a[..cut], &b[cut..]].concat(),
            ] {
                if let Some(read) = parse_lease_record(&mixed) {
                    assert!(read == old || read == new, "{old} / {new} cut at {cut}");
                }
            }
        }
    }
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
