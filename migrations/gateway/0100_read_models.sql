-- The gateway's read models, folded from received events (projects,
-- command outcomes) and from its own log (accepted commands, their
-- idempotency keys). Nothing here differs between two rebuilds: times are
-- the events' own times, never now().

CREATE TABLE projects (
    name        text PRIMARY KEY,
    path        text NOT NULL,
    description text,
    tags        text[] NOT NULL,
    archived    boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Every command a client sent, and its outcome once it arrives. Columns
-- from either side may come first during a rebuild, hence the NULLs.
CREATE TABLE commands (
    command_id  uuid PRIMARY KEY,
    type        text,
    subject     text,
    status      text NOT NULL CHECK (status IN ('pending', 'succeeded', 'rejected')),
    reason      text,
    field       text,
    message     text,
    resource    text,
    accepted_at timestamptz,
    decided_at  timestamptz
);

-- A key names one request: the same key again returns the same command.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    command_id   uuid NOT NULL,
    request_hash text NOT NULL
);
