-- Supervisor nodes as the API shows them, folded from node events: a
-- registration (from the node's own log), a loss and a drain (from the
-- orchestrator's). The two logs reach the gateway in either order, so a row
-- may begin with a loss or a drain, hence the NULLs; a node's state is
-- derived on read (lost when its latest loss is of its current incarnation
-- or a later one, else draining or up). Incarnations are UUIDv7, so they
-- sort by when the node made them. Heartbeats are telemetry and are not
-- stored here: each gateway keeps the latest in memory.
CREATE TABLE nodes (
    node             text PRIMARY KEY,
    incarnation      uuid,
    capacity         integer,
    roots            text[] NOT NULL DEFAULT '{}',
    address          text,
    registered_at    timestamptz,
    draining         boolean NOT NULL DEFAULT false,
    lost_incarnation uuid,
    lost_at          timestamptz
);

-- A node's running count reads the runners placed on it.
CREATE INDEX runners_by_node ON runners (node, state);
