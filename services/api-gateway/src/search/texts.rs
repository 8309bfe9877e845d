//! The consumer's part of search: it only records what text a session has,
//! as pending, and keeps each text's session and project right as events
//! arrive. Chunking and embedding happen later, in the worker
//! ([`super::worker`]), so a slow model never holds back other read models.
//!
//! Searched text: each launch's prompt (from `runner.launch_approved`) and
//! whatever the node derived from the agent's output
//! (`process.text_chunked`: its messages and final result, size-capped).

use sqlx::PgConnection;
use stratavore_events::Envelope;
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::RunnerEvent;
use stratavore_store::StoreError;
use uuid::Uuid;

/// The role of a launch's prompt among a session's texts.
pub const PROMPT_ROLE: &str = "prompt";

/// Names a prompt's text: one per runner, whichever history a rebuild
/// replays, so a redelivered or replayed approval records it once.
pub fn prompt_text_id(runner: Uuid) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("stratavore:prompt:{runner}").as_bytes(),
    )
}

fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::new(context)
}

/// Fold what a runner event says about sessions' text: a launch's prompt.
pub async fn project_runner_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &RunnerEvent,
) -> Result<(), StoreError> {
    if let RunnerEvent::LaunchApproved(e) = event {
        let text = Pending {
            text_id: prompt_text_id(e.runner_id),
            session_id: &e.session_id,
            runner_id: e.runner_id,
            attempt: 0,
            role: PROMPT_ROLE,
            body: &e.prompt,
        };
        record(conn, &text, message).await?;
        return fill_project(conn, e.runner_id, &e.project).await;
    }
    Ok(())
}

/// Fold what a process event says about sessions' text: the agent's text,
/// or the session it named.
pub async fn project_process_event(
    conn: &mut PgConnection,
    message: &Envelope,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    match event {
        ProcessEvent::TextChunked(t) => {
            let text = Pending {
                text_id: message.id,
                session_id: &t.session_id,
                runner_id: t.runner_id,
                attempt: i32::try_from(t.attempt).unwrap_or(i32::MAX),
                role: &t.role,
                body: &t.text,
            };
            record(conn, &text, message).await
        }
        // The agent named its own session (a Codex thread, a fork on
        // resume): the prompt that started it belongs to that session.
        ProcessEvent::SessionStarted(s) => move_prompt(conn, s.runner_id, &s.session_id).await,
        _ => Ok(()),
    }
}

/// A text to record.
struct Pending<'a> {
    text_id: Uuid,
    session_id: &'a str,
    runner_id: Uuid,
    attempt: i32,
    role: &'a str,
    body: &'a str,
}

async fn record(
    conn: &mut PgConnection,
    text: &Pending<'_>,
    message: &Envelope,
) -> Result<(), StoreError> {
    // The project comes from the runner's row when the approval was folded
    // first; otherwise the approval fills it in when it comes.
    sqlx::query(
        "INSERT INTO session_texts (text_id, session_id, runner_id, attempt, project, role, body, at)
         VALUES ($1, $2, $3, $4, (SELECT project FROM runners WHERE runner_id = $3), $5, $6, $7)
         ON CONFLICT (text_id) DO NOTHING",
    )
    .bind(text.text_id)
    .bind(text.session_id)
    .bind(text.runner_id)
    .bind(text.attempt)
    .bind(text.role)
    .bind(text.body)
    .bind(message.time)
    .execute(conn)
    .await
    .map_err(store("recording a session's text"))?;
    Ok(())
}

async fn fill_project(
    conn: &mut PgConnection,
    runner: Uuid,
    project: &str,
) -> Result<(), StoreError> {
    for sql in [
        "UPDATE session_texts SET project = $2 WHERE runner_id = $1 AND project IS NULL",
        "UPDATE session_chunks SET project = $2
         WHERE project IS NULL AND text_id IN (SELECT text_id FROM session_texts WHERE runner_id = $1)",
    ] {
        sqlx::query(sql)
            .bind(runner)
            .bind(project)
            .execute(&mut *conn)
            .await
            .map_err(store("filling in a text's project"))?;
    }
    Ok(())
}

async fn move_prompt(
    conn: &mut PgConnection,
    runner: Uuid,
    session: &str,
) -> Result<(), StoreError> {
    let prompt = prompt_text_id(runner);
    for sql in [
        "UPDATE session_texts SET session_id = $2 WHERE text_id = $1 AND session_id <> $2",
        "UPDATE session_chunks SET session_id = $2 WHERE text_id = $1 AND session_id <> $2",
    ] {
        sqlx::query(sql)
            .bind(prompt)
            .bind(session)
            .execute(&mut *conn)
            .await
            .map_err(store("moving a prompt to the agent's session"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_is_named_by_its_runner_alone() {
        let runner = Uuid::now_v7();
        assert_eq!(prompt_text_id(runner), prompt_text_id(runner));
        assert_ne!(prompt_text_id(runner), prompt_text_id(Uuid::now_v7()));
        assert_ne!(prompt_text_id(runner), runner);
    }
}
