-- Every inbox row is inserted once and updated once (to applied), and each
-- index it enters costs both statements, the largest of every consumer's
-- (pg_stat_statements at 800 runners, make bench, docs/performance.md).
--
-- inbox_waiting and inbox_waiting_by_owner hold the received rows by
-- stream; inbox_next (0004) holds the same columns with the owner for
-- received and skipped rows, and a query on `status = 'received'` may use
-- it (its predicate implies inbox_next's). Nothing needs the other two.
DROP INDEX inbox_waiting;
DROP INDEX inbox_waiting_by_owner;

-- applied_seq orders a rebuild's replay and is set when a row is applied
-- or skipped; a waiting row's NULL was indexed for nothing on every insert.
-- Still unique, and still what `applied_seq > $1` and `IS NOT NULL` read.
ALTER TABLE inbox DROP CONSTRAINT inbox_applied_seq_key;
CREATE UNIQUE INDEX inbox_applied_order ON inbox (applied_seq) WHERE applied_seq IS NOT NULL;
