-- The log and the inbox of one service schema (DESIGN.md section 3). This
-- folder is applied to every service schema before the service's own
-- migrations (versions 1-99 here, 100 and up in migrations/<schema>/), each
-- with the schema first on the search_path.

-- The event store and outbox. Positions come from a sequence with no cache
-- and are drawn under the log's append lock, so they follow commit order.
CREATE SEQUENCE log_position AS bigint CACHE 1;

CREATE TABLE log (
    position       bigint PRIMARY KEY,
    message_id     uuid NOT NULL UNIQUE,
    kind           text NOT NULL CHECK (kind IN ('event', 'command')),
    stream         text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version >= 1),
    type           text NOT NULL,
    subject        text NOT NULL,
    source         text NOT NULL,
    routing_key    text NOT NULL,
    time           timestamptz NOT NULL,
    data           jsonb NOT NULL,
    extensions     jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT log_stream_version_unique UNIQUE (stream, stream_version)
);

-- Rows are never updated or deleted, not even by the schema's owner.
CREATE FUNCTION log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON log
    FOR EACH ROW EXECUTE FUNCTION log_refuse_change();
CREATE TRIGGER log_no_truncate BEFORE TRUNCATE ON log
    FOR EACH STATEMENT EXECUTE FUNCTION log_refuse_change();

-- Take the log's append lock with a bounded wait, restoring the session's
-- lock_timeout afterwards so only this wait is bounded. Key space 1 is for
-- append locks; the relay's leases use key space 2.
CREATE FUNCTION log_append_lock(log_key integer, max_wait text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    previous text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', max_wait, true);
    PERFORM pg_advisory_xact_lock(1, log_key);
    PERFORM set_config('lock_timeout', previous, true);
END $$;

-- What this service received: every delivery is inserted here before it is
-- acked, and applied in stream order from here.
CREATE SEQUENCE inbox_applied_seq AS bigint CACHE 1;

CREATE TABLE inbox (
    message_id     uuid PRIMARY KEY,
    source_log     text NOT NULL,
    stream         text NOT NULL,
    stream_version bigint NOT NULL,
    type           text NOT NULL,
    status         text NOT NULL DEFAULT 'received'
                   CHECK (status IN ('received', 'applied', 'dead', 'skipped')),
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    applied_seq    bigint UNIQUE,
    message        jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_waiting ON inbox (source_log, stream, stream_version)
    WHERE status = 'received';

-- The relay reads this log and nothing else of this schema.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stratavore_relay') THEN
        RAISE EXCEPTION 'role stratavore_relay is missing: run provisioning first';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO stratavore_relay', current_schema());
    EXECUTE format('GRANT SELECT ON %I.log TO stratavore_relay', current_schema());
END $$;
