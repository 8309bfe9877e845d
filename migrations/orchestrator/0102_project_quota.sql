-- Each project keeps its own runner quota (PATCH-able).
ALTER TABLE projects ADD COLUMN max_concurrent_runners integer NOT NULL DEFAULT 5;
