--
-- bulk_insert: the queue rows of one trigger call are written together
-- (statement level: every row of the transition tables; fan-out: every
-- endpoint of one event), and behave as rows written one at a time: seen
-- by the next statement of the transaction, undone by a savepoint rolled
-- back, nothing of a failed statement left for a later one, ids in the
-- order of the rows, the ordering key only on ordered endpoints' rows.
-- The buffer holds at most 1,000 rows or 64 kB of bodies, so the sizes
-- below cross its bounds.  No worker serves this database.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT callback.create_endpoint('regress_bk1', 'http://127.0.0.1:9/bk', '{bk.*}') > 0 AS created;
SELECT callback.create_endpoint('regress_bk2', 'http://127.0.0.1:9/bk', '{bk.fan.*}') > 0 AS created;
SELECT callback.create_endpoint('regress_bk3', 'http://127.0.0.1:9/bk', '{bk.fan.*}', ordered => true) > 0 AS created;

CREATE VIEW pg_temp.bkq AS
SELECT q.id, e.name AS endpoint, q.event_id, q.ordering_key, q.body,
       q.body::jsonb->'data'->'new'->>'id' AS row_id, q.body::jsonb->'data'->'new'->>'v' AS v
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name LIKE 'regress_bk_';

CREATE TABLE bk_stmt (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON bk_stmt REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('bk.stmt');

----------------------------------------------------------------- one statement, one endpoint

-- 2,500 rows: flushed at 1,000, 2,000 and at the end of the trigger call;
-- the next statement of the transaction sees them all, ids in row order.
BEGIN;
INSERT INTO bk_stmt SELECT i, 'a' FROM generate_series(1, 2500) i;
SELECT count(*) AS seen_in_transaction,
       bool_and(row_id::int = rn) AS ids_in_row_order
  FROM (SELECT row_id, row_number() OVER (ORDER BY id) AS rn FROM pg_temp.bkq) s;
COMMIT;
SELECT count(*) AS queued, count(DISTINCT event_id) AS events FROM pg_temp.bkq;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DELETE FROM bk_stmt;

----------------------------------------------------------------- savepoints

BEGIN;
INSERT INTO bk_stmt SELECT i, 'kept' FROM generate_series(1, 1500) i;
SAVEPOINT s;
INSERT INTO bk_stmt SELECT i, 'undone' FROM generate_series(2001, 3500) i;
SELECT count(*) AS seen_before_rollback FROM pg_temp.bkq;
ROLLBACK TO SAVEPOINT s;
INSERT INTO bk_stmt SELECT i, 'after' FROM generate_series(4001, 4010) i;
COMMIT;
SELECT v, count(*) FROM pg_temp.bkq GROUP BY v ORDER BY v;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DELETE FROM bk_stmt;

-- A statement that fails half-way (row 1,500's body is over the limit):
-- the rows before it were partly written (at each 64 kB of bodies), partly
-- still buffered; the block's rollback takes both, and the next statement
-- queues its own rows only.
SET callback.max_payload_bytes = 2000;
DO $$
BEGIN
    BEGIN
        INSERT INTO bk_stmt SELECT i, CASE WHEN i = 1500 THEN repeat('x', 3000) ELSE 'failed' END
          FROM generate_series(1, 2000) i;
    EXCEPTION WHEN program_limit_exceeded THEN
        RAISE WARNING 'statement failed: %', SQLERRM;
    END;
    INSERT INTO bk_stmt SELECT i, 'next' FROM generate_series(1, 3) i;
END
$$;
SELECT v, count(*) FROM pg_temp.bkq GROUP BY v ORDER BY v;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DELETE FROM bk_stmt;
-- the same failure ending the whole transaction, then a new one
INSERT INTO bk_stmt SELECT i, CASE WHEN i = 1500 THEN repeat('x', 3000) ELSE 'failed' END
  FROM generate_series(1, 2000) i;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
INSERT INTO bk_stmt SELECT i, 'next' FROM generate_series(1, 3) i;
SELECT v, count(*) FROM pg_temp.bkq GROUP BY v ORDER BY v;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DELETE FROM bk_stmt;
RESET callback.max_payload_bytes;

-- Large bodies: the 64 kB bound flushes every few rows; each body whole.
INSERT INTO bk_stmt SELECT i, repeat(md5(i::text), 1000) FROM generate_series(1, 10) i;
SELECT count(*) AS queued,
       count(*) FILTER (WHERE v = repeat(md5(row_id), 1000)) AS whole_bodies
  FROM pg_temp.bkq;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DELETE FROM bk_stmt;

----------------------------------------------------------------- fan-out

-- Three endpoints match bk.fan.*: one row per endpoint per event, the
-- event's rows next to each other, the key on the ordered endpoint's only.
CREATE TABLE bk_fan (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON bk_fan FOR EACH ROW EXECUTE FUNCTION callback.trigger('bk.fan');
BEGIN;
INSERT INTO bk_fan VALUES (1, 'one');
SAVEPOINT s;
INSERT INTO bk_fan VALUES (2, 'undone');
ROLLBACK TO SAVEPOINT s;
INSERT INTO bk_fan VALUES (3, 'three');
COMMIT;
SELECT endpoint, row_id, v, ordering_key FROM pg_temp.bkq ORDER BY id;
SELECT count(DISTINCT event_id) AS events,
       bool_and(n = 3 AND last_id - first_id = 2) AS adjacent_rows_per_event
  FROM (SELECT event_id, count(*) AS n, min(id) AS first_id, max(id) AS last_id
          FROM pg_temp.bkq GROUP BY event_id) e;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;
DROP TRIGGER cb ON bk_fan;

-- The statement path with fan-out: 1,200 events, 3,600 rows.
CREATE TRIGGER cb AFTER INSERT ON bk_fan REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('bk.fan');
INSERT INTO bk_fan SELECT i, 'many' FROM generate_series(10, 1209) i;
SELECT count(*) AS queued, count(DISTINCT event_id) AS events,
       count(*) FILTER (WHERE endpoint = 'regress_bk3' AND ordering_key = row_id) AS keyed_rows,
       count(*) FILTER (WHERE endpoint <> 'regress_bk3' AND ordering_key IS NULL) AS unkeyed_rows
  FROM pg_temp.bkq;
SELECT bool_and(n = 3) AS three_per_event, bool_and(row_id::int = rn + 9) AS events_in_row_order
  FROM (SELECT row_id, count(*) AS n, row_number() OVER (ORDER BY min(id)) AS rn
          FROM pg_temp.bkq GROUP BY event_id, row_id) e;
-- every row in the queue's B-tree indexes where it belongs
CREATE EXTENSION amcheck;
SELECT i.indexrelid::regclass AS index, bt_index_check(i.indexrelid, true) IS NOT NULL AS checked
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE i.indrelid = 'callback.callback_queue'::regclass AND a.amname = 'btree' ORDER BY i.indexrelid::regclass::text;
DROP EXTENSION amcheck;
DELETE FROM callback.callback_queue q USING pg_temp.bkq b WHERE q.id = b.id;

SELECT callback.drop_endpoint('regress_bk' || i) FROM generate_series(1, 3) i;
DROP VIEW pg_temp.bkq;
DROP TABLE bk_stmt, bk_fan;
