-- Where each attempt's transcript lives on this node's disk. Every attempt
-- of a session appends to one file (<data_dir>/sessions/<session>.jsonl),
-- so an attempt's own lines start where the file ended when it was
-- spawned. The node writes these rows itself, before the spawn and when
-- the attempt ends: they describe a file, not a fact of the log, so a
-- rebuild of the projections leaves them alone (the start offset could
-- not be derived again from the events).
CREATE TABLE attempt_transcripts (
    runner_id    uuid NOT NULL,
    attempt      bigint NOT NULL,
    -- the agent's stdout, appended unchanged; stderr is beside it
    path         text NOT NULL,
    -- the file's size when the attempt was spawned: its first byte
    start_offset bigint NOT NULL,
    -- once the attempt ended: the file's size then, and the sha256 (hex) of
    -- its first end_size bytes
    end_size     bigint,
    sha256       text,
    PRIMARY KEY (runner_id, attempt)
);
