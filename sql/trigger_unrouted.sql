--
-- trigger_unrouted: an event no enabled endpoint's patterns match is not
-- built at all (trigger_body.c, pgcb_trigger_routed): no body, no event id,
-- nothing queued, and the statement path does not read its transition
-- tables.  So a table whose events nobody subscribes to yet pays for the
-- AFTER trigger alone, and a row too large to send errors only once an
-- endpoint wants it.  An endpoint created later in the same session is
-- seen by its next event (route_cache.c).
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run cmd: "ok" or "<SQLSTATE> <message>".
CREATE FUNCTION pg_temp.try(cmd text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE cmd;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE TABLE unr_row (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON unr_row
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('unr');
CREATE TABLE unr_stmt (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON unr_stmt REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('unrs');
CREATE VIEW pg_temp.unrq AS
SELECT q.event_type, count(*) AS n
  FROM callback.callback_queue q
 WHERE q.event_type LIKE 'unr%'
 GROUP BY q.event_type ORDER BY q.event_type;

-- No endpoint matches unr.* or unrs.*: nothing is queued, and a body past
-- callback.max_payload_bytes is not built, so it is not refused.
SET callback.max_payload_bytes = 64;
SELECT pg_temp.try($$INSERT INTO unr_row VALUES (1, repeat('x', 200))$$) AS unrouted_large_row;
SELECT pg_temp.try($$INSERT INTO unr_stmt SELECT g, repeat('x', 200) FROM generate_series(1, 100) g$$)
    AS unrouted_large_rows;
SELECT * FROM pg_temp.unrq;

-- An endpoint for both, created in this session: the next events are
-- routed, built and checked.
SELECT callback.create_endpoint('regress_unr', 'http://127.0.0.1:9/unr', '{unr.*,unrs.*}') > 0 AS created;
SELECT pg_temp.try($$INSERT INTO unr_row VALUES (2, repeat('x', 200))$$) AS routed_large_row;
RESET callback.max_payload_bytes;
INSERT INTO unr_row VALUES (3, 'x');
INSERT INTO unr_stmt SELECT g, 'x' FROM generate_series(101, 150) g;
SELECT * FROM pg_temp.unrq;

-- Paused, an endpoint still gets its events (they wait); disabled, not.
SELECT callback.pause_endpoint('regress_unr');
INSERT INTO unr_row VALUES (4, 'x');
SELECT * FROM pg_temp.unrq;
SELECT callback.alter_endpoint('regress_unr', enabled => false);
INSERT INTO unr_row VALUES (5, 'x');
INSERT INTO unr_stmt SELECT g, 'x' FROM generate_series(151, 160) g;
SELECT * FROM pg_temp.unrq;

-- A statement trigger declared without its transition table is refused
-- even when nothing would be routed.
CREATE TABLE unr_bad (id int);
CREATE TRIGGER cb AFTER INSERT ON unr_bad
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('unrbad');
SELECT pg_temp.try($$INSERT INTO unr_bad VALUES (1)$$) AS missing_table;

-- A read-only transaction may not queue, routed or not (trigger_bodies says
-- so of enqueue()): a temporary table's trigger must refuse it too when
-- nothing is routed, as it does when an endpoint matches.
CREATE TEMP TABLE unr_ro (id int);
CREATE TRIGGER cb AFTER INSERT ON unr_ro
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('unrro');
BEGIN READ ONLY;
SELECT pg_temp.try($$INSERT INTO unr_ro VALUES (1)$$) AS unrouted_read_only;
ROLLBACK;

DELETE FROM callback.callback_queue WHERE event_type LIKE 'unr%';
SELECT callback.drop_endpoint('regress_unr', force => true);
DROP TABLE unr_row, unr_stmt, unr_bad;
