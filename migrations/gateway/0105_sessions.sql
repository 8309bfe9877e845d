-- Agent sessions as the API shows them.
--
-- Facts are kept per attempt (session_attempts), each column set by the
-- events about that attempt whichever log delivers them first: the
-- orchestrator's (offer, placement, end) or the node's (start, session,
-- usage, text, exit). An attempt's session is the id its agent reported,
-- else the one it was offered with, so a launch whose agent chose another
-- id (a Codex thread) leaves no second session behind. `sessions` is the
-- aggregate of a session's attempts, recomputed from them whenever one of
-- them changes, so it does not depend on the order the facts came in.
-- Whether a session is in use or resumable depends on runners and nodes
-- that change without touching it, so that is derived on read.

-- What each runner was launched with (runner.launch_approved).
CREATE TABLE session_runners (
    runner_id   uuid PRIMARY KEY,
    project     text NOT NULL,
    path        text NOT NULL,
    profile     text NOT NULL,
    prompt      text NOT NULL,
    launched_at timestamptz NOT NULL
);

CREATE TABLE session_attempts (
    runner_id             uuid NOT NULL,
    attempt               integer NOT NULL,
    -- the session the orchestrator offered the attempt with, and whether
    -- the attempt was to resume it
    offered_session       text,
    resume                boolean,
    -- the session the agent said it runs (process.session_started/bound)
    agent_session         text,
    session_id            text GENERATED ALWAYS AS (coalesce(agent_session, offered_session)) STORED,
    node                  text,
    -- process.started: the agent got the runner's prompt
    started_at            timestamptz,
    ended_at              timestamptz,
    bound                 boolean NOT NULL DEFAULT false,
    turns                 integer NOT NULL DEFAULT 0,
    messages              integer NOT NULL DEFAULT 0,
    -- the role of the last text piece and whether it filled the node's
    -- size cap (the next piece of that role then continues its message)
    last_text_role        text,
    last_text_full        boolean NOT NULL DEFAULT false,
    input_tokens          bigint NOT NULL DEFAULT 0,
    output_tokens         bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens     bigint NOT NULL DEFAULT 0,
    cost_usd              double precision NOT NULL DEFAULT 0,
    result_text           text,
    last_active_at        timestamptz NOT NULL,
    transcript_path       text,
    transcript_bytes      bigint,
    transcript_sha256     text,
    PRIMARY KEY (runner_id, attempt)
);
CREATE INDEX session_attempts_by_session ON session_attempts (session_id);

CREATE TABLE sessions (
    session_id            text PRIMARY KEY,
    project               text,
    path                  text,
    -- the profile of its latest run (a resume runs with it)
    profile               text,
    node                  text,
    bound                 boolean NOT NULL,
    resumed_from          text,
    first_prompt          text,
    final_result          text,
    started_at            timestamptz,
    last_active_at        timestamptz NOT NULL,
    ended_at              timestamptz,
    message_count         integer NOT NULL,
    turn_count            integer NOT NULL,
    input_tokens          bigint NOT NULL,
    output_tokens         bigint NOT NULL,
    cache_creation_tokens bigint NOT NULL,
    cache_read_tokens     bigint NOT NULL,
    cost_usd              double precision NOT NULL,
    transcript_path       text,
    transcript_bytes      bigint,
    transcript_sha256     text
);
CREATE INDEX sessions_by_activity ON sessions (last_active_at DESC, session_id DESC);
CREATE INDEX sessions_by_project ON sessions (project, last_active_at DESC, session_id DESC);

-- Whether a session is in use reads the runners by their session.
CREATE INDEX runners_by_session ON runners (session_id) WHERE session_id IS NOT NULL;
