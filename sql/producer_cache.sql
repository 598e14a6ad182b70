--
-- producer_cache: what the write path keeps between events of one session
-- (issue 10) is dropped when what it was made from changes:
--	- the trigger's event type (trigger.c), kept for the last prefix: a
--	  table renamed, a trigger replaced with another prefix, another
--	  operation give their own type; an invalid prefix is still refused;
--	- the last event type's routes (route_cache.c): an endpoint altered in
--	  this session is seen by the next event of the same type;
--	- the table's executor state (queue_insert.c: EState, constraints,
--	  slots, index expressions, kept per backend): an index or a CHECK
--	  constraint added to the queue or the inbox in a transaction is used
--	  by that transaction's next event, and forgotten with its rollback.
-- Every event below is written in a session that has written before, so
-- that the kept state is what serves it.
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

SELECT callback.create_endpoint('regress_pc', 'http://127.0.0.1:9/pc', '{pc_*,pc.*}') > 0 AS created;
CREATE VIEW pg_temp.pcq AS
SELECT q.id, q.event_type, q.body::jsonb->'data'->>'table' AS tab,
       q.body::jsonb->'data'->'new'->>'id' AS new_id, q.body::jsonb->'data'->'old'->>'id' AS old_id
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pc';

----------------------------------------------------------------- event types

-- The no-argument form names events after the table: renamed between two
-- writes of one session, the second event has the new name; each
-- operation its own type.
CREATE TABLE pc_a (id int PRIMARY KEY);
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON pc_a
    FOR EACH ROW EXECUTE FUNCTION callback.trigger();
INSERT INTO pc_a VALUES (1);
ALTER TABLE pc_a RENAME TO pc_b;
INSERT INTO pc_b VALUES (2);
UPDATE pc_b SET id = 3 WHERE id = 2;
INSERT INTO pc_b VALUES (4);
DELETE FROM pc_b WHERE id = 4;
BEGIN;
-- within one transaction too
ALTER TABLE pc_b RENAME TO pc_c;
INSERT INTO pc_c VALUES (5);
ALTER TABLE pc_c RENAME TO pc_b;
INSERT INTO pc_b VALUES (6);
COMMIT;
SELECT event_type, tab, new_id, old_id FROM pg_temp.pcq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.pcq p WHERE q.id = p.id;

-- A name that is no valid prefix is refused, after a valid one was kept;
-- renamed back, it fires again.
ALTER TABLE pc_b RENAME TO "pc b";
SELECT pg_temp.try($$INSERT INTO "pc b" VALUES (7)$$) AS invalid_name;
ALTER TABLE "pc b" RENAME TO pc_b;
SELECT pg_temp.try($$INSERT INTO pc_b VALUES (8)$$) AS valid_again;

-- A trigger replaced with a prefix, then with another, then with an empty
-- one (refused), then with the first again.
CREATE OR REPLACE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON pc_b
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('pc.x');
INSERT INTO pc_b VALUES (9);
CREATE OR REPLACE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON pc_b
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('pc.y');
INSERT INTO pc_b VALUES (10);
CREATE OR REPLACE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON pc_b
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('');
SELECT pg_temp.try($$INSERT INTO pc_b VALUES (11)$$) AS empty_prefix;
CREATE OR REPLACE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON pc_b
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('pc.x');
INSERT INTO pc_b VALUES (12);
SELECT event_type, tab, new_id FROM pg_temp.pcq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.pcq p WHERE q.id = p.id;

-- Two tables written in turn, row and statement triggers: each event its
-- own table's type.
CREATE TABLE pc_s (id int);
CREATE TRIGGER cb AFTER INSERT ON pc_s REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger();
INSERT INTO pc_s SELECT generate_series(1, 2);
INSERT INTO pc_b VALUES (13);
ALTER TABLE pc_s RENAME TO pc_t;
INSERT INTO pc_t SELECT generate_series(3, 4);
SELECT event_type, tab, new_id FROM pg_temp.pcq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.pcq p WHERE q.id = p.id;

----------------------------------------------------------------- routes

-- One event type, its endpoint's patterns changed in between, in one
-- transaction of this session: each event routed by the patterns of its
-- moment.
BEGIN;
INSERT INTO pc_b VALUES (20);
SELECT callback.alter_endpoint('regress_pc', event_types => ARRAY['pc.other']) IS NOT NULL AS altered;
INSERT INTO pc_b VALUES (21);
SELECT callback.alter_endpoint('regress_pc', event_types => ARRAY['pc.x.*']) IS NOT NULL AS altered;
INSERT INTO pc_b VALUES (22);
SELECT callback.alter_endpoint('regress_pc', enabled => false) IS NOT NULL AS disabled;
INSERT INTO pc_b VALUES (23);
SELECT callback.alter_endpoint('regress_pc', enabled => true) IS NOT NULL AS enabled;
INSERT INTO pc_b VALUES (24);
COMMIT;
SELECT event_type, new_id FROM pg_temp.pcq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.pcq p WHERE q.id = p.id;
SELECT callback.alter_endpoint('regress_pc', event_types => ARRAY['pc_*', 'pc.*']) IS NOT NULL AS altered;

----------------------------------------------------------------- the table's state

-- For the queue and then the inbox: an expression index, a partial index
-- and a CHECK constraint added in a transaction of a session that has
-- written there before (a transaction that has written there holds the
-- table open: CREATE INDEX refuses then).  The next events are indexed by
-- both (found by index scans), the constraint refuses what it must (in a
-- savepoint: the transaction goes on writing), and after the rollback none
-- of them is used any more.
CREATE FUNCTION pg_temp.state_round(target text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    cond text;
    n bigint;
    l text;
BEGIN
    EXECUTE format('SET LOCAL callback.inbox = %s', target = 'callback_inbox');
    EXECUTE format('CREATE INDEX pc_expr ON callback.%I (lower(event_type))', target);
    EXECUTE format('CREATE INDEX pc_part ON callback.%I (endpoint_id) WHERE event_type = ''pc.x.update''', target);
    EXECUTE format('ALTER TABLE callback.%I ADD CONSTRAINT pc_chk CHECK (body NOT LIKE ''%%"id":666%%'')', target);
    INSERT INTO pc_b VALUES (101);
    UPDATE pc_b SET id = 102 WHERE id = 101;
    INSERT INTO pc_b SELECT generate_series(103, 105);
    INSERT INTO pc_t SELECT generate_series(200, 202);  -- the statement path
    RETURN NEXT 'refused: ' || pg_temp.try('INSERT INTO pc_b VALUES (666)');
    INSERT INTO pc_b VALUES (106);
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_bitmapscan = off;
    -- each count, and the plan that found it
    FOREACH cond IN ARRAY ARRAY['lower(event_type) = ''pc.x.insert''', 'lower(event_type) = ''pc_t.insert''',
                                'event_type = ''pc.x.update'''] LOOP
        -- events: the inbox packs a statement's events into one row
        EXECUTE format('SELECT %s FROM callback.%I WHERE %s',
                       CASE WHEN target = 'callback_inbox' THEN 'sum(events)' ELSE 'count(*)' END,
                       target, cond) INTO n;
        RETURN NEXT cond || ': ' || n;
        FOR l IN EXECUTE format('EXPLAIN (COSTS OFF) SELECT count(*) FROM callback.%I WHERE %s', target, cond) LOOP
            RETURN NEXT '  ' || regexp_replace(l, 'callback_(queue|inbox)', 'T', 'g');
        END LOOP;
    END LOOP;
END
$$;

-- the queue: written to before by this session
INSERT INTO pc_b VALUES (100);
BEGIN;
SELECT * FROM pg_temp.state_round('callback_queue');
ROLLBACK;
-- the index and constraint gone: 666 goes in, read without an index
INSERT INTO pc_b VALUES (666);
SELECT event_type, new_id, old_id FROM pg_temp.pcq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.pcq p WHERE q.id = p.id;
DELETE FROM pc_b WHERE id = 666;

-- the inbox (no index of its own): its state made by a first event, then
-- the same round
SET callback.inbox = on;
INSERT INTO pc_b VALUES (99);
BEGIN;
SELECT * FROM pg_temp.state_round('callback_inbox');
ROLLBACK;
INSERT INTO pc_b VALUES (666);
SELECT i.event_type, i.body::jsonb->'data'->'new'->>'id' AS new_id, i.body::jsonb->'data'->'old'->>'id' AS old_id
  FROM callback.callback_inbox i JOIN callback.callback_endpoints e ON e.id = i.endpoint_id
 WHERE e.name = 'regress_pc' ORDER BY i.written_at, i.xact, i.seq;
DELETE FROM callback.callback_inbox i USING callback.callback_endpoints e
 WHERE e.id = i.endpoint_id AND e.name = 'regress_pc';
RESET callback.inbox;

DROP TABLE pc_b, pc_t;
SELECT callback.drop_endpoint('regress_pc', force => true);
