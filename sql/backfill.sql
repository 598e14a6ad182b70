--
-- backfill: callback.backfill()'s refusals (issue 12, item 6).  Each bad
-- argument is shown with its SQLSTATE, message and hint, followed by the
-- number of queue and progress rows, to show that nothing was written.
-- Run through EXECUTE, where a CALL is atomic: every check comes before
-- the refusal to run inside a transaction, which a valid call then meets.
-- The batches themselves are tested end to end (test/e2e/test_backfill.py).
--
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE PROCEDURE pg_temp.try(cmd text, as_role text DEFAULT NULL) LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hnt text;
BEGIN
    BEGIN
        IF as_role IS NOT NULL THEN
            PERFORM set_config('role', as_role, true);
        END IF;
        EXECUTE cmd;
        RAISE NOTICE 'ok';
        RESET ROLE;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
        RAISE NOTICE '% %', st, msg USING HINT = coalesce(nullif(hnt, ''), '(no hint)');
    END;
    RAISE NOTICE 'queued %, progress rows %',
        (SELECT count(*) FROM callback.callback_queue WHERE event_type LIKE '%.backfill'),
        (SELECT count(*) FROM callback.callback_backfill_progress);
END
$$;

SET client_min_messages = warning;
SELECT callback.create_endpoint('regress_bf', 'http://127.0.0.1:9/hook', event_types => '{nothing}') > 0 AS made;
SELECT callback.create_endpoint('regress_bf_off', 'http://127.0.0.1:9/off', event_types => '{nothing}') > 0 AS made;
SELECT callback.alter_endpoint('regress_bf_off', enabled => false);
SET client_min_messages = notice;
CREATE TABLE bf_items (id int PRIMARY KEY, name text);
INSERT INTO bf_items SELECT g, 'n' || g FROM generate_series(1, 5) g;
CREATE TABLE "bad name" (id int PRIMARY KEY);
CREATE VIEW bf_view AS SELECT * FROM bf_items;
CREATE TABLE bf_parted (id int) PARTITION BY RANGE (id);
CREATE SEQUENCE bf_seq;

-- NULLs
CALL pg_temp.try($$CALL callback.backfill(NULL, 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', NULL)$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', batch_size => NULL)$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', restart => NULL)$$);
-- batch sizes
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', batch_size => 0)$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', batch_size => -5)$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', batch_size => 2147483647)$$);
-- not a table
CALL pg_temp.try($$CALL callback.backfill('bf_view', 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_seq', 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items_pkey', 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_parted', 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill(0, 'regress_bf')$$);
-- endpoints
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_no_such_endpoint')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf_off')$$);
-- prefixes: the table's name must be a valid one when none is given
CALL pg_temp.try($$CALL callback.backfill('"bad name"', 'regress_bf')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', prefix => 'no spaces')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', prefix => repeat('p', 120))$$);
-- where clauses
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', '')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', '   ')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', repeat('x', 9000))$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id >')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id > 1; DROP TABLE bf_items')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id > 1) OR (true')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'true) UNION (SELECT FROM bf_items WHERE true')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id > 1) ORDER BY (1')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'no_such_column = 1')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'name')$$);
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id > 1 /* open comment')$$);
-- a -- comment cannot take the rest of the statement with it
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'true) --')$$);
-- rights: a producer without SELECT on the table, a reader who is no producer
CREATE ROLE regress_bf_producer NOLOGIN IN ROLE callback_producer;
CREATE ROLE regress_bf_reader NOLOGIN;
GRANT SELECT ON bf_items TO regress_bf_reader;
GRANT USAGE ON SCHEMA callback TO regress_bf_reader;
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf')$$, 'regress_bf_producer');
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf')$$, 'regress_bf_reader');
-- a valid call inside a transaction block (or through EXECUTE) is refused
CALL pg_temp.try($$CALL callback.backfill('bf_items', 'regress_bf', 'id > 2', 2)$$);
BEGIN;
CALL callback.backfill('bf_items', 'regress_bf');
ROLLBACK;
-- the same from the top level runs, one NOTICE per batch
SET client_min_messages = notice;
CALL callback.backfill('bf_items', 'regress_bf', 'id > 2', 2, 'item');
SELECT relation, endpoint, where_clause, event_type, walk_by, last_key, rows_queued, batches, state
  FROM callback.callback_backfills;
SELECT event_type, body::jsonb -> 'data' AS data
  FROM callback.callback_queue WHERE event_type = 'item.backfill' ORDER BY id;
-- finished: a second call is refused; restart => true queues every row again
CALL callback.backfill('bf_items', 'regress_bf', 'id > 2', 2, 'item');
CALL callback.backfill('bf_items', 'regress_bf', 'id > 2', 2, 'item', restart => true);
SELECT rows_queued, batches, state FROM callback.callback_backfills;
-- The key is kept as text in ISO formats whatever the session's DateStyle,
-- so that a resume under another DateStyle reads the same key.
CREATE TABLE bf_when (at timestamp PRIMARY KEY);
INSERT INTO bf_when SELECT timestamp '2024-01-01' + g * interval '1 day' FROM generate_series(0, 11) g;
SET datestyle = 'SQL, DMY';
CALL callback.backfill('bf_when', 'regress_bf', batch_size => 5);
RESET datestyle;
SELECT last_key, rows_queued FROM callback.callback_backfills WHERE relation = 'bf_when'::regclass;
DELETE FROM callback.callback_queue WHERE event_type = 'bf_when.backfill';
DROP TABLE bf_when;
-- an empty table finishes at once
CREATE TABLE bf_empty (id int PRIMARY KEY);
CALL callback.backfill('bf_empty', 'regress_bf');
-- a dropped endpoint's backfills leave the view, and the progress table at
-- the next backfill
SET client_min_messages = warning;
SELECT callback.drop_endpoint('regress_bf', force => true);
SELECT count(*) AS shown FROM callback.callback_backfills;
SELECT callback.alter_endpoint('regress_bf_off', enabled => true);
SET client_min_messages = notice;
CALL callback.backfill('bf_empty', 'regress_bf_off');
SELECT relation, endpoint, rows_queued, state FROM callback.callback_backfills;
SELECT count(*) AS progress_rows FROM callback.callback_backfill_progress;
SET client_min_messages = warning;
SELECT callback.drop_endpoint('regress_bf_off', force => true);
DROP TABLE bf_items, "bad name", bf_parted, bf_empty CASCADE;
DROP SEQUENCE bf_seq;
REVOKE USAGE ON SCHEMA callback FROM regress_bf_reader;
DROP ROLE regress_bf_producer, regress_bf_reader;
