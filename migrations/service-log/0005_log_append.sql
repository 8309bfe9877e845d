-- An append in one round trip: the append lock, then the rows, in one call.
-- Before, the lock (`log_append_lock`) and the INSERT were two statements,
-- and every writer's transaction waited on the network and the scheduler
-- twice; under load a round trip costs 0.2-1 ms, as much as the insert
-- itself (make bench, docs/performance.md). Positions are still drawn
-- under the lock, row by row in the order given, so they follow commit
-- order as before. The arrays are the entries' fields, one element each.
CREATE FUNCTION log_append(
    log_key integer, max_wait text,
    ids uuid[], kinds text[], streams text[], versions bigint[], types text[],
    subjects text[], sources text[], keys text[], times timestamptz[],
    datas jsonb[], exts jsonb[]
) RETURNS SETOF bigint
LANGUAGE plpgsql
-- This schema's log, whatever the caller's search path.
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM log_append_lock(log_key, max_wait);
    -- WITH ORDINALITY ... ORDER BY: volatile nextval is evaluated after the
    -- sort, so positions follow the order given.
    RETURN QUERY
    INSERT INTO log (position, message_id, kind, stream, stream_version, type, subject,
                     source, routing_key, time, data, extensions)
    SELECT nextval('log_position'), t.id, t.kind, t.stream, t.version, t.type, t.subject,
           t.source, t.key, t.time, t.data, t.ext
    FROM unnest(ids, kinds, streams, versions, types, subjects, sources, keys, times,
                datas, exts)
         WITH ORDINALITY AS t(id, kind, stream, version, type, subject, source, key, time,
                              data, ext, ord)
    ORDER BY t.ord
    RETURNING log.position;
END $$;
