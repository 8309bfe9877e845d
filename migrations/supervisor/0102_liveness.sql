-- The liveness TTL each `start` carried (the node's leases and its fence
-- count in it), and whether the orchestrator set the node to drain.
ALTER TABLE offers ADD COLUMN ttl_ms bigint;

CREATE TABLE node_drain (
    node     text PRIMARY KEY,
    draining boolean NOT NULL,
    -- the orchestrator's drain stream version; only a higher one applies
    rev      bigint NOT NULL
);
