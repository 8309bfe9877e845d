-- The texts (and their chunks) recorded before their runner's approval,
-- whose project an approval fills in. A batch's fill looks them up by its
-- runners; without these the lookup's generic plan scanned every text
-- (a rebuild's tables have no statistics of the rows it wrote), about
-- half a second a page at a few hundred thousand texts.
CREATE INDEX session_texts_without_project ON session_texts (runner_id) WHERE project IS NULL;
CREATE INDEX session_chunks_without_project ON session_chunks (text_id) WHERE project IS NULL;
