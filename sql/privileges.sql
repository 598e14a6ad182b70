--
-- privileges: what callback_monitor may read, column by column (README
-- "Roles").  The catalog listing below is the contract: a new column or view
-- readable by the monitor changes this output, so a leaky grant cannot slip
-- in unnoticed.  Then, as a monitor, the things it must not read: endpoint
-- headers (Authorization), the full URL (password, token), event bodies
-- (row images, rows hidden by row-level security included), response
-- bodies, secrets.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_pgcb_priv_mon NOLOGIN IN ROLE callback_monitor;
CREATE ROLE regress_pgcb_priv_reader NOLOGIN;

-- Run cmd as role: "ok: <first column of the first row>" or "<SQLSTATE> <message>".
CREATE FUNCTION pg_temp.try(role text, cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    res text;
BEGIN
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', role);
        EXECUTE cmd INTO res;
        RESET ROLE;
        RETURN 'ok: ' || coalesce(res, '(null)');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        RETURN st || ' ' || msg;
    END;
END
$$;

----------------------------------------------------------------- the catalog

-- Every column of every table and view of the extension that
-- callback_monitor may SELECT.  Nothing else is readable.
SELECT c.relname, c.relkind,
       string_agg(a.attname, ', ' ORDER BY a.attnum) AS monitor_may_read
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND has_column_privilege('callback_monitor', c.oid, a.attnum, 'SELECT')
 GROUP BY c.relname, c.relkind
 ORDER BY c.relname COLLATE "C";

-- Tables the monitor reads only column by column: no table-level SELECT
-- (which would cover any column added later).
SELECT c.relname, has_table_privilege('callback_monitor', c.oid, 'SELECT') AS table_level
  FROM pg_class c
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY c.relname COLLATE "C";

-- Columns that hold secrets, credentials or business data: none readable by
-- the monitor, the producer or PUBLIC (no row here is a defect).
SELECT c.relname, a.attname, r AS role
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  CROSS JOIN unnest(ARRAY['callback_monitor', 'callback_producer', 'public']) r
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND a.attname IN ('secret', 'previous_secret', 'headers', 'body', 'response_body')
   AND has_column_privilege(r, c.oid, a.attnum, 'SELECT');
SELECT has_column_privilege('callback_monitor', 'callback.callback_endpoints', 'url', 'SELECT')
    AS monitor_reads_full_url;

-- The admin still reads everything.
SELECT c.relname, a.attname
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND c.relname <> 'callback_worker_stats'
   AND NOT has_column_privilege('callback_admin', c.oid, a.attnum, 'SELECT');

----------------------------------------------------------------- as a monitor

-- An endpoint with a bearer token in its headers and a token in its URL;
-- a table with row-level security whose rows the monitor may not see; a
-- queued event carrying such a row, then a dead letter and an attempt.
SELECT callback.create_endpoint('regress_pgcb_priv_ep',
           'http://127.0.0.1:1/hooks/T0KENPATH?code=T0KENQUERY',
           event_types => '{regress_pgcb_priv.*}',
           headers => '{"Authorization": "Bearer T0KENHEADER", "X-Tenant": "7"}') IS NOT NULL AS created;
CREATE TABLE regress_pgcb_priv_salaries (id int PRIMARY KEY, who text, amount int);
ALTER TABLE regress_pgcb_priv_salaries ENABLE ROW LEVEL SECURITY;
CREATE POLICY none_for_readers ON regress_pgcb_priv_salaries FOR SELECT USING (false);
GRANT SELECT ON regress_pgcb_priv_salaries TO regress_pgcb_priv_reader;
GRANT regress_pgcb_priv_reader TO regress_pgcb_priv_mon;
CREATE TRIGGER regress_pgcb_priv_cb AFTER INSERT ON regress_pgcb_priv_salaries
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_pgcb_priv');
INSERT INTO regress_pgcb_priv_salaries VALUES (1, 'ceo', 999999);
SELECT pg_temp.try('regress_pgcb_priv_mon', 'SELECT count(*) FROM regress_pgcb_priv_salaries') AS rls_hides_rows;
UPDATE callback.callback_queue q SET status = 'dead', last_error = 'HTTP 500', finished_at = now()
  FROM callback.callback_endpoints e
 WHERE e.id = q.endpoint_id AND e.name = 'regress_pgcb_priv_ep';
INSERT INTO callback.callback_attempts (delivery_id, event_id, endpoint_id, event_type, attempt,
                                        started_at, latency_ms, status_code, error, response_body, outcome)
SELECT q.id, q.event_id, q.endpoint_id, q.event_type, 1, now(), 1.5, 500, 'HTTP 500',
       'internal detail T0KENRESPONSE', 'dead'
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_priv_ep';

-- Refused: each way to the headers, the full URL, the bodies and the secrets.
SELECT n, pg_temp.try('regress_pgcb_priv_mon', cmd) AS monitor
  FROM (VALUES
    (1, $$SELECT headers::text FROM callback.callback_endpoints WHERE name = 'regress_pgcb_priv_ep'$$),
    (2, $$SELECT url FROM callback.callback_endpoints WHERE name = 'regress_pgcb_priv_ep'$$),
    (3, $$SELECT name FROM callback.callback_endpoints WHERE headers ? 'Authorization'$$),
    (4, $$SELECT e::text FROM callback.callback_endpoints e$$),
    (5, $$SELECT secret FROM callback.callback_endpoints$$),
    (6, $$SELECT body FROM callback.callback_queue$$),
    (7, $$SELECT q::text FROM callback.callback_queue q$$),
    (8, $$SELECT count(*)::text FROM callback.callback_queue WHERE body LIKE '%999999%'$$),
    (9, $$SELECT body FROM callback.callback_dead_letters$$),
    (10, $$SELECT d::text FROM callback.callback_dead_letters d$$),
    (11, $$SELECT response_body FROM callback.callback_attempts$$),
    (12, $$SELECT * FROM callback.callback_attempts$$),
    (13, $$SELECT * FROM callback.callback_queue$$)) v(n, cmd)
 ORDER BY n;

-- Allowed: counts, states, errors, timings, names, the redacted URL, the
-- header names, the metrics and health views and the Prometheus text.
SELECT n, pg_temp.try('regress_pgcb_priv_mon', cmd) AS monitor
  FROM (VALUES
    (1, $$SELECT url FROM callback.callback_endpoints_redacted WHERE name = 'regress_pgcb_priv_ep'$$),
    (2, $$SELECT header_names::text FROM callback.callback_endpoints_redacted WHERE name = 'regress_pgcb_priv_ep'$$),
    (3, $$SELECT name || ' ' || enabled || ' ' || breaker_state FROM callback.callback_endpoints WHERE name = 'regress_pgcb_priv_ep'$$),
    (4, $$SELECT q.status || ' ' || q.event_type || ' ' || q.last_error FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id WHERE e.name = 'regress_pgcb_priv_ep'$$),
    (5, $$SELECT endpoint || ' ' || event_type || ' ' || last_error FROM callback.callback_dead_letters WHERE endpoint = 'regress_pgcb_priv_ep'$$),
    (6, $$SELECT status_code || ' ' || latency_ms || ' ' || outcome FROM callback.callback_attempts a JOIN callback.callback_endpoints e ON e.id = a.endpoint_id WHERE e.name = 'regress_pgcb_priv_ep'$$),
    (7, $$SELECT 'rows: ' || count(*) FROM callback.callback_metrics WHERE endpoint = 'regress_pgcb_priv_ep'$$),
    (8, $$SELECT count(*)::text FROM callback.callback_health WHERE endpoint = 'regress_pgcb_priv_ep'$$),
    (9, $$SELECT (callback.prometheus_metrics() LIKE '%{endpoint="regress_pgcb_priv_ep"}%')::text$$),
    (10, $$SELECT (count(*) >= 0)::text FROM callback.callback_worker_stats$$),
    (11, $$SELECT count(*)::text FROM callback.callback_stats$$)) v(n, cmd)
 ORDER BY n;

-- No token reaches the monitor through anything it may read: every
-- readable column of every readable relation, as text.
CREATE FUNCTION pg_temp.monitor_sees(needle text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    hit boolean;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, a.attname
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
           AND has_column_privilege('callback_monitor', c.oid, a.attnum, 'SELECT')
    LOOP
        SET LOCAL ROLE regress_pgcb_priv_mon;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I::text LIKE %L)',
                       r.rel, r.attname, '%' || needle || '%') INTO hit;
        RESET ROLE;
        IF hit THEN
            RETURN NEXT r.rel || '.' || r.attname;
        END IF;
    END LOOP;
    SET LOCAL ROLE regress_pgcb_priv_mon;
    IF callback.prometheus_metrics() LIKE '%' || needle || '%' THEN
        RETURN NEXT 'prometheus_metrics()';
    END IF;
    RESET ROLE;
END
$$;
SELECT t AS token, pg_temp.monitor_sees(t) AS seen_in
  FROM unnest(ARRAY['T0KENPATH', 'T0KENQUERY', 'T0KENHEADER', 'T0KENRESPONSE', '999999', 'whsec_']) t;
-- (the listing above is empty; the same search as the admin finds each)
SELECT t AS token, (SELECT count(*) FROM callback.callback_endpoints e
                     WHERE e.url || e.headers::text || e.secret LIKE '%' || t || '%')
                 + (SELECT count(*) FROM callback.callback_queue q WHERE q.body LIKE '%' || t || '%')
                 + (SELECT count(*) FROM callback.callback_attempts a WHERE a.response_body LIKE '%' || t || '%')
                 > 0 AS admin_finds
  FROM unnest(ARRAY['T0KENPATH', 'T0KENQUERY', 'T0KENHEADER', 'T0KENRESPONSE', '999999', 'whsec_']) t;

----------------------------------------------------------------- clean up

DROP TABLE regress_pgcb_priv_salaries;
DELETE FROM callback.callback_attempts a USING callback.callback_endpoints e
 WHERE e.id = a.endpoint_id AND e.name = 'regress_pgcb_priv_ep';
DELETE FROM callback.callback_queue q USING callback.callback_endpoints e
 WHERE e.id = q.endpoint_id AND e.name = 'regress_pgcb_priv_ep';
SELECT callback.drop_endpoint('regress_pgcb_priv_ep');
DROP ROLE regress_pgcb_priv_mon, regress_pgcb_priv_reader;
