--
-- engine_checks: the engine's statements (the claim, the write-back, the
-- stats: queue_rows.c) check the queue's constraints and index predicates
-- as they are at each statement, as an UPDATE would.  A constraint added,
-- swapped or dropped, an index made, a check that reads the whole row and
-- a domain's constraint added later are all seen by the next statement of
-- the same session: each call of process_callbacks() below runs the
-- engine in this backend, against an endpoint that refuses the connection
-- (each attempt fails, and is written back).  A cache of these
-- expressions across statements was built and measured in 2026-12 (it
-- saved no instructions after its own costs, and was dropped); this test
-- is what such a cache must pass: an earlier version of it crashed the
-- server at case 7.
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

-- every other endpoint paused: only ours is attempted
CREATE TEMP TABLE px_paused AS SELECT name FROM callback.callback_endpoints WHERE NOT paused;
SELECT count(callback.pause_endpoint(name)) >= 0 AS paused FROM px_paused;
SELECT callback.create_endpoint('regress_px', 'http://127.0.0.1:9/px', '{px.*}',
                                max_attempts => 20, failure_threshold => 1000) > 0 AS created;
SELECT callback.enqueue('px.a', '{"n": 1}') IS NOT NULL AS enqueued;
CREATE VIEW pg_temp.pxq AS
SELECT q.status, q.attempts, q.last_error IS NOT NULL AS has_error
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_px';
CREATE FUNCTION pg_temp.due_now() RETURNS void LANGUAGE sql AS $$
    UPDATE callback.callback_queue q SET next_attempt_at = now()
      FROM callback.callback_endpoints e WHERE e.id = q.endpoint_id AND e.name = 'regress_px'
$$;

-- 1. the first call
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SELECT * FROM pg_temp.pxq;

-- 2. a constraint added, which the next call lets by
ALTER TABLE callback.callback_queue ADD CONSTRAINT regress_px_a CHECK (attempts < 100);
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SELECT * FROM pg_temp.pxq;

-- 3. swapped for one the next write-back breaks, as many constraints as
-- before (a cache keyed by their number would not see the change)
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_a,
    ADD CONSTRAINT regress_px_b CHECK (attempts < 3);
SELECT pg_temp.due_now();
SELECT pg_temp.try('SELECT callback.process_callbacks(10)') AS with_constraint;
SELECT * FROM pg_temp.pxq;

-- 4. and dropped: the row is written again
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_b;
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SELECT * FROM pg_temp.pxq;

-- 5. the same inside one transaction, between calls
BEGIN;
ALTER TABLE callback.callback_queue ADD CONSTRAINT regress_px_a CHECK (attempts < 100);
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_a,
    ADD CONSTRAINT regress_px_b CHECK (attempts < 5);
SELECT pg_temp.due_now();
SAVEPOINT s;
SELECT pg_temp.try('SELECT callback.process_callbacks(10)') AS with_constraint;
ROLLBACK TO s;
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_b;
SELECT callback.process_callbacks(10) >= 1 AS attempted;
COMMIT;
SELECT * FROM pg_temp.pxq;

-- 6. a partial index made: the write-back's version gets its entry (found
-- by an index scan) as its predicate says
CREATE INDEX regress_px_part ON callback.callback_queue (endpoint_id) WHERE attempts >= 6 AND last_error IS NOT NULL;
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM callback.callback_queue WHERE attempts >= 6 AND last_error IS NOT NULL;
SELECT count(*) AS in_partial_index FROM callback.callback_queue WHERE attempts >= 6 AND last_error IS NOT NULL;
RESET enable_seqscan;
RESET enable_bitmapscan;
DROP INDEX callback.regress_px_part;
SELECT * FROM pg_temp.pxq;

-- 7. a check that reads the whole row: each statement evaluates it with
-- state of its own (its first evaluation keeps the row's descriptor in
-- the statement's memory)
CREATE FUNCTION public.regress_px_row_ok(r callback.callback_queue) RETURNS boolean
    LANGUAGE plpgsql AS 'BEGIN RETURN r.attempts IS NOT NULL; END';
ALTER TABLE callback.callback_queue ADD CONSTRAINT regress_px_row CHECK (public.regress_px_row_ok(callback_queue));
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
SELECT * FROM pg_temp.pxq;
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_row;
DROP FUNCTION public.regress_px_row_ok(callback.callback_queue);

-- 8. a check through a domain, whose own constraint is added later (no
-- invalidation of the table): the next statement checks it
CREATE DOMAIN public.regress_px_small AS int;
ALTER TABLE callback.callback_queue ADD CONSTRAINT regress_px_dom
    CHECK ((attempts::public.regress_px_small) IS NOT NULL);
SELECT pg_temp.due_now();
SELECT callback.process_callbacks(10) >= 1 AS attempted;
ALTER DOMAIN public.regress_px_small ADD CONSTRAINT regress_px_lim CHECK (VALUE < 10);
SELECT pg_temp.due_now();
SELECT pg_temp.try('SELECT callback.process_callbacks(10)') AS with_domain_constraint;
SELECT * FROM pg_temp.pxq;
ALTER TABLE callback.callback_queue DROP CONSTRAINT regress_px_dom;
DROP DOMAIN public.regress_px_small;

-- clean up
SELECT callback.drop_endpoint('regress_px', force => true) AS dropped;
SELECT count(callback.resume_endpoint(name)) >= 0 AS resumed FROM px_paused;
