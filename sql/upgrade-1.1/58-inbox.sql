/*
 * 58-inbox: where events wait between their commit and the worker, when
 * callback.inbox is on (issue 10, the write path).
 *
 * A delivery written into callback_queue by the trigger pays for the
 * queue's two btree entries (primary key, callback_queue_due): about half
 * of what the trigger adds to an INSERT, by callgrind.  callback_inbox has
 * no index at all: a producer's transaction writes the heap tuple and its
 * WAL, nothing else.  The worker moves what committed into callback_queue
 * at the start of each cycle, many rows per statement, and from there on
 * nothing differs: same ids order per ordering key, same claims, leases,
 * write-back and metrics.
 *
 * xact and seq keep the events' order: the producing transaction's id
 * (full, no wraparound) and a counter of the producing backend.  Events of
 * one transaction keep the order they were written in; a transaction that
 * began after another committed has a larger xact.  The heap's order (ctid)
 * would not do: a free-space map can hand a later row an earlier page.
 */
CREATE FUNCTION callback._inbox_seq()
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'inbox_seq';
COMMENT ON FUNCTION callback._inbox_seq() IS
    'A counter of this backend: the order of the inbox rows one transaction writes.';

CREATE TABLE callback.callback_inbox (
    xact xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    seq bigint NOT NULL DEFAULT callback._inbox_seq(),
    event_id uuid NOT NULL,
    endpoint_id integer NOT NULL,
    event_type text NOT NULL,
    body text NOT NULL,
    ordering_key text,
    traceparent text,
    tracestate text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE callback.callback_inbox IS
    'Deliveries committed with callback.inbox on and not yet moved into callback_queue by the worker (moments, while it runs).';

/* every row is undelivered work: a dump keeps it all */
SELECT pg_catalog.pg_extension_config_dump('callback.callback_inbox', '');

/*
 * Move committed inbox rows into callback_queue as pending deliveries,
 * oldest first; returns how many moved.  Whole transactions move together,
 * and an older one never after a younger, so queue ids keep the inbox's
 * order:
 *	- up to max_rows rows waiting: all of them;
 *	- more (a backlog, after the worker was away): the transactions up to
 *	  an xact chosen to take about half of them (max_rows at least),
 *	  assuming rows spread evenly over the xacts.  Each call then scans
 *	  what is left once, and a backlog of N rows moves in about log2 N
 *	  calls, not N / max_rows calls each reading all of it.
 * One mover at a time in a database (the others return 0 at once), so
 * that queue ids follow the inbox's order.  An endpoint dropped meanwhile
 * leaves rows that the orphan sweep makes dead letters ("endpoint
 * dropped"), as it does for the trigger's own rows.
 */
CREATE FUNCTION callback._move_inbox(max_rows integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    waiting bigint;
    lo numeric;
    hi numeric;
    bound xid8;
    moved bigint;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1, not %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- key: 'pgcb' and 'inbx' as integers, to stay clear of other advisory locks
    IF NOT pg_try_advisory_xact_lock(1885823842, 1768841848) THEN
        RETURN 0;
    END IF;
    SELECT count(*), min(i.xact::text::numeric), max(i.xact::text::numeric)
      INTO waiting, lo, hi
      FROM callback.callback_inbox i;
    IF waiting = 0 THEN
        RETURN 0;
    END IF;
    IF waiting > max_rows THEN
        bound := (lo + floor((hi - lo) * greatest(max_rows, waiting / 2) / waiting))::text::xid8;
    END IF;
    WITH taken AS (
        DELETE FROM callback.callback_inbox i
         WHERE bound IS NULL OR i.xact <= bound
        RETURNING i.*)
    INSERT INTO callback.callback_queue
           (event_id, endpoint_id, event_type, body, ordering_key, traceparent, tracestate, created_at)
    SELECT t.event_id, t.endpoint_id, t.event_type, t.body, t.ordering_key, t.traceparent,
           t.tracestate, t.created_at
      FROM taken t
     ORDER BY t.xact, t.seq;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$fn$;
COMMENT ON FUNCTION callback._move_inbox(integer) IS
    'The worker''s step: move committed inbox rows into callback_queue, oldest first.';

/*
 * drop_endpoint: an endpoint's undelivered work includes what waits in the
 * inbox; force discards it too.
 */
CREATE OR REPLACE FUNCTION callback.drop_endpoint(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
    pending bigint;
BEGIN
    e := callback._endpoint_for_update(name);
    SELECT count(*) INTO pending FROM callback.callback_queue q
     WHERE q.endpoint_id = e.id AND q.status IN ('pending', 'sending');
    pending := pending + (SELECT count(*) FROM callback.callback_inbox i WHERE i.endpoint_id = e.id);
    IF pending > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'endpoint "%" has % undelivered deliveries', name, pending
            USING ERRCODE = 'object_in_use',
                  HINT = 'Pause it and let them drain, or call callback.drop_endpoint(name, force => true) to discard them.';
    END IF;
    DELETE FROM callback.callback_queue q WHERE q.endpoint_id = e.id AND q.status IN ('pending', 'sending');
    DELETE FROM callback.callback_inbox i WHERE i.endpoint_id = e.id;
    -- its figures would stay in callback_metrics with no name; the attempt history stays
    DELETE FROM callback.callback_stats s WHERE s.endpoint_id = e.id;
    DELETE FROM callback.callback_endpoints c WHERE c.id = e.id;
END
$fn$;
