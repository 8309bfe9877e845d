use stratavore_agent_protocols::{AgentFact, Outcome};

use crate::sim::{SimHome, new_session_id, parse, stderr};

fn outcome(stdout: &[u8]) -> Option<Outcome> {
    parse(stdout).facts.into_iter().find_map(|f| match f {
        AgentFact::Finished { outcome, .. } => Some(outcome),
        _ => None,
    })
}

#[test]
fn a_reused_session_id_is_refused_as_already_in_use() {
    let home = SimHome::new();
    let id = new_session_id();
    let first = home.run("{}", &["--session-id", &id]);
    assert_eq!(first.status.code(), Some(0));
    let again = home.run("{}", &["--session-id", &id]);
    assert_eq!(again.status.code(), Some(1));
    // As the real CLI: one stderr line, nothing on stdout.
    assert_eq!(
        stderr(&again),
        format!("Error: Session ID {id} is already in use.\n")
    );
    assert!(again.stdout.is_empty());
}

#[test]
fn an_id_is_in_use_from_the_start_even_before_its_first_turn() {
    let home = SimHome::new();
    let id = new_session_id();
    let crashed = home.run(r#"{"crash_exit_code":3}"#, &["--session-id", &id]);
    assert_eq!(crashed.status.code(), Some(3));
    let again = home.run("{}", &["--session-id", &id]);
    assert!(stderr(&again).contains("is already in use"));
}

#[test]
fn a_resume_before_the_first_turn_finds_no_conversation() {
    let home = SimHome::new();
    let id = new_session_id();
    let crashed = home.run(
        r#"{"crash_exit_code":3,"crash_after_turns":0}"#,
        &["--session-id", &id],
    );
    assert_eq!(crashed.status.code(), Some(3));
    let resumed = home.run("{}", &["--resume", &id]);
    assert_eq!(resumed.status.code(), Some(1));
    let message = format!("No conversation found with session ID: {id}");
    assert_eq!(
        outcome(&resumed.stdout),
        Some(Outcome::Failed {
            reason: message.clone()
        })
    );
    assert_eq!(stderr(&resumed), format!("{message}\n"));
}

#[test]
fn a_resume_of_an_unknown_or_invalid_id_finds_no_conversation() {
    let home = SimHome::new();
    for id in [new_session_id(), "../../etc/passwd".to_owned()] {
        let resumed = home.run("{}", &["--resume", &id]);
        assert_eq!(resumed.status.code(), Some(1));
        assert!(matches!(
            outcome(&resumed.stdout),
            Some(Outcome::Failed { .. })
        ));
    }
}

#[test]
fn a_resume_after_a_saved_turn_continues_the_same_session() {
    let home = SimHome::new();
    let id = new_session_id();
    let first = home.run(r#"{"turns":2}"#, &["--session-id", &id]);
    assert_eq!(first.status.code(), Some(0));
    let resumed = home.run("{}", &["--resume", &id]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let parsed = parse(&resumed.stdout);
    assert!(matches!(
        parsed.facts.first(),
        Some(AgentFact::SessionStarted { session_id, .. }) if *session_id == id
    ));
    let saved = std::fs::read_to_string(home.session_file(&id)).unwrap_or_default();
    assert!(saved.contains(r#""turns_saved":3"#), "{saved}");
}

#[test]
fn an_id_that_is_not_a_uuid_is_refused() {
    let home = SimHome::new();
    let output = home.run("{}", &["--session-id", "not-a-uuid"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "Error: Invalid session ID. Must be a valid UUID.\n"
    );
}
