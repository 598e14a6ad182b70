/*
 * 97-scale-out: per-key ordering (issue 11, part 3).
 *
 * An ordered endpoint delivers one event per (endpoint, ordering_key) at a
 * time, in queue id order: the worker claims a row of an ordered endpoint
 * only when it is the lowest id of its key that is still pending or
 * sending (src/queue.c, PLAN_CLAIM_ORDERED).  This index finds those heads:
 * it holds only the open rows (pending or sending: finished_at IS NULL,
 * as no index may name status, part 98) that carry a key, and the producers store a
 * key only for ordered endpoints (src/queue_insert.c), so unordered
 * traffic never writes it.
 */
CREATE INDEX callback_queue_ordering ON callback.callback_queue (endpoint_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL AND finished_at IS NULL;

/* Ordered endpoints are built now: any boolean is accepted (NULL: not given). */
CREATE OR REPLACE FUNCTION callback._check_ordered(ordered boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN;
END
$fn$;

/*
 * The route cache also remembers which endpoints are ordered (to compute a
 * key only for them): a change of ordered must reach every backend.
 */
DROP TRIGGER callback_endpoints_routes_changed ON callback.callback_endpoints;
CREATE TRIGGER callback_endpoints_routes_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, enabled, event_types, ordered
    ON callback.callback_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION callback._endpoints_changed();
ALTER TABLE callback.callback_endpoints ENABLE ALWAYS TRIGGER callback_endpoints_routes_changed;

/*
 * Several workers per database (issue 11, part 2): the Prometheus worker
 * series name the database each worker delivers for.  Only those two lines
 * of prometheus_metrics() change: rewritten in place rather than the whole
 * function copied.
 */
DO $do$
DECLARE
    def text := pg_catalog.pg_get_functiondef('callback.prometheus_metrics()'::pg_catalog.regprocedure);
    lab text := $l${slot="' || w.slot || '",database="' || callback._prom_label(coalesce(d.datname, w.database::text)) || '"} '$l$;
    src text := $l$ FROM callback.worker_stats() w$l$;
    dst text := $l$ FROM callback.worker_stats() w LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) w.database$l$;
    new text;
BEGIN
    new := pg_catalog.replace(def, $l${slot="' || w.slot || '"} '$l$, lab);
    new := pg_catalog.replace(new, src, dst);
    IF new = def OR pg_catalog.strpos(new, 'database="') = 0 THEN
        RAISE EXCEPTION 'prometheus_metrics() is not as part 60 left it';
    END IF;
    EXECUTE new;
END
$do$;
