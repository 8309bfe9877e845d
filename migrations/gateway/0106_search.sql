-- Semantic search over sessions' text.
--
-- The consumer only records text as pending (session_texts); a worker in
-- the gateway claims pending rows, cuts them into chunks of the model's own
-- tokens and embeds them (session_chunks), so embedding never holds back
-- the other read models. Both tables are projections: a rebuild empties and
-- refills them. embedding_cache is not: it keeps every vector computed, by
-- model and text, so a rebuild (or the same text said twice) reuses a
-- vector instead of running the model again.

-- Text of a session as it arrived: a launch's prompt, or the agent's
-- message or result (process.text_chunked, already size-capped by the node).
CREATE TABLE session_texts (
    -- the event's id, or for a prompt a UUIDv5 of its runner
    text_id       uuid PRIMARY KEY,
    session_id    text NOT NULL,
    runner_id     uuid NOT NULL,
    attempt       integer NOT NULL,
    -- the runner's project; NULL until the runner's approval is folded
    -- (a node's event may arrive before the orchestrator's)
    project       text,
    -- prompt, user, assistant or result
    role          text NOT NULL,
    body          text NOT NULL,
    at            timestamptz NOT NULL,
    -- set once its chunks are written
    embedded_at   timestamptz,
    -- a worker holds a pending row until then (a worker that died lets go)
    claimed_until timestamptz,
    -- why the last try failed, for the operator
    last_error    text
);
CREATE INDEX session_texts_pending ON session_texts (at) WHERE embedded_at IS NULL;
CREATE INDEX session_texts_by_runner ON session_texts (runner_id);

-- The chunks that are searched. The vector column has no fixed dimension
-- and each row names its model: a query compares only with vectors of the
-- model in use, through a partial HNSW index of that model's dimension,
-- which the gateway creates for its provider when it starts (so another
-- provider needs no change to this table).
CREATE TABLE session_chunks (
    text_id    uuid NOT NULL,
    seq        integer NOT NULL,
    model      text NOT NULL,
    session_id text NOT NULL,
    project    text,
    role       text NOT NULL,
    body       text NOT NULL,
    at         timestamptz NOT NULL,
    embedding  vector NOT NULL,
    -- 'english' stems words for ranking; file names, error codes and other
    -- rare words stay whole tokens, so an exact word still matches
    tsv        tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
    PRIMARY KEY (text_id, seq, model)
);
CREATE INDEX session_chunks_fts ON session_chunks USING gin (tsv);
CREATE INDEX session_chunks_by_session ON session_chunks (session_id);

-- Every vector ever computed, by model and the sha256 of the exact text.
CREATE TABLE embedding_cache (
    model       text NOT NULL,
    text_sha256 bytea NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (model, text_sha256)
);

-- How each text was cut, by model, chunk size and the sha256 of the text:
-- with embedding_cache, a rebuild finds every chunk and vector it needs
-- without loading the model. Not a projection either.
CREATE TABLE text_chunking (
    model        text NOT NULL,
    chunk_tokens integer NOT NULL,
    text_sha256  bytea NOT NULL,
    chunks       text[] NOT NULL,
    PRIMARY KEY (model, chunk_tokens, text_sha256)
);
