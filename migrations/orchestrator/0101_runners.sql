-- Runners as the orchestrator's decisions made them (from its own log):
-- what launches count against a project's quota, and what the timer worker
-- and session resolution read.
CREATE TABLE runners (
    runner_id      uuid PRIMARY KEY,
    project        text NOT NULL,
    profile        text NOT NULL,
    state          text NOT NULL,
    attempt        integer NOT NULL,
    node           text,
    session_id     text NOT NULL,
    version        bigint NOT NULL,
    -- the whole folded state, so each event folds onto the previous one
    -- here without reading the log (a rebuild replays in order)
    snapshot       jsonb NOT NULL
);
CREATE INDEX runners_active_by_project ON runners (project)
    WHERE state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled');

-- The one durable timer a runner may have, derived from its events.
CREATE TABLE runner_timers (
    runner_id uuid PRIMARY KEY,
    kind      text NOT NULL,
    attempt   integer NOT NULL,
    due_ms    bigint NOT NULL
);
CREATE INDEX runner_timers_due ON runner_timers (due_ms);

-- Sessions, minimal for now: which project, whether bound (resumable), and
-- which runner uses it (one running agent per session).
CREATE TABLE sessions (
    session_id     text PRIMARY KEY,
    project        text NOT NULL,
    bound          boolean NOT NULL,
    active_runner  uuid,
    last_active_ms bigint NOT NULL
);
CREATE INDEX sessions_by_project ON sessions (project, last_active_ms DESC);
