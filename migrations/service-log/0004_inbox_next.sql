-- The drain looks up a stream's next row with
--   status IN ('received', 'skipped') AND owner AND source_log AND stream
--   AND stream_version
-- (a skipped row is applied as a no-op in its turn). The partial indexes
-- before this one hold only `status = 'received'`, which that predicate
-- does not imply, so every lookup scanned the whole inbox, which never
-- shrinks: 2-5 ms per lookup at 20,000 rows and growing (make bench,
-- docs/performance.md). This index serves it directly.
CREATE INDEX inbox_next ON inbox (owner, source_log, stream, stream_version)
    WHERE status IN ('received', 'skipped');
