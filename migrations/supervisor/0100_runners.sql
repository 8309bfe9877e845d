-- What supervisor nodes know about the attempts offered to them, folded
-- from the supervisor's log and its applied inbox rows (rebuildable).

-- Offers received (the prompt, profile and session a later `start` spawns).
CREATE TABLE offers (
    runner_id   uuid NOT NULL,
    attempt     bigint NOT NULL,
    offer       jsonb NOT NULL,
    -- the node and incarnation that claimed it, once claimed
    node        text,
    incarnation uuid,
    revoked     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (runner_id, attempt)
);

-- Attempts a node accepted a `start` for, and how far their process
-- stream got.
CREATE TABLE attempts (
    runner_id   uuid NOT NULL,
    attempt     bigint NOT NULL,
    node        text NOT NULL,
    incarnation uuid NOT NULL,
    -- spawning | started | ended
    state       text NOT NULL,
    pid         bigint,
    -- the last version of the attempt's process stream recorded
    version     bigint NOT NULL,
    PRIMARY KEY (runner_id, attempt)
);
CREATE INDEX attempts_live ON attempts (node) WHERE state <> 'ended';

-- The latest desired state of each attempt (only a higher rev replaces it).
CREATE TABLE desired_states (
    runner_id uuid NOT NULL,
    attempt   bigint NOT NULL,
    rev       bigint NOT NULL,
    want      text NOT NULL,
    PRIMARY KEY (runner_id, attempt)
);
