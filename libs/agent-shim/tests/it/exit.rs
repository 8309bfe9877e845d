//! An agent that ends by itself, and what it leaves behind.

use std::fs;

use stratavore_agent_shim::runner_dir::{self, ExitReason, StdinSource};

use crate::harness::{PROMPTLY, ShimRun, is_gone, parse_pids};

#[test]
fn an_agent_exit_code_is_recorded_with_its_output_unchanged_and_the_prompt_on_a_closed_stdin() {
    let mut run = ShimRun::new("exit-code");
    runner_dir::write_prompt(&run.dir, b"{\"prompt\":\"hello\"}\nsecond line\n").expect("prompt");
    // `cat` ends only if stdin reaches its end after the prompt.
    let mut spec = run.spec("cat; echo '{\"type\":\"result\"}'; echo oops >&2; exit 3");
    spec.stdin = StdinSource::Prompt;
    run.start(&spec);

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.reason, ExitReason::Exited);
    assert_eq!(record.code, Some(3));
    assert_eq!(record.signal, None);
    assert_eq!(
        run.stdout(),
        "{\"prompt\":\"hello\"}\nsecond line\n{\"type\":\"result\"}\n"
    );
    let stderr = fs::read_to_string(run.dir.join(runner_dir::STDERR_FILE)).expect("stderr");
    assert_eq!(stderr, "oops\n");
}

#[test]
fn output_goes_to_the_transcript_files_the_spec_names_appended_to_what_is_there() {
    let mut run = ShimRun::new("named-transcript");
    let sessions = run.dir.join("sessions");
    fs::create_dir_all(&sessions).expect("sessions dir");
    let (out, err) = (sessions.join("s.jsonl"), sessions.join("s.stderr.log"));
    fs::write(&out, "{\"earlier\":1}\n").expect("earlier attempt");
    let mut spec = run.spec("echo '{\"later\":2}'; echo oops >&2");
    spec.stdout_path = Some(out.clone());
    spec.stderr_path = Some(err.clone());
    run.start(&spec);

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.code, Some(0));
    assert_eq!(
        fs::read_to_string(&out).expect("stdout"),
        "{\"earlier\":1}\n{\"later\":2}\n"
    );
    assert_eq!(fs::read_to_string(&err).expect("stderr"), "oops\n");
    assert!(!run.dir.join(runner_dir::STDOUT_FILE).exists());
}

#[test]
fn the_agent_gets_exactly_the_spec_environment_its_own_group_and_the_shims_session() {
    let mut run = ShimRun::new("environment");
    let mut spec = run.spec(
        "echo \"$STRATAVORE_RUNNER|$STRATAVORE_NODE|$FOO|${HOME-unset}\"; \
         echo $$; cat /proc/$$/stat",
    );
    spec.env.insert("FOO".into(), "bar baz".into());
    run.start(&spec);

    let record = run.wait_exit(PROMPTLY);

    assert_eq!(record.code, Some(0));
    let lines = run.stdout_lines(3);
    assert_eq!(
        lines[0],
        format!("{}|test-node|bar baz|unset", spec.runner_mark())
    );
    let agent: i32 = lines[1].parse().expect("pid");
    assert_eq!(
        runner_dir::read_agent_pid(&run.dir).expect("read"),
        Some(agent)
    );
    let shim = runner_dir::read_shim_pid(&run.dir)
        .expect("read")
        .expect("shim.pid");
    let stat = &lines[2];
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 1..]
        .split_whitespace()
        .collect();
    // After the name: state, ppid, pgrp, session.
    assert_eq!(
        fields[1],
        shim.to_string(),
        "the shim is the agent's parent"
    );
    assert_eq!(
        fields[2],
        agent.to_string(),
        "the agent leads its own group"
    );
    assert_eq!(fields[3], shim.to_string(), "the shim leads the session");
}

#[test]
fn exit_is_written_only_once_every_grandchild_is_gone_even_detached_ones() {
    let mut run = ShimRun::new("grandchildren");
    // Each grandchild prints its own pid; the agent exits once all three
    // have, leaving them orphaned to the shim.
    let spec = run.spec(
        "sh -c 'echo $$; exec sleep 1000' &
         setsid sh -c 'echo $$; exec sleep 1000' &
         env -i /bin/sh -c 'echo $$; exec /bin/sleep 1000' &
         while [ \"$(wc -l < stdout.jsonl)\" -lt 3 ]; do sleep 0.02; done
         exit 0",
    );
    run.start(&spec);
    let grandchildren = parse_pids(&run.stdout_lines(3));

    let record = run.wait_exit_and(PROMPTLY, || {
        for pid in &grandchildren {
            assert!(is_gone(*pid), "grandchild {pid} outlived exit.json");
        }
    });

    assert_eq!(record.reason, ExitReason::Exited);
    assert_eq!(record.code, Some(0));
}
