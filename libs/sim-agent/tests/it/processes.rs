use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::sim::{SimHome, is_alive, send_signal};

#[test]
fn grandchildren_are_printed_and_outlive_the_agent() {
    let home = SimHome::new();
    let output = home.run(r#"{"grandchildren":true}"#, &[]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(r#""type":"sim""#))
        .expect("a sim line");
    let value: serde_json::Value = serde_json::from_str(line).expect("json");
    let pids: Vec<u32> = value["grandchildren"]
        .as_array()
        .expect("pids")
        .iter()
        .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect();
    assert_eq!(pids.len(), 3);
    // `setsid` and `env` exec `sleep` a moment after the agent printed the
    // pids: wait for every one to be the sleep itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    }) {
        assert!(
            Instant::now() < deadline,
            "grandchildren never became sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive: Vec<bool> = pids.iter().map(|p| is_alive(*p)).collect();
    // One left the session: its session id is its own pid.
    let own_session = pids.iter().filter(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().nth(3).map(str::to_owned))
            })
            .flatten()
            == Some(pid.to_string())
    });
    let own_session = own_session.count();
    // One has an empty environment.
    let empty_env = pids
        .iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.is_empty()))
        .count();
    for pid in &pids {
        send_signal(*pid, "KILL");
    }
    assert_eq!(alive, [true, true, true]);
    assert_eq!(own_session, 1);
    assert_eq!(empty_env, 1);
}

#[test]
fn an_agent_that_ignores_sigterm_survives_it_until_sigkill() {
    let home = SimHome::new();
    let mut child = home
        .command(Some("work"), &[])
        .env("SIM_AGENT_SCRIPT", r#"{"ignore_sigterm":true,"hang":true}"#)
        .spawn()
        .expect("spawn");
    // SIGTERM is ignored before init is printed: wait for init.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read init");
    assert!(first.contains(r#""subtype":"init""#), "{first}");

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
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn a_hanging_agent_prints_nothing_after_its_turns() {
    let home = SimHome::new();
    let mut child = home
        .command(Some("work"), &[])
        .env("SIM_AGENT_SCRIPT", r#"{"turns":1,"hang":true}"#)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // A plain agent dies of SIGTERM; its output so far ends without a result.
    let deadline = Instant::now() + Duration::from_secs(5);
    let session_saved = || {
        std::fs::read_dir(home.path.join(".sim-agent/sessions"))
            .map(|d| {
                d.filter_map(Result::ok).any(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|s| s.contains(r#""turns_saved":1"#))
                })
            })
            .unwrap_or(false)
    };
    while !session_saved() {
        assert!(Instant::now() < deadline, "the turn was never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().expect("try_wait").is_none());
    send_signal(child.id(), "TERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(15));
    let lines = reader.join().expect("reader");
    assert!(lines.iter().any(|l| l.contains(r#""type":"assistant""#)));
    assert!(!lines.iter().any(|l| l.contains(r#""type":"result""#)));
}
