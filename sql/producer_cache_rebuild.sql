--
-- producer_cache_rebuild: what a writing session keeps of the queue
-- (queue_insert.c, its shape) is rebuilt when it must be, and a rebuild
-- that fails leaves nothing behind.
--	1. A CHECK constraint of the queue calls a function that is then
--	   replaced: the next event of a session that wrote before follows the
--	   new definition, as a plain INSERT does (the kept executor state had
--	   inlined the old one; a pg_proc invalidation now drops the shape).
--	2. A shape that fails to build (an index expression whose function now
--	   raises when folded), in savepoints: no memory context left under
--	   CacheMemoryContext per failure, and no "relcache reference leak"
--	   warning at commit (the build runs under the savepoint's owner).
-- (Found in review; both failed before the fix.)
--
SET client_min_messages = warning;
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.try(cmd text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE cmd;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

SELECT callback.create_endpoint('regress_pcr', 'http://127.0.0.1:9/pcr', '{pcr.*}') > 0 AS created;
CREATE TABLE pcr_t (id int PRIMARY KEY);
CREATE TRIGGER cb AFTER INSERT ON pcr_t FOR EACH ROW EXECUTE FUNCTION callback.trigger('pcr');

------------------------------------------------ 1. a CHECK's function replaced
CREATE FUNCTION public.pcr_ok(text) RETURNS bool LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1 NOT LIKE '%"id":777}%' $$;
ALTER TABLE callback.callback_queue ADD CONSTRAINT pcr_chk CHECK (public.pcr_ok(body));
INSERT INTO pcr_t VALUES (1);                      -- the session's shape and CHECK made
SELECT pg_temp.try('INSERT INTO pcr_t VALUES (777)') AS refused_777;
CREATE OR REPLACE FUNCTION public.pcr_ok(text) RETURNS bool LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1 NOT LIKE '%"id":888}%' $$;
SELECT pg_temp.try('INSERT INTO pcr_t VALUES (888)') AS refused_888;
SELECT pg_temp.try('INSERT INTO pcr_t VALUES (777)') AS accepted_777;
ALTER TABLE callback.callback_queue DROP CONSTRAINT pcr_chk;
DROP FUNCTION public.pcr_ok(text);
SELECT q.body::jsonb->'data'->'new'->>'id' AS queued
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pcr' ORDER BY q.id;

------------------------------------------------ 2. a shape that fails to build
CREATE FUNCTION public.pcr_boom(text) RETURNS text LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN $1; END $$;
CREATE INDEX pcr_expr ON callback.callback_inbox ((public.pcr_boom('k') || event_type));
CREATE OR REPLACE FUNCTION public.pcr_boom(text) RETURNS text LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN IF $1 = 'k' THEN RAISE EXCEPTION 'pcr_boom'; END IF; RETURN $1; END $$;
SET callback.inbox = on;
BEGIN;
-- each event fails (the index expression cannot be prepared) in a savepoint
SELECT DISTINCT pg_temp.try(format('INSERT INTO pcr_t VALUES (%s)', g)) AS each_event
  FROM generate_series(100, 149) g;
-- one shape at most, not one per failed attempt
SELECT count(*) <= 1 AS at_most_one_shape
  FROM pg_backend_memory_contexts WHERE name = 'pg_callback queue shape';
COMMIT;
RESET callback.inbox;
DROP INDEX callback.pcr_expr;
DROP FUNCTION public.pcr_boom(text);

DROP TABLE pcr_t;
SELECT callback.drop_endpoint('regress_pcr', force => true);
