//! The consumer's part of search: it only records what text a session has,
//! as pending, and keeps each text's session and project right as events
//! arrive. Chunking and embedding happen later, in the worker
//! ([`super::worker`]), so a slow model never holds back other read models.
//!
//! Searched text: each launch's prompt (from `runner.launch_approved`) and
//! whatever the node derived from the agent's output
//! (`process.text_chunked`: its messages and final result, size-capped).

use crate::progress::{Progress, Step};
use chrono::{DateTime, Utc};
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
            at: message.time,
        };
        record(conn, std::slice::from_ref(&text)).await?;
        return fill_project(conn, e.runner_id, &e.project).await;
    }
    Ok(())
}

/// Fold what a process event says about sessions' text: the session the
/// agent named (its text, progress, comes in runs: [`record_progress`]).
pub async fn project_process_event(
    conn: &mut PgConnection,
    event: &ProcessEvent,
) -> Result<(), StoreError> {
    match event {
        // The agent named its own session (a Codex thread, a fork on
        // resume): the prompt that started it belongs to that session.
        ProcessEvent::SessionStarted(s) => move_prompt(conn, s.runner_id, &s.session_id).await,
        _ => Ok(()),
    }
}

/// Record the text pieces of a run of progress events.
pub(crate) async fn record_progress(
    conn: &mut PgConnection,
    run: &[Progress],
) -> Result<(), StoreError> {
    let texts: Vec<Pending<'_>> = run
        .iter()
        .filter_map(|p| match &p.step {
            Step::Text(t) => Some(Pending {
                text_id: p.id,
                session_id: &t.session_id,
                runner_id: t.runner_id,
                attempt: p.attempt(),
                role: &t.role,
                body: &t.text,
                at: p.time,
            }),
            Step::Usage(_) => None,
        })
        .collect();
    record(conn, &texts).await
}

/// A text to record.
struct Pending<'a> {
    text_id: Uuid,
    session_id: &'a str,
    runner_id: Uuid,
    attempt: i32,
    role: &'a str,
    body: &'a str,
    at: DateTime<Utc>,
}

async fn record(conn: &mut PgConnection, texts: &[Pending<'_>]) -> Result<(), StoreError> {
    if texts.is_empty() {
        return Ok(());
    }
    // The project comes from the runner's row when the approval was folded
    // first; otherwise the approval fills it in when it comes.
    sqlx::query(
        "INSERT INTO session_texts (text_id, session_id, runner_id, attempt, project, role, body, at)
         SELECT t.text_id, t.session_id, t.runner_id, t.attempt,
                (SELECT project FROM runners WHERE runner_id = t.runner_id), t.role, t.body, t.at
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int[], $5::text[], $6::text[],
                     $7::timestamptz[]) AS t(text_id, session_id, runner_id, attempt, role, body, at)
         ON CONFLICT (text_id) DO NOTHING",
    )
    .bind(texts.iter().map(|t| t.text_id).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.session_id).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.runner_id).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.attempt).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.role).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.body).collect::<Vec<_>>())
    .bind(texts.iter().map(|t| t.at).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(store("recording sessions' texts"))?;
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
