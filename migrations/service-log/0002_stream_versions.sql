-- The version of each (source log, stream) that this service's state
-- reflects: a received message is applied only when its version is the next
-- one. Derived from the applied inbox rows, so a rebuild resets and replays
-- it like any projection.
CREATE TABLE stream_versions (
    source_log text NOT NULL,
    stream     text NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (source_log, stream)
);

-- Waiting rows are found by stream; dead rows are listed by operators.
CREATE INDEX inbox_dead ON inbox (received_at) WHERE status = 'dead';
