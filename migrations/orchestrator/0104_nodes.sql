-- Supervisor nodes as registrations (received), losses and drains (the
-- orchestrator's own log) made them. Every fold is an upsert that gives the
-- same row whichever history a rebuild replays first: the latest
-- incarnation wins (incarnations are UUIDv7s, which sort by time), a loss
-- is kept per incarnation in node_losses, and a drain by its stream version.
CREATE TABLE nodes (
    node          text PRIMARY KEY,
    -- the latest incarnation known; NULL only while a rebuild has replayed
    -- a drain before the node's registration
    incarnation   uuid,
    -- up | draining | lost (its latest incarnation was declared lost)
    state         text NOT NULL,
    capacity      integer NOT NULL,
    roots         text[] NOT NULL,
    address       text NOT NULL,
    draining      boolean NOT NULL,
    -- the version of the node's drain stream this row reflects
    drain_version bigint NOT NULL
);

-- Node incarnations declared lost.
CREATE TABLE node_losses (
    node        text NOT NULL,
    incarnation uuid NOT NULL,
    missed      integer NOT NULL,
    PRIMARY KEY (node, incarnation)
);

-- The node holding a session's files: the one the attempt that bound the
-- session was placed on (NULL for sessions bound before this was kept).
ALTER TABLE sessions ADD COLUMN node text;
CREATE INDEX sessions_by_node ON sessions (node) WHERE node IS NOT NULL;
