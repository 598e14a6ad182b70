/*
 * 58-inbox: where events wait between their commit and the worker, when
 * callback.inbox is on (issue 10, the write path).
 *
 * A delivery written into callback_queue by the trigger pays for the
 * queue's two btree entries (primary key, callback_queue_due): about half
 * of what the trigger adds to an INSERT, by callgrind.  callback_inbox has
 * no index at all: a producer's transaction writes the heap tuple and its
 * WAL, nothing else.  The worker moves what committed into callback_queue
 * at the start of each cycle, many rows per call, and from there on
 * nothing differs: same ids order per ordering key, same claims, leases,
 * write-back and metrics.
 *
 * written_at, xact and seq keep the events' order, as the queue's ids do
 * on the direct path (nextval as each row is written): the time the row
 * was written (clock_timestamp(), on a clock that does not step back), the
 * producing transaction's id and a counter of the producing backend, for
 * rows written in the same microsecond.  An event written after another's
 * transaction committed (one after the other, or after waiting for its row
 * lock) has a later written_at.  A time, not a transaction id, leads, and it
 * is the row's, not its transaction's start: a change that began first but
 * waited for another's commit comes after it, and a cluster restored from a
 * dump, whose transaction ids start elsewhere, keeps the order.  The heap's
 * order (ctid) would not do: a free-space map can hand a later row an
 * earlier page.
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
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    written_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    events integer NOT NULL DEFAULT 1,
    more bytea
);
COMMENT ON TABLE callback.callback_inbox IS
    'Deliveries committed with callback.inbox on and not yet moved into callback_queue by the worker (moments, while it runs). A row carries events deliveries (a pack, written by the statement trigger): the first in event_id and body, events 2..n in more.';
COMMENT ON COLUMN callback.callback_inbox.events IS
    'How many deliveries the row carries: 1, or a pack''s count (the statement trigger packs events of one endpoint, type and trace context with no ordering key into rows stored in about 1,900 bytes, their more compressed with lz4 where the server has it).';
COMMENT ON COLUMN callback.callback_inbox.more IS
    'NULL for one delivery; else deliveries 2..events in order, each its body''s length as a 4-byte unsigned integer in network byte order and the body''s bytes, with no padding. Delivery k (2..events) has the event id of the row''s event_id with its last 48 bits plus k - 1, modulo 2^48. Same endpoint, type, trace context and created_at as the row. Stored lz4-compressed when that saves space; reading it decompresses it.';

/*
 * The worker vacuums the inbox itself (src/inbox_vacuum.c), with VACUUM's
 * default freeze ages whatever the settings say.  Autovacuum, which still
 * vacuums its TOAST table and freezes it when it must, gets them here: a
 * database owner's vacuum_freeze_table_age = 0 would make each autovacuum
 * of the inbox aggressive, and an aggressive vacuum waits for a page a
 * cursor keeps pinned, holding the lock that every move needs.
 */
ALTER TABLE callback.callback_inbox SET (autovacuum_freeze_min_age = 50000000,
                                         autovacuum_freeze_table_age = 150000000,
                                         autovacuum_multixact_freeze_min_age = 5000000,
                                         autovacuum_multixact_freeze_table_age = 150000000);

/* every row is undelivered work: a dump keeps it all */
SELECT pg_catalog.pg_extension_config_dump('callback.callback_inbox', '');

/*
 * Move committed inbox rows into callback_queue as pending deliveries, in
 * the order they were written; returns how many events moved: all of them
 * when up to max_events wait, else the oldest rows carrying half of them
 * (max_events at least; a pack, one row, counts its events), so that a
 * backlog moves in about log2 N calls.  One mover at a time per database.
 * C (src/inbox.c): the same as one INSERT ... SELECT FROM (DELETE ...
 * RETURNING) ORDER BY, at about two thirds of its cost per row.
 */
CREATE FUNCTION callback._move_inbox(max_events integer)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'move_inbox';
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
     WHERE q.endpoint_id = e.id AND q.finished_at IS NULL AND q.status IN ('pending', 'sending');
    -- a row may carry a pack of several events
    pending := pending + (SELECT coalesce(sum(i.events), 0) FROM callback.callback_inbox i WHERE i.endpoint_id = e.id);
    IF pending > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'endpoint "%" has % undelivered deliveries', name, pending
            USING ERRCODE = 'object_in_use',
                  HINT = 'Pause it and let them drain, or call callback.drop_endpoint(name, force => true) to discard them.';
    END IF;
    -- the inbox first: a move under way holds its rows, and once it commits
    -- the queue's DELETE, a statement later, sees the rows it moved there
    DELETE FROM callback.callback_inbox i WHERE i.endpoint_id = e.id;
    DELETE FROM callback.callback_queue q WHERE q.endpoint_id = e.id AND q.finished_at IS NULL AND q.status IN ('pending', 'sending');
    -- its figures would stay in callback_metrics with no name; the attempt history stays
    DELETE FROM callback.callback_stats s WHERE s.endpoint_id = e.id;
    DELETE FROM callback.callback_endpoints c WHERE c.id = e.id;
END
$fn$;

/*
 * The backlog the views show includes what waits in the inbox: with the
 * worker away, events pile up there, and an operator must see them.  Only
 * the q part of each view changes (a third arm); the rest is 1.0's.
 */
CREATE OR REPLACE VIEW callback.callback_metrics AS
WITH s AS (
    SELECT st.endpoint_id, st.event_type,
           sum(st.attempts) AS attempts, sum(st.delivered) AS delivered,
           sum(st.failed) AS failed, sum(st.dead) AS dead,
           sum(st.latency_sum_ms) AS latency_sum_ms, max(st.latency_max_ms) AS latency_max_ms,
           callback.histogram_sum(st.latency_hist) AS hist,
           (array_agg(st.last_error ORDER BY st.minute DESC)
                FILTER (WHERE st.last_error IS NOT NULL))[1] AS last_error
      FROM callback.callback_stats st
     GROUP BY st.endpoint_id, st.event_type
), q AS (
    -- the open rows through callback_queue_due (finished_at IS NULL, part
    -- 98): the cost follows the backlog, not the history kept in the queue
    SELECT b.endpoint_id, b.event_type, sum(b.n) AS pending, min(b.oldest) AS oldest
      FROM (SELECT cq.endpoint_id, cq.event_type, count(*) AS n, min(cq.created_at) AS oldest
              FROM callback.callback_queue cq
             WHERE cq.finished_at IS NULL AND cq.status IN ('pending', 'sending')
             GROUP BY cq.endpoint_id, cq.event_type
            UNION ALL
            -- committed with callback.inbox on, not yet moved by the worker;
            -- a row carries events deliveries (a pack)
            SELECT ci.endpoint_id, ci.event_type, sum(ci.events), min(ci.created_at)
              FROM callback.callback_inbox ci
             GROUP BY ci.endpoint_id, ci.event_type) b
     GROUP BY b.endpoint_id, b.event_type
)
SELECT e.name AS endpoint,
       coalesce(s.event_type, q.event_type) AS event_type,
       coalesce(s.attempts, 0) AS total_calls,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(s.failed, 0) AS failed_attempts,
       coalesce(s.dead, 0) AS dead,
       coalesce(q.pending, 0) AS pending,
       round(100.0 * s.delivered / nullif(s.attempts, 0), 2) AS success_rate,
       round((s.latency_sum_ms / nullif(s.attempts, 0))::numeric, 2) AS avg_ms,
       round(least(callback.histogram_percentile(s.hist, 0.50), s.latency_max_ms)::numeric, 2) AS p50_ms,
       round(least(callback.histogram_percentile(s.hist, 0.95), s.latency_max_ms)::numeric, 2) AS p95_ms,
       round(least(callback.histogram_percentile(s.hist, 0.99), s.latency_max_ms)::numeric, 2) AS p99_ms,
       round(s.latency_max_ms::numeric, 2) AS max_ms,
       s.last_error,
       pg_catalog.now() - q.oldest AS oldest_pending_age
  FROM s
  FULL JOIN q ON q.endpoint_id = s.endpoint_id AND q.event_type = s.event_type
  LEFT JOIN callback.callback_endpoints e ON e.id = coalesce(s.endpoint_id, q.endpoint_id);

CREATE OR REPLACE VIEW callback.callback_health AS
WITH t AS (
    SELECT coalesce(current_setting('callback.health_min_success_rate', true), '99.5')::float8 AS min_rate,
           coalesce(current_setting('callback.health_max_avg_ms', true), '150')::float8 AS max_avg,
           coalesce(current_setting('callback.health_max_backlog', true), '1000')::bigint AS max_backlog,
           coalesce(current_setting('callback.health_window', true), '15min')::interval AS win
), s AS (
    SELECT st.endpoint_id, sum(st.attempts) AS attempts, sum(st.delivered) AS delivered,
           sum(st.latency_sum_ms) AS latency_sum_ms
      FROM callback.callback_stats st
     -- written out (not from t) so that it bounds a scan of callback_stats_minute
     WHERE st.minute >= date_trunc('minute', pg_catalog.now()
               - coalesce(current_setting('callback.health_window', true), '15min')::interval)
     GROUP BY st.endpoint_id
), q AS (
    SELECT b.endpoint_id, sum(b.n) AS backlog, min(b.oldest) AS oldest
      FROM (SELECT cq.endpoint_id, count(*) AS n, min(cq.created_at) AS oldest
              FROM callback.callback_queue cq
             WHERE cq.finished_at IS NULL AND cq.status IN ('pending', 'sending')
             GROUP BY cq.endpoint_id
            UNION ALL
            -- committed with callback.inbox on, not yet moved by the worker;
            -- a row carries events deliveries (a pack)
            SELECT ci.endpoint_id, sum(ci.events), min(ci.created_at)
              FROM callback.callback_inbox ci
             GROUP BY ci.endpoint_id) b
     GROUP BY b.endpoint_id
), f AS (
    SELECT e.id, e.name, e.enabled, e.paused, e.breaker_state, e.breaker_reason,
           round(100.0 * s.delivered / nullif(s.attempts, 0), 2) AS success_rate,
           round((s.latency_sum_ms / nullif(s.attempts, 0))::numeric, 2) AS avg_ms,
           coalesce(q.backlog, 0) AS backlog, pg_catalog.now() - q.oldest AS oldest_pending_age,
           t.*
      FROM callback.callback_endpoints e
      CROSS JOIN t
      LEFT JOIN s ON s.endpoint_id = e.id
      LEFT JOIN q ON q.endpoint_id = e.id
), c AS (
    SELECT f.*, ARRAY(
        SELECT x FROM unnest(ARRAY[
            CASE WHEN NOT f.enabled THEN 'alert: endpoint disabled' END,
            CASE WHEN f.breaker_state = 'open' THEN 'alert: circuit breaker open (' || coalesce(f.breaker_reason, '?') || ')' END,
            CASE WHEN f.paused THEN 'warn: paused' END,
            CASE WHEN f.success_rate < f.min_rate - 5 THEN 'alert: success rate ' || f.success_rate || '% < ' || f.min_rate || '%'
                 WHEN f.success_rate < f.min_rate THEN 'warn: success rate ' || f.success_rate || '% < ' || f.min_rate || '%' END,
            CASE WHEN f.avg_ms >= 4 * f.max_avg THEN 'alert: average ' || f.avg_ms || ' ms >= ' || 4 * f.max_avg || ' ms'
                 WHEN f.avg_ms >= f.max_avg THEN 'warn: average ' || f.avg_ms || ' ms >= ' || f.max_avg || ' ms' END,
            CASE WHEN f.backlog >= 10 * f.max_backlog THEN 'alert: backlog ' || f.backlog || ' >= ' || 10 * f.max_backlog
                 WHEN f.backlog >= f.max_backlog THEN 'warn: backlog ' || f.backlog || ' >= ' || f.max_backlog END
        ]) x WHERE x IS NOT NULL) AS findings
      FROM f
)
SELECT c.name AS endpoint,
       CASE WHEN EXISTS (SELECT 1 FROM unnest(c.findings) x WHERE x LIKE 'alert:%') THEN 'alert'
            WHEN cardinality(c.findings) > 0 THEN 'warn'
            ELSE 'ok' END AS status,
       array_to_string(c.findings, '; ') AS reason,
       c.success_rate, c.avg_ms, c.backlog, c.oldest_pending_age,
       c.breaker_state, c.enabled, c.paused
  FROM c;
