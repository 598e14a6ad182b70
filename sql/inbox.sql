--
-- inbox: callback.inbox (issue 10, the write path).  With it on, the row
-- trigger, the statement trigger and enqueue() write their deliveries into
-- callback_inbox (no index) instead of callback_queue; the worker moves the
-- committed ones into the queue with callback._move_inbox(max_events), in the
-- order they were written (written_at, xact, seq).  No worker serves this
-- database: the moves below are this session's own calls, so every row
-- stays where the test puts it.  Random values (event ids, xids,
-- timestamps) are never printed; a body's timestamp is compared masked.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run cmd, as role if given: "ok" or "<SQLSTATE> <message> HINT: <hint>".
CREATE FUNCTION pg_temp.try(role text, cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hnt text;
BEGIN
    BEGIN
        IF role IS NOT NULL THEN
            EXECUTE format('SET LOCAL ROLE %I', role);
        END IF;
        EXECUTE cmd;
        RESET ROLE;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
        RETURN st || ' ' || msg || ' HINT: ' || coalesce(nullif(hnt, ''), '(no hint)');
    END;
END
$$;

-- A body without its timestamp, which differs between any two events.
CREATE FUNCTION pg_temp.masked(body text) RETURNS text LANGUAGE sql AS $$
SELECT regexp_replace(body, '"timestamp":"[^"]*"', '"timestamp":"<ts>"')
$$;

-- An event id stepped k times: its last 48 bits plus k, modulo 2^48.
CREATE FUNCTION pg_temp.id_step(id uuid, k int) RETURNS uuid LANGUAGE sql AS $$
SELECT (left(h, 20) || lpad(to_hex((('x' || right(h, 12))::bit(48)::bigint + k) % 281474976710656), 12, '0'))::uuid
  FROM replace(id::text, '-', '') h
$$;

-- callback_inbox, one row per event: the statement trigger packs events
-- of one endpoint into a row (events > 1), the first in event_id and body,
-- events 2..n in more (each: 4-byte big-endian length, body; event k's id
-- is the row's stepped k - 1 times).
-- nth: the event's place in its row.
CREATE FUNCTION pg_temp.inbox_events(OUT i callback.callback_inbox, OUT nth int)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    pos int;
    len int;
    first uuid;
BEGIN
    FOR i IN SELECT * FROM callback.callback_inbox LOOP
        nth := 1;
        RETURN NEXT;
        pos := 0;
        first := i.event_id;
        FOR k IN 2 .. i.events LOOP
            len := (get_byte(i.more, pos) << 24) | (get_byte(i.more, pos + 1) << 16)
                   | (get_byte(i.more, pos + 2) << 8) | get_byte(i.more, pos + 3);
            i.event_id := pg_temp.id_step(first, k - 1);
            i.body := convert_from(substr(i.more, pos + 5, len), 'UTF8');
            pos := pos + 4 + len;
            nth := k;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- Whether the queue ids of the inbox events saved in ib_before follow the
-- order they were written in: (written_at, xact, seq), and in a pack nth.
CREATE FUNCTION pg_temp.ids_in_written_order() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT bool_and(b.rn = q.rn)
              FROM (SELECT event_id, endpoint_id, row_number() OVER (ORDER BY written_at, xact, seq, nth) AS rn
                      FROM ib_before) b
              JOIN (SELECT event_id, endpoint_id, row_number() OVER (ORDER BY id) AS rn
                      FROM callback.callback_queue
                     WHERE event_id IN (SELECT event_id FROM ib_before)) q
             USING (event_id, endpoint_id));
END
$$;

SELECT callback.create_endpoint('regress_ib1', 'http://127.0.0.1:9/ib', '{ib.*}') > 0 AS created;
SELECT callback.create_endpoint('regress_ib_fan' || i, 'http://127.0.0.1:9/fan', '{ibfan.*}',
                                ordered => i = 3) > 0 AS created
  FROM generate_series(1, 3) i;

-- What waits in the inbox and what is in the queue, for this test's endpoints.
CREATE VIEW pg_temp.ibx AS
SELECT (x.i).*, e.name AS endpoint, (x.i).body::jsonb->'data'->'new'->>'v' AS v
  FROM pg_temp.inbox_events() x JOIN callback.callback_endpoints e ON e.id = (x.i).endpoint_id
 WHERE e.name LIKE 'regress\_ib%';
CREATE VIEW pg_temp.ibq AS
SELECT q.*, e.name AS endpoint, q.body::jsonb->'data'->'new'->>'v' AS v
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name LIKE 'regress\_ib%';

CREATE TABLE ib_row (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON ib_row
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('ib.row');
CREATE TABLE ib_stmt (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON ib_stmt REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('ib.stmt');

-- Nothing waits before the test; the setting is off unless set.
SELECT count(*) AS inbox_rows FROM callback.callback_inbox;
SHOW callback.inbox;

----------------------------------------------------------------- where deliveries go

-- The row trigger, the statement trigger (3 rows) and enqueue(): 5 rows in
-- the inbox, none in the queue.
SET callback.inbox = on;
INSERT INTO ib_row VALUES (1, 'row');
UPDATE ib_row SET v = 'row updated' WHERE id = 1;
INSERT INTO ib_stmt SELECT i, 'stmt' FROM generate_series(1, 3) i;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "enqueued"}}') IS NOT NULL AS enqueued;
SELECT event_type, count(*) AS in_inbox FROM pg_temp.ibx GROUP BY 1 ORDER BY event_type COLLATE "C";
SELECT count(*) AS in_queue FROM pg_temp.ibq;

-- A transaction rolled back leaves nothing, though its statements saw
-- their rows; a savepoint rolled back takes its rows only.
BEGIN;
INSERT INTO ib_row VALUES (2, 'rolled back');
INSERT INTO ib_stmt SELECT i, 'rolled back' FROM generate_series(10, 12) i;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "rolled back"}}') IS NOT NULL AS enqueued;
SELECT count(*) AS seen_in_transaction FROM pg_temp.ibx WHERE v = 'rolled back';
ROLLBACK;
BEGIN;
INSERT INTO ib_row VALUES (3, 'before savepoint');
SAVEPOINT s;
INSERT INTO ib_row VALUES (4, 'savepoint rolled back');
INSERT INTO ib_stmt SELECT i, 'savepoint rolled back' FROM generate_series(20, 22) i;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "savepoint rolled back"}}') IS NOT NULL AS enqueued;
ROLLBACK TO SAVEPOINT s;
INSERT INTO ib_row VALUES (5, 'after savepoint');
COMMIT;
SELECT v, count(*) FROM pg_temp.ibx GROUP BY v ORDER BY v COLLATE "C";
SELECT count(*) AS in_queue FROM pg_temp.ibq;

-- Fan-out: three endpoints match ibfan.*, so one event gives three inbox
-- rows (one event id), the key only on the ordered endpoint's row.
CREATE TABLE ib_fan (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON ib_fan FOR EACH ROW EXECUTE FUNCTION callback.trigger('ibfan');
INSERT INTO ib_fan VALUES (1, 'fan'), (2, 'fan');
SELECT endpoint, count(*) AS rows, count(DISTINCT event_id) AS events,
       string_agg(coalesce(ordering_key, '-'), ',' ORDER BY ordering_key) AS keys
  FROM pg_temp.ibx WHERE event_type = 'ibfan.insert' GROUP BY endpoint ORDER BY endpoint;
SELECT count(*) AS events_with_three_rows
  FROM (SELECT event_id FROM pg_temp.ibx WHERE event_type = 'ibfan.insert'
         GROUP BY event_id HAVING count(DISTINCT endpoint_id) = 3) e;

----------------------------------------------------------------- the move

-- A traceparent and tracestate too, so that every column is compared.
BEGIN;
SET LOCAL callback.traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
SET LOCAL callback.tracestate = 'congo=t61rcWkgMzE';
INSERT INTO ib_row VALUES (6, 'traced');
COMMIT;

CREATE TEMP TABLE ib_before AS SELECT (x.i).*, x.nth FROM pg_temp.inbox_events() x;
SELECT count(*) AS waiting, count(traceparent) AS traced FROM ib_before;
-- (it counts events: a pack counts as many as it carries)
SELECT callback._move_inbox(2000) = (SELECT count(*) FROM ib_before) AS moved_all;
SELECT count(*) AS left_in_inbox FROM callback.callback_inbox;
-- Each inbox row is now exactly one queue row with the same values,
-- pending, never tried, the event's own created_at.
SELECT (SELECT count(*) FROM (
          SELECT event_id, endpoint_id, event_type, body, ordering_key, traceparent, tracestate, created_at
            FROM ib_before
          EXCEPT ALL
          SELECT event_id, endpoint_id, event_type, body, ordering_key, traceparent, tracestate, created_at
            FROM callback.callback_queue) d) AS missing_from_queue,
       (SELECT count(*) FROM (
          SELECT event_id, endpoint_id, event_type, body, ordering_key, traceparent, tracestate, created_at
            FROM callback.callback_queue WHERE event_id IN (SELECT event_id FROM ib_before)
          EXCEPT ALL
          SELECT event_id, endpoint_id, event_type, body, ordering_key, traceparent, tracestate, created_at
            FROM ib_before) d) AS not_from_inbox;
SELECT status, attempts, count(*) AS queued, count(traceparent) AS traced,
       count(*) FILTER (WHERE batch_id IS NULL AND lease_expires_at IS NULL AND claimed_by IS NULL
                          AND last_attempt_at IS NULL AND finished_at IS NULL) AS untouched
  FROM callback.callback_queue WHERE event_id IN (SELECT event_id FROM ib_before)
 GROUP BY status, attempts;
-- Queue ids in the order the events were written.
SELECT pg_temp.ids_in_written_order();
-- Nothing waits: the next call moves nothing.
SELECT callback._move_inbox(2000) AS moved_again;
DELETE FROM callback.callback_queue q USING ib_before b WHERE q.event_id = b.event_id;
DROP TABLE ib_before;

----------------------------------------------------------------- same rows as the direct path

-- The same changes written twice, with the inbox off (straight into the
-- queue) and on (through the inbox and the move): the same deliveries,
-- byte for byte but the timestamp: type, body, key, trace context.
CREATE TABLE ib_cmp (id int PRIMARY KEY, v text, n numeric, j jsonb, t timestamptz, b bytea);
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON ib_cmp
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('ibfan.cmp');
CREATE TABLE ib_cmp_s (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON ib_cmp_s REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('ibfan.cmps');
CREATE FUNCTION pg_temp.cmp_changes() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('callback.traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', true);
    INSERT INTO ib_cmp VALUES (1, E'quote " backslash \\ ü €', 1.5e300, '{"a": [1, null]}',
                               '2026-01-02 03:04:05.678+00', '\x00ff');
    INSERT INTO ib_cmp VALUES (2, NULL, NULL, NULL, NULL, NULL);
    UPDATE ib_cmp SET v = 'updated' WHERE id = 2;
    DELETE FROM ib_cmp WHERE id = 1;
    PERFORM set_config('callback.traceparent', '', true);
    INSERT INTO ib_cmp_s SELECT i, 'stmt ' || i FROM generate_series(1, 5) i;
    PERFORM callback.enqueue('ibfan.enq', '{"x": [1, 2.50, "é"]}', key => 'k1');
    DELETE FROM ib_cmp;
    DELETE FROM ib_cmp_s;
END
$$;
CREATE TEMP TABLE ib_direct AS SELECT id FROM callback.callback_queue WHERE false;
SET callback.inbox = off;
BEGIN;
SELECT pg_temp.cmp_changes();
COMMIT;
INSERT INTO ib_direct SELECT id FROM pg_temp.ibq WHERE event_type LIKE 'ibfan.%';
SELECT count(*) AS direct_rows FROM ib_direct;
SELECT count(*) AS in_inbox FROM pg_temp.ibx;
SET callback.inbox = on;
BEGIN;
SELECT pg_temp.cmp_changes();
COMMIT;
SELECT count(*) AS in_inbox FROM pg_temp.ibx;
SELECT count(*) AS in_queue_beside_direct FROM pg_temp.ibq WHERE id NOT IN (SELECT id FROM ib_direct);
-- in the inbox: the same as the direct rows
SELECT count(*) AS differences FROM (
    (SELECT endpoint, event_type, pg_temp.masked(body), ordering_key, traceparent, tracestate
       FROM pg_temp.ibq WHERE id IN (SELECT id FROM ib_direct)
     EXCEPT ALL
     SELECT endpoint, event_type, pg_temp.masked(body), ordering_key, traceparent, tracestate
       FROM pg_temp.ibx)
    UNION ALL
    (SELECT endpoint, event_type, pg_temp.masked(body), ordering_key, traceparent, tracestate
       FROM pg_temp.ibx
     EXCEPT ALL
     SELECT endpoint, event_type, pg_temp.masked(body), ordering_key, traceparent, tracestate
       FROM pg_temp.ibq WHERE id IN (SELECT id FROM ib_direct))) d;
SELECT callback._move_inbox(2000) AS moved;
-- moved: the same again, and in the same order per endpoint (ids of each
-- side ranked; a statement's packs are written at its end, so the order
-- across endpoints is not the direct path's, and no delivery depends on it)
SELECT count(*) AS differences_in_order FROM (
    SELECT row_number() OVER (PARTITION BY endpoint ORDER BY id) AS rn, endpoint, event_type,
           pg_temp.masked(body) AS body, ordering_key, traceparent, tracestate
      FROM pg_temp.ibq WHERE id IN (SELECT id FROM ib_direct)) a
  FULL JOIN (
    SELECT row_number() OVER (PARTITION BY endpoint ORDER BY id) AS rn, endpoint, event_type,
           pg_temp.masked(body) AS body, ordering_key, traceparent, tracestate
      FROM pg_temp.ibq WHERE id NOT IN (SELECT id FROM ib_direct)) b USING (rn, endpoint)
 WHERE a IS DISTINCT FROM b;
SELECT event_type, count(*) / 2 AS per_path, count(DISTINCT event_id) AS events
  FROM pg_temp.ibq WHERE event_type LIKE 'ibfan.%' GROUP BY 1 ORDER BY event_type COLLATE "C";
DELETE FROM callback.callback_queue q USING pg_temp.ibq b WHERE q.id = b.id;
DROP TABLE ib_direct;

----------------------------------------------------------------- order

-- Four transactions of several events each (a multi-row statement among
-- them), all moved by one call: queue ids follow the order the events were
-- written in, so each transaction's events stay together and in order, and
-- the transactions in the order they ran.
BEGIN;
INSERT INTO ib_row VALUES (11, 'tx1 a');
INSERT INTO ib_stmt SELECT i, 'tx1 stmt ' || i FROM generate_series(101, 103) i;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "tx1 enq"}}') IS NOT NULL AS enqueued;
COMMIT;
BEGIN;
INSERT INTO ib_stmt SELECT i, 'tx2 stmt ' || i FROM generate_series(201, 204) i;
UPDATE ib_row SET v = 'tx2 b' WHERE id = 11;
COMMIT;
BEGIN;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "tx3 enq"}}') IS NOT NULL AS enqueued;
INSERT INTO ib_row VALUES (12, 'tx3 c');
COMMIT;
BEGIN;
DELETE FROM ib_row WHERE id = 12;
INSERT INTO ib_stmt SELECT i, 'tx4 stmt ' || i FROM generate_series(401, 402) i;
COMMIT;
CREATE TEMP TABLE ib_before AS SELECT (x.i).*, x.nth FROM pg_temp.inbox_events() x;
SELECT callback._move_inbox(2000) AS moved;
SELECT event_type, coalesce(v, body::jsonb->'data'->'old'->>'v') AS v
  FROM pg_temp.ibq WHERE event_id IN (SELECT event_id FROM ib_before) ORDER BY id;
SELECT pg_temp.ids_in_written_order();
DELETE FROM callback.callback_queue q USING ib_before b WHERE q.event_id = b.event_id;
DROP TABLE ib_before;

-- A backlog larger than max_events: one transaction of 50 events, then ten
-- of 30 (each its own transaction: COMMIT in the block), through the row
-- trigger (one inbox row per event: the statement trigger packs), moved with
-- max_events = 20 until nothing is left.  Each call moves about half of what
-- waits (20 at least), by the time the rows were written: a transaction's
-- rows may go in two calls, and still in order.  All of them, once each, in
-- the order they were written.
INSERT INTO ib_row SELECT i, 'backlog' FROM generate_series(1001, 1050) i;
DO $$
BEGIN
    FOR t IN 1 .. 10 LOOP
        INSERT INTO ib_row SELECT 2000 + t * 100 + i, 'backlog' FROM generate_series(1, 30) i;
        COMMIT;
    END LOOP;
END
$$;
CREATE TEMP TABLE ib_before AS SELECT (x.i).*, x.nth FROM pg_temp.inbox_events() x;
SELECT count(*) AS waiting, count(DISTINCT xact) AS transactions FROM ib_before;
CREATE TEMP TABLE ib_calls (call int, moved bigint, left_in_inbox bigint);
DO $$
DECLARE
    m bigint;
    k int := 0;
BEGIN
    LOOP
        m := callback._move_inbox(20);
        EXIT WHEN m = 0 OR k >= 50;
        k := k + 1;
        INSERT INTO ib_calls
        SELECT k, m, (SELECT count(*) FROM callback.callback_inbox);
    END LOOP;
END
$$;
SELECT count(*) BETWEEN 3 AND 8 AS calls_about_log2,
       sum(moved) AS moved, min(left_in_inbox) AS left_in_inbox,
       bool_and(moved >= 20 OR left_in_inbox = 0) AS each_at_least_max_events
  FROM ib_calls;
-- the first call: about half of the 350
SELECT moved BETWEEN 140 AND 230 AS first_about_half FROM ib_calls WHERE call = 1;
SELECT count(*) AS queued, count(DISTINCT event_id) AS events
  FROM callback.callback_queue WHERE event_id IN (SELECT event_id FROM ib_before);
SELECT pg_temp.ids_in_written_order();
DELETE FROM callback.callback_queue q USING ib_before b WHERE q.event_id = b.event_id;
DROP TABLE ib_before, ib_calls;

----------------------------------------------------------------- refusals

-- max_events NULL, 0, negative: refused, nothing moved.
SELECT callback.enqueue('ib.enq', '{"new": {"v": "waits"}}') IS NOT NULL AS enqueued;
SELECT pg_temp.try(NULL, 'SELECT callback._move_inbox(NULL)') AS null_rows;
SELECT pg_temp.try(NULL, 'SELECT callback._move_inbox(0)') AS zero_rows;
SELECT pg_temp.try(NULL, 'SELECT callback._move_inbox(-1)') AS negative_rows;
SELECT (SELECT count(*) FROM pg_temp.ibx) AS in_inbox, (SELECT count(*) FROM pg_temp.ibq) AS in_queue;
-- the largest max_events is no problem
SELECT callback._move_inbox(2147483647) AS moved;
DELETE FROM callback.callback_queue q USING pg_temp.ibq b WHERE q.id = b.id;

----------------------------------------------------------------- roles

-- A producer cannot choose where its events go, nor touch the inbox, nor
-- move it; neither can the admin (it may read it) nor the monitor.  The
-- producer's trigger and enqueue() still write there: the insert is the
-- queue's owner's.
CREATE ROLE regress_ib_producer NOLOGIN IN ROLE callback_producer;
CREATE ROLE regress_ib_admin NOLOGIN IN ROLE callback_admin;
CREATE ROLE regress_ib_monitor NOLOGIN IN ROLE callback_monitor;
SELECT r AS role, pg_temp.try(r, c) AS result
  FROM unnest(ARRAY['regress_ib_producer', 'regress_ib_admin', 'regress_ib_monitor']) r,
       unnest(ARRAY['SET callback.inbox = off',
                    'SET LOCAL callback.inbox = on',
                    $$SELECT set_config('callback.inbox', 'off', false)$$,
                    'SELECT count(*) FROM callback.callback_inbox',
                    $$INSERT INTO callback.callback_inbox (event_id, endpoint_id, event_type, body)
                      VALUES (gen_random_uuid(), 1, 'ib.forged', '{}')$$,
                    'UPDATE callback.callback_inbox SET body = body',
                    'DELETE FROM callback.callback_inbox',
                    'SELECT callback._move_inbox(10)',
                    'SELECT callback._inbox_seq()']) WITH ORDINALITY c(c, n)
 ORDER BY r, n;
SHOW callback.inbox;
CREATE TABLE ib_prod (id int PRIMARY KEY, v text);
ALTER TABLE ib_prod OWNER TO regress_ib_producer;
SET ROLE regress_ib_producer;
CREATE TRIGGER cb AFTER INSERT ON ib_prod FOR EACH ROW EXECUTE FUNCTION callback.trigger('ib.prod');
RESET ROLE;
SELECT pg_temp.try('regress_ib_producer', $$INSERT INTO ib_prod VALUES (1, 'by producer')$$) AS insert_as_producer;
SELECT pg_temp.try('regress_ib_producer',
                   $$SELECT callback.enqueue('ib.prod.enq', '{"new": {"v": "by producer"}}')$$) AS enqueue_as_producer;
SELECT event_type, v FROM pg_temp.ibx ORDER BY seq;
SELECT count(*) AS in_queue FROM pg_temp.ibq;
SELECT callback._move_inbox(2000) AS moved;
DELETE FROM callback.callback_queue q USING pg_temp.ibq b WHERE q.id = b.id;
DROP TABLE ib_prod;
DROP ROLE regress_ib_producer, regress_ib_admin, regress_ib_monitor;

----------------------------------------------------------------- drop_endpoint

-- Deliveries waiting in the inbox are undelivered work: without force the
-- drop is refused, and the count includes them (2 in the inbox, 1 in the
-- queue); nothing changes.  With force they go, with the endpoint.
SELECT callback.create_endpoint('regress_ib_drop', 'http://127.0.0.1:9/drop', '{ibdrop}') > 0 AS created;
SELECT callback.enqueue('ibdrop', '{}') IS NOT NULL AS enqueued FROM generate_series(1, 2);
SELECT pg_temp.try(NULL, $$SELECT callback.drop_endpoint('regress_ib_drop')$$) AS only_inbox_rows;
SET callback.inbox = off;
SELECT callback.enqueue('ibdrop', '{}') IS NOT NULL AS enqueued;
SET callback.inbox = on;
SELECT pg_temp.try(NULL, $$SELECT callback.drop_endpoint('regress_ib_drop')$$) AS inbox_and_queue_rows;
SELECT (SELECT count(*) FROM pg_temp.ibx WHERE endpoint = 'regress_ib_drop') AS in_inbox,
       (SELECT count(*) FROM pg_temp.ibq WHERE endpoint = 'regress_ib_drop') AS in_queue;
SELECT id AS drop_id FROM callback.callback_endpoints WHERE name = 'regress_ib_drop' \gset
SELECT pg_temp.try(NULL, $$SELECT callback.drop_endpoint('regress_ib_drop', force => true)$$) AS forced;
SELECT (SELECT count(*) FROM callback.callback_inbox WHERE endpoint_id = :drop_id) AS in_inbox,
       (SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = :drop_id) AS in_queue,
       (SELECT count(*) FROM callback.callback_endpoints WHERE name = 'regress_ib_drop') AS endpoints;

----------------------------------------------------------------- SET LOCAL

-- Each insert goes where the setting says when it is made, in one
-- transaction: on, then SET LOCAL off, then on again, and a savepoint
-- whose SET LOCAL off is rolled back with its row.
SET callback.inbox = on;
BEGIN;
INSERT INTO ib_row VALUES (21, '1 inbox (session on)');
SET LOCAL callback.inbox = off;
INSERT INTO ib_row VALUES (22, '2 queue (local off)');
INSERT INTO ib_stmt SELECT i, '3 queue (local off, statement)' FROM generate_series(5001, 5002) i;
SELECT callback.enqueue('ib.enq', '{"new": {"v": "4 queue (local off, enqueue)"}}') IS NOT NULL AS enqueued;
SET LOCAL callback.inbox = on;
INSERT INTO ib_row VALUES (25, '5 inbox (local on)');
SAVEPOINT s;
SET LOCAL callback.inbox = off;
INSERT INTO ib_row VALUES (26, 'rolled back');
ROLLBACK TO SAVEPOINT s;
INSERT INTO ib_stmt SELECT i, '6 inbox (savepoint undone)' FROM generate_series(5006, 5007) i;
COMMIT;
SHOW callback.inbox;
-- and the other way round: off for the session, on for one transaction
SET callback.inbox = off;
BEGIN;
SET LOCAL callback.inbox = on;
INSERT INTO ib_row VALUES (27, '7 inbox (local on)');
COMMIT;
INSERT INTO ib_row VALUES (28, '8 queue (session off)');
SHOW callback.inbox;
SELECT * FROM (SELECT 'inbox' AS "table", v FROM pg_temp.ibx
               UNION ALL
               SELECT 'queue', v FROM pg_temp.ibq) r
 ORDER BY v COLLATE "C", "table";
DELETE FROM callback.callback_inbox i USING pg_temp.ibx b WHERE i.event_id = b.event_id;
DELETE FROM callback.callback_queue q USING pg_temp.ibq b WHERE q.id = b.id;

RESET callback.inbox;
SELECT callback.drop_endpoint(name) FROM callback.callback_endpoints
 WHERE name LIKE 'regress\_ib%' ORDER BY name;
DROP VIEW pg_temp.ibx, pg_temp.ibq;
DROP TABLE ib_row, ib_stmt, ib_fan, ib_cmp, ib_cmp_s;
SELECT count(*) AS inbox_rows FROM callback.callback_inbox;
