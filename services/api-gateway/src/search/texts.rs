//! The consumer's part of search: it only records what text a session has,
//! as pending, and keeps each text's session and project right as events
//! arrive. Chunking and embedding happen later, in the worker
//! ([`super::worker`]), so a slow model never holds back other read models.
//!
//! Searched text: each launch's prompt (from `runner.launch_approved`) and
//! whatever the node derived from the agent's output
//! (`process.text_chunked`: its messages and final result, size-capped).

use crate::agent_events::AgentEvent;
use crate::progress::Step;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
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

/// Fold what a batch of runner and process events says about sessions'
/// text: each launch's prompt, the agent's text pieces, and the session
/// the agent named (a Codex thread, a fork on resume), to which the prompt
/// that started it then belongs.
///
/// Folded as each event alone would be, in order: a prompt recorded in
/// this batch is recorded in the session the batch's later events moved it
/// to; the moves of prompts recorded before it are made first, so they
/// never reach a prompt that came after them.
pub(crate) async fn fold(conn: &mut PgConnection, events: &[AgentEvent]) -> Result<(), StoreError> {
    let mut texts: Vec<Pending<'_>> = Vec::new();
    // The runners whose prompt is among `texts`, and where.
    let mut prompts: HashMap<Uuid, usize> = HashMap::new();
    let mut moves: BTreeMap<Uuid, &str> = BTreeMap::new();
    let mut approved: BTreeMap<Uuid, &str> = BTreeMap::new();
    for event in events {
        match event {
            AgentEvent::Runner(s) => {
                let RunnerEvent::LaunchApproved(e) = &s.event else {
                    continue;
                };
                approved.entry(e.runner_id).or_insert(&e.project);
                if prompts.contains_key(&e.runner_id) {
                    continue;
                }
                prompts.insert(e.runner_id, texts.len());
                texts.push(Pending {
                    text_id: prompt_text_id(e.runner_id),
                    session_id: &e.session_id,
                    runner_id: e.runner_id,
                    attempt: 0,
                    role: PROMPT_ROLE,
                    body: &e.prompt,
                    at: s.time,
                });
            }
            AgentEvent::Process(s) => {
                let ProcessEvent::SessionStarted(e) = &s.event else {
                    continue;
                };
                match prompts.get(&e.runner_id) {
                    Some(&i) => texts[i].session_id = &e.session_id,
                    None => {
                        moves.insert(e.runner_id, &e.session_id);
                    }
                }
            }
            AgentEvent::Progress(p) => {
                if let Step::Text(t) = &p.step {
                    texts.push(Pending {
                        text_id: p.id,
                        session_id: &t.session_id,
                        runner_id: t.runner_id,
                        attempt: p.attempt(),
                        role: &t.role,
                        body: &t.text,
                        at: p.time,
                    });
                }
            }
        }
    }
    move_prompts(conn, &moves).await?;
    record(conn, &texts).await?;
    fill_projects(conn, &approved).await
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

/// The project of each approved runner's texts recorded before its
/// approval (and of their chunks).
async fn fill_projects(
    conn: &mut PgConnection,
    approved: &BTreeMap<Uuid, &str>,
) -> Result<(), StoreError> {
    if approved.is_empty() {
        return Ok(());
    }
    let runners: Vec<Uuid> = approved.keys().copied().collect();
    let projects: Vec<&str> = approved.values().copied().collect();
    // Each table is filtered by `= ANY` of the keys as well as joined: a
    // rebuild's tables have no statistics of what it wrote, and a generic
    // plan of the join alone may scan them whole.
    for sql in [
        "UPDATE session_texts t SET project = a.project
         FROM unnest($1::uuid[], $2::text[]) AS a(runner_id, project)
         WHERE t.runner_id = ANY($1) AND t.runner_id = a.runner_id AND t.project IS NULL",
        "UPDATE session_chunks c SET project = a.project
         FROM unnest($1::uuid[], $2::text[]) AS a(runner_id, project), session_texts t
         WHERE c.project IS NULL AND c.text_id = t.text_id
           AND t.runner_id = ANY($1) AND t.runner_id = a.runner_id",
    ] {
        sqlx::query(sql)
            .bind(&runners)
            .bind(&projects)
            .execute(&mut *conn)
            .await
            .map_err(store("filling in texts' projects"))?;
    }
    Ok(())
}

/// Move each runner's prompt to the session its agent named.
async fn move_prompts(
    conn: &mut PgConnection,
    moves: &BTreeMap<Uuid, &str>,
) -> Result<(), StoreError> {
    if moves.is_empty() {
        return Ok(());
    }
    let prompts: Vec<Uuid> = moves.keys().map(|r| prompt_text_id(*r)).collect();
    let sessions: Vec<&str> = moves.values().copied().collect();
    for sql in [
        "UPDATE session_texts t SET session_id = m.session_id
         FROM unnest($1::uuid[], $2::text[]) AS m(text_id, session_id)
         WHERE t.text_id = ANY($1) AND t.text_id = m.text_id AND t.session_id <> m.session_id",
        "UPDATE session_chunks c SET session_id = m.session_id
         FROM unnest($1::uuid[], $2::text[]) AS m(text_id, session_id)
         WHERE c.text_id = ANY($1) AND c.text_id = m.text_id AND c.session_id <> m.session_id",
    ] {
        sqlx::query(sql)
            .bind(&prompts)
            .bind(&sessions)
            .execute(&mut *conn)
            .await
            .map_err(store("moving prompts to the agents' sessions"))?;
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
