--
-- column_defaults: the producer fills a queue or inbox row's other columns
-- from their defaults as the catalog has them (src/queue_insert.c, prepared
-- once per backend): the row is what an INSERT would give, an operator's
-- ALTER ... SET DEFAULT included, and with track_functions on the calls
-- are counted as the executor counts them.  No worker serves this
-- database: rows stay where the test puts them.
--
SET client_min_messages = warning;

SELECT callback.create_endpoint('regress_cd', 'http://127.0.0.1:9/cd', '{cd.*}') > 0 AS created;
CREATE TABLE cd_row (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON cd_row FOR EACH ROW EXECUTE FUNCTION callback.trigger('cd');

-- 1. The stock defaults, on the direct path: the identity, 'pending', 0,
-- now() for both timestamps.
BEGIN;
INSERT INTO cd_row VALUES (1, 'a'), (2, 'b');
SELECT count(*) AS rows,
       count(DISTINCT id) AS distinct_ids,
       bool_and(status = 'pending') AS pending,
       bool_and(attempts = 0) AS no_attempts,
       bool_and(created_at = now() AND next_attempt_at = now()) AS at_now,
       bool_and(lease_expires_at IS NULL AND finished_at IS NULL) AS nulls
  FROM callback.callback_queue WHERE event_type = 'cd.insert';
COMMIT;

-- 2. An operator's default, an expression: honoured from the next row on
-- (the ALTER invalidates the backend's prepared defaults).  Rolled back,
-- so that a failure here cannot leave it behind: the next row takes the
-- stock default again.
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT pg_catalog.now() + interval '1 hour';
INSERT INTO cd_row VALUES (3, 'c');
SELECT next_attempt_at - now() AS delay FROM callback.callback_queue
 WHERE event_type = 'cd.insert' AND body LIKE '%"id":3%';
ROLLBACK;
BEGIN;
INSERT INTO cd_row VALUES (4, 'd');
SELECT next_attempt_at - now() AS delay FROM callback.callback_queue
 WHERE event_type = 'cd.insert' AND body LIKE '%"id":4%';
COMMIT;

-- 3. The inbox: xact and seq, created_at (now()), written_at
-- (clock_timestamp(), later than the transaction's start), events 1.
SET callback.inbox = on;
BEGIN;
INSERT INTO cd_row VALUES (5, 'e'), (6, 'f');
SELECT count(*) AS rows,
       bool_and(xact = pg_current_xact_id()) AS this_xact,
       max(seq) - min(seq) AS seq_step,
       bool_and(created_at = now()) AS created_now,
       bool_and(written_at >= now() AND written_at <= clock_timestamp()) AS written_since,
       bool_and(events = 1 AND more IS NULL) AS single
  FROM callback.callback_inbox WHERE event_type = 'cd.insert';

-- 4. With track_functions on when a backend prepares its defaults, the
-- calls are counted as the executor would count them: two rows, two calls
-- of callback._inbox_seq() (a C function: track_functions = all).  A new
-- session, so that the defaults are prepared under the setting.
COMMIT;
\c
SET client_min_messages = warning;
SET callback.inbox = on;
SET track_functions = 'all';
BEGIN;
INSERT INTO cd_row VALUES (7, 'g'), (8, 'h');
SELECT calls FROM pg_stat_xact_user_functions
 WHERE schemaname = 'callback' AND funcname = '_inbox_seq';
SELECT count(*) AS rows, count(DISTINCT (xact, seq)) AS distinct_xact_seq
  FROM callback.callback_inbox WHERE event_type = 'cd.insert';
COMMIT;
RESET track_functions;
RESET callback.inbox;

DELETE FROM callback.callback_inbox WHERE event_type = 'cd.insert';

-- 5. A default that queues an event of its own would form its row in the
-- slot the outer row is being formed in: a clear error instead, raised
-- before anything the outer row uses is closed or rebuilt.  Caught inside
-- the default, the outer row is whole and the next one too, also when the
-- default replaces a function first (which makes the queue's prepared
-- state stale: the nested event would have rebuilt it under the outer row).
CREATE FUNCTION cd_nested_default() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  PERFORM callback.enqueue('cd.nested', '{}');
  RETURN pg_catalog.now();
END $$;
CREATE FUNCTION cd_nested_caught() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  CREATE OR REPLACE FUNCTION public.cd_dummy() RETURNS int LANGUAGE sql AS 'SELECT 1';
  BEGIN
    PERFORM callback.enqueue('cd.nested', '{}');
  EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'caught: %', SQLERRM;
  END;
  RETURN pg_catalog.now();
END $$;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.cd_nested_default();
INSERT INTO cd_row VALUES (9, 'i');
ROLLBACK;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.cd_nested_caught();
INSERT INTO cd_row VALUES (10, 'j');
INSERT INTO cd_row VALUES (11, 'k');
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids,
       bool_and(next_attempt_at = now()) AS at_now
  FROM callback.callback_queue
 WHERE event_type = 'cd.insert' AND (body LIKE '%"id":10%' OR body LIKE '%"id":11%');
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'cd.nested';
ROLLBACK;

-- An immutable default is folded when the backend prepares the defaults:
-- queueing from it is refused there too.
CREATE FUNCTION cd_folded() RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  BEGIN
    PERFORM callback.enqueue('cd.nested', '{}');
  EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'caught: %', SQLERRM;
  END;
  RETURN '2000-01-01 00:00:00+00';
END $$;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.cd_folded();
INSERT INTO cd_row VALUES (12, 'l');
SELECT count(*) AS rows, bool_and(next_attempt_at = '2000-01-01 00:00:00+00') AS folded
  FROM callback.callback_queue WHERE event_type = 'cd.insert' AND body LIKE '%"id":12%';
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'cd.nested';
ROLLBACK;

-- An index expression runs as a fan-out's buffered rows are written: two
-- endpoints, so that both rows go through the buffer.  Partial, so that
-- building the index evaluates it for no row already there.
SELECT callback.create_endpoint('regress_cd_2', 'http://127.0.0.1:9/cd2', '{cd.*}') > 0 AS created;
CREATE FUNCTION cd_index_side() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE OR REPLACE FUNCTION public.cd_dummy() RETURNS int LANGUAGE sql AS 'SELECT 2';
  BEGIN
    PERFORM callback.enqueue('cd.nested', '{}');
  EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'caught: %', SQLERRM;
  END;
END $$;
CREATE FUNCTION cd_index_expr(text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM public.cd_index_side();
  RETURN length($1);
END $$;
BEGIN;
CREATE INDEX cd_queue_expr ON callback.callback_queue (public.cd_index_expr(body))
 WHERE body LIKE '%"id":13,%';
INSERT INTO cd_row VALUES (13, 'm');
SELECT count(*) AS rows, count(DISTINCT endpoint_id) AS endpoints
  FROM callback.callback_queue WHERE event_type = 'cd.insert' AND body LIKE '%"id":13%';
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'cd.nested';
ROLLBACK;
SELECT callback.drop_endpoint('regress_cd_2', force => true);
DROP FUNCTION cd_index_expr(text);
DROP FUNCTION cd_index_side();
DROP FUNCTION cd_folded();
DROP FUNCTION cd_nested_default();
DROP FUNCTION cd_nested_caught();
DROP FUNCTION IF EXISTS cd_dummy();

-- 6. An endpoint disabled while an event's body is built (by a cast the
-- body calls) is seen by that event: it goes to the endpoint still enabled.
SELECT callback.create_endpoint('regress_cd_b', 'http://127.0.0.1:9/cdb', '{cd.*}') > 0 AS created;
CREATE TYPE cd_mood AS ENUM ('calm', 'cross');
CREATE FUNCTION cd_mood_json(cd_mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
  PERFORM callback.alter_endpoint('regress_cd_b', enabled => false);
  RETURN to_json($1::text);
END $$;
CREATE CAST (cd_mood AS json) WITH FUNCTION cd_mood_json(cd_mood);
CREATE TABLE cd_cast (id int PRIMARY KEY, m cd_mood);
CREATE TRIGGER cb AFTER INSERT ON cd_cast FOR EACH ROW EXECUTE FUNCTION callback.trigger('cd');
BEGIN;
INSERT INTO cd_cast VALUES (1, 'cross');
SELECT e.name FROM callback.callback_queue q
  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE q.event_type = 'cd.insert' AND q.body LIKE '%cross%' ORDER BY e.name;
ROLLBACK;
DROP TABLE cd_cast;
DROP CAST (cd_mood AS json);
DROP FUNCTION cd_mood_json(cd_mood);
DROP TYPE cd_mood;
SELECT callback.drop_endpoint('regress_cd_b', force => true);

SELECT callback.drop_endpoint('regress_cd', force => true);
DROP TABLE cd_row;
SELECT count(*) AS queue_rows FROM callback.callback_queue WHERE event_type = 'cd.insert';
