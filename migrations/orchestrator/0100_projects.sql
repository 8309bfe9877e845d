-- Projects as the orchestrator's decisions made them (from its own log).
CREATE TABLE projects (
    name        text PRIMARY KEY,
    path        text NOT NULL,
    description text,
    tags        text[] NOT NULL,
    archived    boolean NOT NULL,
    -- the version of the project's stream this row reflects
    version     bigint NOT NULL
);
