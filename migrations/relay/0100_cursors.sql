-- Where the relay is in each source log: the highest position whose whole
-- batch the broker confirmed.
CREATE TABLE cursors (
    source_schema text PRIMARY KEY,
    position      bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
