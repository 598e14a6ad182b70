--
-- events: callback.enqueue() and the C trigger callback.trigger(): routing by
-- event type pattern, the body's shape and bytes, NULLs, unicode, wide rows,
-- rollback, the payload size limit and every refusal.
--
-- Every refusal is shown with its SQLSTATE, message, detail and hint (a
-- missing hint prints "(no hint)"), followed by the number of rows in the
-- queue, to show that nothing was written.  Random values (event ids,
-- timestamps) are never printed: a body's timestamp is shown as <ts> only if
-- it has the expected form.  No worker serves this database, so nothing here
-- is delivered and every queued row stays pending.
--
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run cmd; on error report its SQLSTATE, message, detail and hint.
-- Returns the number of queued rows afterwards.
CREATE FUNCTION pg_temp.try(cmd text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    BEGIN
        EXECUTE cmd;
        RAISE NOTICE 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        IF det <> '' THEN
            RAISE NOTICE '% %', st, msg USING DETAIL = det, HINT = coalesce(nullif(hnt, ''), '(no hint)');
        ELSE
            RAISE NOTICE '% %', st, msg USING HINT = coalesce(nullif(hnt, ''), '(no hint)');
        END IF;
    END;
    RETURN (SELECT count(*) FROM callback.callback_queue);
END
$$;

-- A body with its timestamp replaced by <ts>, if (and only if) the timestamp
-- is UTC with microseconds, as in 2026-01-02T03:04:05.123456Z.
CREATE FUNCTION pg_temp.masked(body text) RETURNS text LANGUAGE sql AS $$
SELECT regexp_replace(body, '^(\{"type":"[^"]*","timestamp":")\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"',
                      '\1<ts>"')
$$;

-- The queue, oldest first, without its random values.
CREATE VIEW pg_temp.q AS
SELECT q.id, e.name AS endpoint, q.event_type, q.status, q.attempts,
       q.next_attempt_at <= now() AS due, q.body
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id;

-- The tests before this one left the queue empty.
SELECT count(*) AS queued FROM callback.callback_queue;

----------------------------------------------------------------- endpoints

-- Every event; order.* (the '*' spans dots too); one exact type; a list; a
-- pattern with the wildcard inside; a paused one and a disabled one.
SELECT count(*) AS created FROM (VALUES
    (callback.create_endpoint('all', 'http://127.0.0.1:9/all')),
    (callback.create_endpoint('orders', 'http://127.0.0.1:9/orders', event_types => '{order.*}')),
    (callback.create_endpoint('exact', 'http://127.0.0.1:9/exact', event_types => '{invoice.paid}')),
    (callback.create_endpoint('list', 'http://127.0.0.1:9/list', event_types => '{order.created, user.*}')),
    (callback.create_endpoint('deleted', 'http://127.0.0.1:9/deleted', event_types => '{*.delete}')),
    (callback.create_endpoint('paused', 'http://127.0.0.1:9/paused')),
    (callback.create_endpoint('disabled', 'http://127.0.0.1:9/disabled'))) v(id);
SELECT callback.pause_endpoint('paused');
SELECT callback.alter_endpoint('disabled', enabled => false);
SELECT name, event_types, enabled, paused FROM callback.callback_endpoints ORDER BY name COLLATE "C";

----------------------------------------------------------------- enqueue: routing

-- One queue row per matching enabled endpoint; the paused one gets its row
-- (it is held, not skipped), the disabled one none.
SELECT callback.enqueue('order.created', '{"id": 1}') AS event_id \gset
SELECT endpoint, event_type, status, attempts, due FROM pg_temp.q
 ORDER BY endpoint COLLATE "C";
-- The id returned is a version 4 uuid, the event id of every row of the event.
SELECT count(*) AS queued_rows, count(DISTINCT q.event_id) AS event_ids,
       bool_and(q.event_id = :'event_id') AS all_carry_returned_id,
       substr(:'event_id', 15, 1) = '4' AS uuid_v4
  FROM callback.callback_queue q;

-- Each event type, and who takes it.
SELECT t AS event_type, count(callback.enqueue(t, '{}')) AS enqueued
  FROM unnest(ARRAY['invoice.paid', 'invoice.paid.late', 'invoice', 'order', 'order.',
                    'order.item.added', 'user.created', 'users.created', 'x.delete', 'orderly.delete']) t
 GROUP BY t ORDER BY t COLLATE "C";
SELECT event_type, string_agg(endpoint, ' ' ORDER BY endpoint COLLATE "C") AS endpoints
  FROM pg_temp.q WHERE event_type <> 'order.created'
 GROUP BY event_type ORDER BY event_type COLLATE "C";
-- Every event gets a new id, shared by its rows.
SELECT count(DISTINCT event_id) AS events, count(*) AS rows FROM callback.callback_queue;
SELECT count(*) AS events_with_two_types
  FROM (SELECT event_id FROM callback.callback_queue GROUP BY event_id
        HAVING count(DISTINCT event_type) > 1) x;

-- Case matters: 'Order.Created' is not 'order.created'.
SELECT callback.enqueue('Order.Created', '{}') IS NOT NULL AS enqueued;
SELECT endpoint FROM pg_temp.q WHERE event_type = 'Order.Created' ORDER BY endpoint COLLATE "C";

-- An event no enabled endpoint takes still gets an id, and queues nothing.
BEGIN;
SELECT callback.alter_endpoint('all', enabled => false);
SELECT callback.alter_endpoint('paused', enabled => false);
SELECT callback.enqueue('nobody.listens', '{}') IS NOT NULL AS got_an_id;
SELECT count(*) AS queued FROM callback.callback_queue WHERE event_type = 'nobody.listens';
ROLLBACK;

DELETE FROM callback.callback_queue;

----------------------------------------------------------------- enqueue: the body

-- {"type", "timestamp", "data"} in this order, the payload as jsonb prints it.
SELECT callback.enqueue('invoice.paid', '{"id": 7, "total": 12.50, "lines": [1, 2], "paid": true, "note": null}')
    IS NOT NULL AS enqueued;
SELECT endpoint, pg_temp.masked(body) AS body FROM pg_temp.q ORDER BY endpoint COLLATE "C";

-- Any JSON value is a payload: scalars, arrays, JSON null.
SELECT callback.enqueue('user.value', p) IS NOT NULL AS enqueued
  FROM unnest(ARRAY['"text"', '42', '-1.5e3', 'true', 'null', '[]', '{}', '[{"a": {"b": [null]}}]']::jsonb[]) p;
SELECT pg_temp.masked(body) AS body FROM pg_temp.q
 WHERE event_type = 'user.value' AND endpoint = 'list' ORDER BY id;

-- Unicode and characters JSON escapes come through unchanged.
SELECT callback.enqueue('user.renamed',
                        jsonb_build_object('name', E'Zoë "Q" \\ 日本語 😀\n\ttab', 'emoji', '🎉')) IS NOT NULL AS enqueued;
SELECT pg_temp.masked(body) AS body FROM pg_temp.q WHERE event_type = 'user.renamed' AND endpoint = 'list';
SELECT body::jsonb -> 'data' ->> 'name' = E'Zoë "Q" \\ 日本語 😀\n\ttab' AS name_round_trips,
       body ~ '日本語 😀' AS utf8_not_escaped
  FROM callback.callback_queue WHERE event_type = 'user.renamed';

-- The timestamp is the time of the enqueue, in UTC.
BEGIN;
SELECT callback.enqueue('user.timed', '{}') IS NOT NULL AS enqueued;
SELECT (body::jsonb ->> 'timestamp')::timestamptz BETWEEN now() AND clock_timestamp() AS timestamp_is_now,
       body::jsonb ->> 'timestamp' LIKE '%Z' AS utc
  FROM callback.callback_queue WHERE event_type = 'user.timed';
COMMIT;

DELETE FROM callback.callback_queue;

----------------------------------------------------------------- enqueue: refusals

SELECT pg_temp.try($$SELECT callback.enqueue(NULL, '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('order created', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('order/created', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('order.créé', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue(E'order.created\n', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('order"created', '{}')$$) AS queued;
-- '*' is a wildcard of patterns, not part of an event type.
SELECT pg_temp.try($$SELECT callback.enqueue('order.*', '{}')$$) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('*', '{}')$$) AS queued;
-- 128 characters at most.
SELECT pg_temp.try(format('SELECT callback.enqueue(%L, %L)', repeat('a', 129), '{}')) AS queued;
SELECT pg_temp.try($$SELECT callback.enqueue('order.created', NULL)$$) AS queued;
-- A failed enqueue in a transaction takes the earlier ones with it.
BEGIN;
SELECT callback.enqueue('order.created', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT callback.enqueue('order created', '{"n": 2}');
ROLLBACK;
SELECT count(*) AS queued FROM callback.callback_queue;
-- The longest event type is accepted.
SELECT pg_temp.try(format('SELECT callback.enqueue(%L, %L)', repeat('a', 128), '{}')) AS queued;
SELECT length(event_type) AS type_length, count(*) AS rows FROM callback.callback_queue GROUP BY 1;
DELETE FROM callback.callback_queue;

-- The size limit counts the bytes of the whole body.  The body of this event
-- is 92 bytes: the limit 92 lets it through, 91 does not.
SELECT current_setting('callback.max_payload_bytes') AS default_limit;
SELECT callback.enqueue('invoice.paid', '{"s": "0123456789"}') IS NOT NULL AS enqueued;
SELECT DISTINCT octet_length(body) AS body_bytes FROM callback.callback_queue;
SET callback.max_payload_bytes = 92;
SELECT pg_temp.try($$SELECT callback.enqueue('invoice.paid', '{"s": "0123456789"}')$$) AS queued;
SET callback.max_payload_bytes = 91;
SELECT pg_temp.try($$SELECT callback.enqueue('invoice.paid', '{"s": "0123456789"}')$$) AS queued;
-- Bytes, not characters: ten 'é' are twenty bytes.
SELECT pg_temp.try($$SELECT callback.enqueue('invoice.paid', '{"s": "éééééééééé"}')$$) AS queued;
RESET callback.max_payload_bytes;
-- Over the default of 1MB.
SELECT pg_temp.try($$SELECT callback.enqueue('invoice.paid', jsonb_build_object('s', repeat('x', 1048576)))$$)
    AS queued;
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- trigger: INSERT / UPDATE / DELETE

-- Only the 'orders' endpoint from now on, so each event is one row.
SELECT callback.alter_endpoint(name, enabled => false) FROM callback.callback_endpoints
 WHERE name <> 'orders';

CREATE SCHEMA shop;
CREATE TABLE shop.orders (
    id integer PRIMARY KEY,
    customer text,
    amount numeric(10, 2),
    paid boolean,
    tags text[],
    meta jsonb,
    placed_at timestamptz,
    raw bytea
);
CREATE TRIGGER orders_callback AFTER INSERT OR UPDATE OR DELETE ON shop.orders
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');

INSERT INTO shop.orders VALUES
    (1, 'alice', 12.50, true, '{a,b}', '{"vip": true}', '2026-01-02 03:04:05.678+00', '\x00ff');
UPDATE shop.orders SET amount = 20, tags = NULL WHERE id = 1;
DELETE FROM shop.orders WHERE id = 1;
-- The exact bytes of each body.  A timestamptz is written in the time zone
-- of the session that made the change, with its offset.
SELECT event_type, pg_temp.masked(body) AS body FROM pg_temp.q ORDER BY id;
-- ... and what they say, as JSON.
SELECT event_type, jsonb_pretty(body::jsonb - 'timestamp') AS body FROM pg_temp.q ORDER BY id;
DELETE FROM callback.callback_queue;

-- One statement, several rows: one event each, with its own id.
INSERT INTO shop.orders (id, customer) SELECT g, 'c' || g FROM generate_series(10, 14) g;
SELECT count(*) AS rows, count(DISTINCT event_id) AS events FROM callback.callback_queue;
-- Each "new" is the row as to_jsonb() sees it.
SELECT count(*) AS matching_rows
  FROM callback.callback_queue q JOIN shop.orders o ON to_jsonb(o) = q.body::jsonb -> 'data' -> 'new';
UPDATE shop.orders SET paid = false WHERE id BETWEEN 10 AND 14;
SELECT count(*) AS updates,
       bool_and(body::jsonb -> 'data' -> 'old' ? 'paid' AND body::jsonb -> 'data' -> 'old' -> 'paid' = 'null'
                AND body::jsonb -> 'data' -> 'new' -> 'paid' = 'false') AS old_and_new
  FROM callback.callback_queue WHERE event_type = 'order.update';
DELETE FROM shop.orders WHERE id BETWEEN 10 AND 14;
SELECT event_type, count(*) AS events FROM callback.callback_queue
 GROUP BY event_type ORDER BY event_type COLLATE "C";
DELETE FROM callback.callback_queue;

-- INSERT ... ON CONFLICT DO UPDATE: an insert, then an update.
INSERT INTO shop.orders (id, customer) VALUES (20, 'bob')
    ON CONFLICT (id) DO UPDATE SET customer = excluded.customer;
INSERT INTO shop.orders (id, customer) VALUES (20, 'bobby')
    ON CONFLICT (id) DO UPDATE SET customer = excluded.customer;
SELECT event_type, body::jsonb -> 'data' -> 'old' ->> 'customer' AS old_customer,
       body::jsonb -> 'data' -> 'new' ->> 'customer' AS new_customer
  FROM pg_temp.q ORDER BY id;
DELETE FROM shop.orders;
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- trigger: NULLs and unicode

INSERT INTO shop.orders (id) VALUES (30);
SELECT pg_temp.masked(body) AS body FROM pg_temp.q;
DELETE FROM callback.callback_queue;

INSERT INTO shop.orders (id, customer, tags, meta)
VALUES (31, E'Zoë "Q" \\ 日本語 😀\n\t\u0001', '{"ünï", NULL, "a,b"}', '{"名前": "値", "n": null}');
SELECT pg_temp.masked(body) AS body FROM pg_temp.q;
SELECT o.customer = q.body::jsonb -> 'data' -> 'new' ->> 'customer' AS customer_round_trips,
       to_jsonb(o) = q.body::jsonb -> 'data' -> 'new' AS row_round_trips
  FROM callback.callback_queue q, shop.orders o WHERE o.id = 31;
DELETE FROM shop.orders;
DELETE FROM callback.callback_queue;

-- Values JSON has no number for are written as strings, so the body stays
-- valid JSON; keys are escaped like values.
CREATE TABLE shop.measures (id integer, "naïve ""key""" double precision, r real, n numeric);
CREATE TRIGGER measures_callback AFTER INSERT ON shop.measures
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
INSERT INTO shop.measures VALUES (1, 'NaN', 'Infinity', 'NaN'), (2, '-Infinity', '1.5', '-0.000001');
SELECT pg_temp.masked(body) AS body, body::jsonb -> 'data' -> 'new' AS parsed FROM pg_temp.q ORDER BY id;
DROP TABLE shop.measures;
DELETE FROM callback.callback_queue;

-- Names that need quoting, a dropped column, a generated column, a domain and
-- a composite; no argument: the table's name is the prefix.
CREATE SCHEMA "Shop ""West""";
CREATE TYPE shop.money_pair AS (amount numeric, currency text);
CREATE DOMAIN shop.qty AS integer CHECK (VALUE > 0);
CREATE TABLE "Shop ""West""".order_lines (
    id integer,
    dropped text,
    "Qty" shop.qty,
    price shop.money_pair,
    total numeric GENERATED ALWAYS AS ("Qty" * (price).amount) STORED
);
ALTER TABLE "Shop ""West""".order_lines DROP COLUMN dropped;
CREATE TRIGGER order_lines_callback AFTER INSERT ON "Shop ""West""".order_lines
    FOR EACH ROW EXECUTE FUNCTION callback.trigger();
SELECT callback.alter_endpoint('orders', event_types => '{order.*, order_lines.*}');
INSERT INTO "Shop ""West""".order_lines VALUES (1, 3, ROW(2.5, 'EUR'));
SELECT event_type, pg_temp.masked(body) AS body FROM pg_temp.q;
DROP TABLE "Shop ""West""".order_lines;
DROP SCHEMA "Shop ""West""";
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- trigger: wide rows

-- 100 columns.
SELECT format('CREATE TABLE shop.wide (%s)',
              string_agg(format('c%s integer', g), ', ' ORDER BY g)) AS ddl
  FROM generate_series(1, 100) g \gset
:ddl;
CREATE TRIGGER wide_callback AFTER INSERT OR UPDATE ON shop.wide
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
SELECT format('INSERT INTO shop.wide VALUES (%s)', string_agg(g::text, ', ' ORDER BY g)) AS dml
  FROM generate_series(1, 100) g \gset
:dml;
SELECT (SELECT count(*) FROM jsonb_object_keys(body::jsonb -> 'data' -> 'new')) AS columns,
       body::jsonb -> 'data' -> 'new' = (SELECT to_jsonb(w) FROM shop.wide w) AS row_round_trips,
       body::jsonb -> 'data' -> 'new' ->> 'c100' AS c100
  FROM callback.callback_queue;
DELETE FROM callback.callback_queue;

-- A large text, stored out of line (TOAST): it is in both "old" and "new" of
-- an update that does not touch it.
CREATE TABLE shop.docs (id integer PRIMARY KEY, n integer, content text);
CREATE TRIGGER docs_callback AFTER INSERT OR UPDATE ON shop.docs
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
INSERT INTO shop.docs
SELECT 1, 0, string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 10000) g;
UPDATE shop.docs SET n = 1;
SELECT q.event_type, octet_length(q.body) AS body_bytes,
       q.body::jsonb -> 'data' -> 'new' ->> 'content' = d.content AS new_content,
       coalesce(q.body::jsonb -> 'data' -> 'old' ->> 'content' = d.content, false) AS old_content
  FROM pg_temp.q q, shop.docs d ORDER BY q.id;
DELETE FROM callback.callback_queue;

-- A row whose body is over callback.max_payload_bytes: the statement fails
-- and neither the row nor an event is written.
SELECT pg_temp.try($$INSERT INTO shop.docs VALUES (2, 0, repeat('x', 1048576))$$) AS queued;
SELECT count(*) AS docs FROM shop.docs;
SET callback.max_payload_bytes = 1000;
SELECT pg_temp.try($$UPDATE shop.docs SET n = 2$$) AS queued;
SELECT n FROM shop.docs;
RESET callback.max_payload_bytes;
DROP TABLE shop.docs, shop.wide;

----------------------------------------------------------------- trigger: transactions

-- A rolled-back transaction leaves nothing; a rolled-back savepoint takes only
-- its own events.
BEGIN;
INSERT INTO shop.orders (id) VALUES (40);
SELECT count(*) AS queued_inside FROM callback.callback_queue;
ROLLBACK;
SELECT count(*) AS queued_after_rollback FROM callback.callback_queue;

BEGIN;
INSERT INTO shop.orders (id) VALUES (41);
SAVEPOINT s;
INSERT INTO shop.orders (id) VALUES (42);
ROLLBACK TO SAVEPOINT s;
INSERT INTO shop.orders (id) VALUES (43);
COMMIT;
SELECT body::jsonb -> 'data' -> 'new' ->> 'id' AS row_id FROM pg_temp.q ORDER BY q.id;
-- A failing statement takes its own rows' events with it.
SELECT pg_temp.try($$INSERT INTO shop.orders (id) VALUES (44), (41)$$) AS queued;
DELETE FROM shop.orders;
DELETE FROM callback.callback_queue;

-- WHEN filters rows before the function runs.
CREATE TRIGGER big_orders_callback AFTER INSERT ON shop.orders
    FOR EACH ROW WHEN (NEW.amount >= 100) EXECUTE FUNCTION callback.trigger('order.big');
INSERT INTO shop.orders (id, amount) VALUES (50, 5), (51, 500);
SELECT event_type, body::jsonb -> 'data' -> 'new' ->> 'id' AS row_id FROM pg_temp.q ORDER BY q.id;
DROP TRIGGER big_orders_callback ON shop.orders;
DELETE FROM shop.orders;
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- trigger: misuse

CREATE TABLE shop.misuse (id integer);

-- Not AFTER ... FOR EACH ROW: refused when it fires, and the statement fails.
CREATE TRIGGER t BEFORE INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('order');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE TRIGGER t AFTER TRUNCATE ON shop.misuse FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('order');
SELECT pg_temp.try($$TRUNCATE shop.misuse$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE VIEW shop.misuse_v AS SELECT id FROM shop.misuse;
CREATE TRIGGER t INSTEAD OF INSERT ON shop.misuse_v FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
SELECT pg_temp.try($$INSERT INTO shop.misuse_v VALUES (1)$$) AS queued;
DROP VIEW shop.misuse_v;
SELECT count(*) AS misuse_rows FROM shop.misuse;

-- Called as a function.
SELECT pg_temp.try($$SELECT callback.trigger()$$) AS queued;

-- Bad arguments: more than one; a prefix that is not an event type.
CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger('order', 'extra');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger('');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger('my order');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger('order.*');
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
-- No argument, and the table's name is not an event type.
CREATE TABLE shop."bad name" (id integer);
CREATE TRIGGER t AFTER INSERT ON shop."bad name" FOR EACH ROW EXECUTE FUNCTION callback.trigger();
SELECT pg_temp.try($$INSERT INTO shop."bad name" VALUES (1)$$) AS queued;
DROP TABLE shop."bad name";
SELECT count(*) AS misuse_rows FROM shop.misuse;
-- A prefix of 121 characters is the longest: with ".insert" it makes 128.
SELECT format('CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger(%L)',
              repeat('p', 122)) AS ddl \gset
:ddl;
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
DROP TRIGGER t ON shop.misuse;
SELECT callback.alter_endpoint('orders', event_types => '{*}');
SELECT format('CREATE TRIGGER t AFTER INSERT ON shop.misuse FOR EACH ROW EXECUTE FUNCTION callback.trigger(%L)',
              repeat('p', 121)) AS ddl \gset
:ddl;
SELECT pg_temp.try($$INSERT INTO shop.misuse VALUES (1)$$) AS queued;
SELECT length(event_type) AS type_length, right(event_type, 8) AS type_end FROM callback.callback_queue;

----------------------------------------------------------------- clean up

DROP SCHEMA shop CASCADE;
SELECT callback.drop_endpoint(name, force => true) FROM callback.callback_endpoints;
SELECT count(*) AS endpoints FROM callback.callback_endpoints;
SELECT count(*) AS queued FROM callback.callback_queue;
