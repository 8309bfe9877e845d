-- When a waiting runner (restart backoff, provider quota window) will be
-- offered its next attempt; NULL while it is not waiting.
ALTER TABLE runners ADD COLUMN resume_at timestamptz;
