-- Runners as the API shows them: their lifecycle (from the orchestrator's
-- runner events) and what their processes did (from the nodes' process
-- events: pid, tokens, cost). Times are the events' own.
CREATE TABLE runners (
    runner_id              uuid PRIMARY KEY,
    project                text NOT NULL,
    profile                text NOT NULL,
    state                  text NOT NULL,
    attempt                integer NOT NULL DEFAULT 0,
    node                   text,
    pid                    bigint,
    session_id             text,
    last_error             text,
    exit_code              integer,
    input_tokens           bigint NOT NULL DEFAULT 0,
    output_tokens          bigint NOT NULL DEFAULT 0,
    cache_creation_tokens  bigint NOT NULL DEFAULT 0,
    cache_read_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd               double precision NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);
CREATE INDEX runners_by_project ON runners (project, runner_id);
