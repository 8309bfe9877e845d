-- What a runner was launched with (from runner.launch_approved: the
-- launch's choices with the profile's defaults applied), and whether its
-- agent has stalled: set by process.stalled, cleared by a later usage report
-- or text of the same attempt, or by the offer of a later attempt.
ALTER TABLE runners
    ADD COLUMN model           text,
    ADD COLUMN permission      text,
    ADD COLUMN allowed_tools   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN stalled_at      timestamptz,
    ADD COLUMN stalled_idle_ms bigint,
    ADD COLUMN stalled_attempt integer;
