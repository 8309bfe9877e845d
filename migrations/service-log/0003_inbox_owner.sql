-- Who drains a received row. Replicas of a service are interchangeable and
-- share the default, '': any of them may apply any row. Supervisor nodes
-- are not: each applies only what its own queues delivered (a node that
-- applied another node's `start` would refuse it, and the node it was for
-- would never see it), so each records and drains rows under its node id.
ALTER TABLE inbox ADD COLUMN owner text NOT NULL DEFAULT '';
CREATE INDEX inbox_waiting_by_owner ON inbox (owner, source_log, stream, stream_version)
    WHERE status = 'received';
