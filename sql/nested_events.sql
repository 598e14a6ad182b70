--
-- nested_events: SQL that runs while the extension queues an event (a
-- cast to json called to build a body, a default, a check constraint or an
-- index expression of the queue) and changes what the event depends on.
-- No worker serves this database: rows stay where the test puts them.
--
SET client_min_messages = warning;

SELECT callback.create_endpoint('regress_ne', 'http://127.0.0.1:9/ne', '{ne.*}') > 0 AS created;
CREATE TABLE ne_row (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON ne_row FOR EACH ROW EXECUTE FUNCTION callback.trigger('ne');

-- 1. A default that queues an event of its own would form its row in the
-- slot the outer row is being formed in: a clear error instead, raised
-- before anything the outer row uses is closed or rebuilt.  Caught inside
-- the default, the outer row is whole and the next one too, also when the
-- default replaces a function first (which makes the queue's prepared
-- state stale: the nested event would have rebuilt it under the outer row).
CREATE FUNCTION ne_nested_default() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  PERFORM callback.enqueue('ne.nested', '{}');
  RETURN pg_catalog.now();
END $$;
-- What the cases below run from the queue's definition: a function
-- replaced first, then an event queued and its refusal caught, shown as a
-- warning (loud) or only counted in ne.refused.
CREATE FUNCTION ne_try_nested(loud boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE OR REPLACE FUNCTION public.ne_dummy() RETURNS int LANGUAGE sql AS 'SELECT 1';
  BEGIN
    PERFORM callback.enqueue('ne.nested', '{}');
  EXCEPTION WHEN feature_not_supported THEN
    IF loud THEN
      RAISE WARNING 'caught: %', SQLERRM;
    END IF;
    PERFORM set_config('ne.refused',
                       (coalesce(nullif(current_setting('ne.refused', true), ''), '0')::int + 1)::text,
                       false);
  END;
END $$;
CREATE FUNCTION ne_nested_caught() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  PERFORM public.ne_try_nested(true);
  RETURN pg_catalog.now();
END $$;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.ne_nested_default();
INSERT INTO ne_row VALUES (9, 'i');
ROLLBACK;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.ne_nested_caught();
INSERT INTO ne_row VALUES (10, 'j');
INSERT INTO ne_row VALUES (11, 'k');
SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids,
       bool_and(next_attempt_at = now()) AS at_now
  FROM callback.callback_queue
 WHERE event_type = 'ne.insert' AND (body LIKE '%"id":10%' OR body LIKE '%"id":11%');
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'ne.nested';
ROLLBACK;

-- An immutable default is folded when the backend prepares the defaults:
-- queueing from it is refused there too.
CREATE FUNCTION ne_folded() RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM public.ne_try_nested(true);
  RETURN '2000-01-01 00:00:00+00';
END $$;
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT public.ne_folded();
INSERT INTO ne_row VALUES (12, 'l');
SELECT count(*) AS rows, bool_and(next_attempt_at = '2000-01-01 00:00:00+00') AS folded
  FROM callback.callback_queue WHERE event_type = 'ne.insert' AND body LIKE '%"id":12%';
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'ne.nested';
ROLLBACK;

-- An index expression runs as a fan-out's buffered rows are written: two
-- endpoints, so that both rows go through the buffer.  Partial, so that
-- building the index evaluates it for no row already there.
SELECT callback.create_endpoint('regress_ne_2', 'http://127.0.0.1:9/ne2', '{ne.*}') > 0 AS created;
CREATE FUNCTION ne_index_expr(text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM public.ne_try_nested(true);
  RETURN length($1);
END $$;
BEGIN;
CREATE INDEX ne_queue_expr ON callback.callback_queue (public.ne_index_expr(body))
 WHERE body LIKE '%"id":13,%';
INSERT INTO ne_row VALUES (13, 'm');
SELECT count(*) AS rows, count(DISTINCT endpoint_id) AS endpoints
  FROM callback.callback_queue WHERE event_type = 'ne.insert' AND body LIKE '%"id":13%';
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'ne.nested';
ROLLBACK;

-- A check constraint runs as each row is formed (NOT VALID: the rows
-- already there are not checked when it is added).
CREATE FUNCTION ne_check(text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM public.ne_try_nested(true);
  RETURN true;
END $$;
BEGIN;
ALTER TABLE callback.callback_queue ADD CONSTRAINT ne_queue_check CHECK (public.ne_check(body)) NOT VALID;
INSERT INTO ne_row VALUES (14, 'n');
SELECT count(*) AS rows, count(DISTINCT endpoint_id) AS endpoints
  FROM callback.callback_queue WHERE event_type = 'ne.insert' AND body LIKE '%"id":14%';
SELECT count(*) AS nested FROM callback.callback_queue WHERE event_type = 'ne.nested';
ROLLBACK;

-- A statement's events packed into the inbox: the packs' rows are formed
-- when the batch ends, each taking the inbox's defaults.  The refusals are
-- counted, not shown: how many packs the events make is not the point.
CREATE FUNCTION ne_counted() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  PERFORM public.ne_try_nested(false);
  RETURN pg_catalog.clock_timestamp();
END $$;
CREATE TABLE ne_bulk (id int PRIMARY KEY);
CREATE TRIGGER cbs AFTER INSERT ON ne_bulk REFERENCING NEW TABLE AS n
  FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('ne');
SET callback.inbox = on;
BEGIN;
ALTER TABLE callback.callback_inbox ALTER COLUMN written_at SET DEFAULT public.ne_counted();
INSERT INTO ne_bulk SELECT g FROM generate_series(1, 30) g;
SELECT current_setting('ne.refused')::int = count(*) AS each_row_refused
  FROM callback.callback_inbox WHERE event_type = 'ne.insert' AND xact = pg_current_xact_id();
SELECT sum(events) AS events, count(DISTINCT endpoint_id) AS endpoints
  FROM callback.callback_inbox WHERE event_type = 'ne.insert' AND xact = pg_current_xact_id();
SELECT (SELECT count(*) FROM callback.callback_inbox WHERE event_type = 'ne.nested') +
       (SELECT count(*) FROM callback.callback_queue WHERE event_type = 'ne.nested') AS nested;
ROLLBACK;
RESET callback.inbox;
DROP TABLE ne_bulk;
DROP FUNCTION ne_check(text);
DROP FUNCTION ne_counted();

SELECT callback.drop_endpoint('regress_ne_2', force => true);
DROP FUNCTION ne_index_expr(text);
DROP FUNCTION ne_folded();
DROP FUNCTION ne_nested_default();
DROP FUNCTION ne_nested_caught();
DROP FUNCTION ne_try_nested(boolean);
DROP FUNCTION IF EXISTS ne_dummy();

-- 2. An endpoint disabled while an event's body is built (by a cast the
-- body calls) is seen by that event: it goes to the endpoint still enabled.
SELECT callback.create_endpoint('regress_ne_b', 'http://127.0.0.1:9/neb', '{ne.*}') > 0 AS created;
CREATE TYPE ne_mood AS ENUM ('calm', 'cross');
CREATE FUNCTION ne_mood_json(ne_mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
  PERFORM callback.alter_endpoint('regress_ne_b', enabled => false);
  RETURN to_json($1::text);
END $$;
CREATE CAST (ne_mood AS json) WITH FUNCTION ne_mood_json(ne_mood);
CREATE TABLE ne_cast (id int PRIMARY KEY, m ne_mood);
CREATE TRIGGER cb AFTER INSERT ON ne_cast FOR EACH ROW EXECUTE FUNCTION callback.trigger('ne');
BEGIN;
INSERT INTO ne_cast VALUES (1, 'cross');
SELECT e.name FROM callback.callback_queue q
  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE q.event_type = 'ne.insert' AND q.body LIKE '%cross%' ORDER BY e.name;
ROLLBACK;
DROP TABLE ne_cast;
DROP CAST (ne_mood AS json);
DROP FUNCTION ne_mood_json(ne_mood);
DROP TYPE ne_mood;
SELECT callback.drop_endpoint('regress_ne_b', force => true);

-- 3. A cast that moves the inbox while a statement's events are packed
-- into it: refused (the move would write where the open batch writes, the
-- inbox); the rows an earlier statement left there stay as they were.
SET callback.inbox = on;
INSERT INTO ne_row VALUES (21, 'u'), (22, 'v');
CREATE TYPE ne_step AS ENUM ('calm', 'move');
CREATE FUNCTION ne_step_json(ne_step) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
  IF $1 = 'move' THEN
    BEGIN
      PERFORM callback._move_inbox(10);
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
      RAISE WARNING 'caught: %', SQLERRM;
    END;
  END IF;
  RETURN to_json($1::text);
END $$;
CREATE CAST (ne_step AS json) WITH FUNCTION ne_step_json(ne_step);
CREATE TABLE ne_stmt (id int PRIMARY KEY, s ne_step);
CREATE TRIGGER cbs AFTER INSERT ON ne_stmt REFERENCING NEW TABLE AS n
  FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('ne');
BEGIN;
INSERT INTO ne_stmt VALUES (31, 'calm'), (32, 'move'), (33, 'calm');
SELECT count(*) FILTER (WHERE xact <> pg_current_xact_id()) AS earlier_rows,
       sum(events) FILTER (WHERE xact = pg_current_xact_id()) AS this_statement
  FROM callback.callback_inbox WHERE event_type = 'ne.insert';
SELECT count(*) AS moved FROM callback.callback_queue WHERE event_type = 'ne.insert';
ROLLBACK;
-- in a statement of its own, the move takes them
SELECT callback._move_inbox(10) AS moved;
SELECT count(*) AS queued FROM callback.callback_queue WHERE event_type = 'ne.insert';
RESET callback.inbox;
DROP TABLE ne_stmt;
DROP CAST (ne_step AS json);
DROP FUNCTION ne_step_json(ne_step);
DROP TYPE ne_step;

DELETE FROM callback.callback_queue WHERE event_type = 'ne.insert';
SELECT callback.drop_endpoint('regress_ne', force => true);
DROP TABLE ne_row;
SELECT count(*) AS queue_rows FROM callback.callback_queue WHERE event_type LIKE 'ne.%';
