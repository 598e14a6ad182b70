--
-- security: the extension's roles, what each may do, and what PUBLIC holds.
--
-- Test roles (cluster-wide, dropped at the end):
--   regress_pgcb_admin     member of callback_admin
--   regress_pgcb_producer  member of callback_producer
--   regress_pgcb_monitor   member of callback_monitor
--   regress_pgcb_nobody    no extension role
--   regress_pgcb_owner     no extension role; owns a business table
--   regress_pgcb_pgmon     member of pg_monitor only
--
-- Every refusal is shown with its SQLSTATE and message (and hint, if any).
-- Random values (secrets, uuids, times) are never printed, only facts about
-- them.  Only rows of this test's endpoints count: other tests of the suite
-- may leave endpoints and queue rows behind.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_pgcb_admin NOLOGIN IN ROLE callback_admin;
CREATE ROLE regress_pgcb_producer NOLOGIN IN ROLE callback_producer;
CREATE ROLE regress_pgcb_monitor NOLOGIN IN ROLE callback_monitor;
CREATE ROLE regress_pgcb_nobody NOLOGIN;
CREATE ROLE regress_pgcb_owner NOLOGIN;
CREATE ROLE regress_pgcb_pgmon NOLOGIN IN ROLE pg_monitor;

-- Run cmd as role and return "ok" or "<SQLSTATE> <message>[ HINT: <hint>]".
-- SET LOCAL ROLE is undone with the subtransaction on error, and reset by
-- hand on success.
CREATE FUNCTION pg_temp.try(role text, cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hnt text;
BEGIN
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', role);
        EXECUTE cmd;
        RESET ROLE;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
        RETURN st || ' ' || msg || coalesce(' HINT: ' || nullif(hnt, ''), '');
    END;
END
$$;

-- A test endpoint, made by the superuser; loopback port 1 is closed.
\set sec1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
SELECT callback.create_endpoint('regress_pgcb_ep', 'http://127.0.0.1:1/hook',
                                event_types => '{regress_pgcb*}', secret => :'sec1') IS NOT NULL AS created;

----------------------------------------------------------------- what PUBLIC holds

-- Every grant to PUBLIC on a table, view or sequence of the schema, and on a
-- column of one (no row here is a defect).
SELECT c.relname, a.privilege_type
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'callback'::regnamespace AND a.grantee = 0
UNION ALL
SELECT c.relname || '.' || att.attname, a.privilege_type
  FROM pg_class c
  JOIN pg_attribute att ON att.attrelid = c.oid
  CROSS JOIN LATERAL aclexplode(att.attacl) a
 WHERE c.relnamespace = 'callback'::regnamespace AND a.grantee = 0;

-- The same through has_table_privilege / has_sequence_privilege, privilege
-- by privilege (no row here is a defect).
SELECT c.relname, p AS privilege
  FROM pg_class c
  CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND has_table_privilege('public', c.oid, p)
UNION ALL
SELECT c.relname, p
  FROM pg_class c
  CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind = 'S'
   AND has_sequence_privilege('public', c.oid, p);

-- Who holds what on each relation, besides its owner (table-level grants).
SELECT c.relname, coalesce(r.rolname, 'PUBLIC') AS grantee,
       string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS privileges
  FROM pg_class c
  CROSS JOIN LATERAL aclexplode(c.relacl) a
  LEFT JOIN pg_roles r ON r.oid = a.grantee
 WHERE c.relnamespace = 'callback'::regnamespace AND a.grantee <> c.relowner
 GROUP BY 1, 2
 ORDER BY c.relname COLLATE "C", coalesce(r.rolname, 'PUBLIC') COLLATE "C";

-- The extension's roles write no table directly: they go through the
-- functions (no row here is a defect).
SELECT c.relname, r AS role, p AS privilege
  FROM pg_class c
  CROSS JOIN unnest(ARRAY['callback_admin', 'callback_producer', 'callback_monitor']) r
  CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND has_table_privilege(r, c.oid, p);

-- Columns of callback_endpoints each role may read.  Only the admin reads
-- the secrets; a table-level grant would override a column-level revoke, so
-- the monitor has column grants only.
SELECT a.attname,
       has_column_privilege('public', a.attrelid, a.attnum, 'SELECT') AS public,
       has_column_privilege('callback_admin', a.attrelid, a.attnum, 'SELECT') AS admin,
       has_column_privilege('callback_producer', a.attrelid, a.attnum, 'SELECT') AS producer,
       has_column_privilege('callback_monitor', a.attrelid, a.attnum, 'SELECT') AS monitor
  FROM pg_attribute a
 WHERE a.attrelid = 'callback.callback_endpoints'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;
SELECT has_table_privilege('callback_monitor', 'callback.callback_endpoints', 'SELECT') AS monitor_table_level;

-- No view the monitor can read has a column named like a secret.
SELECT c.relname, a.attname
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind = 'v' AND a.attnum > 0
   AND has_table_privilege('callback_monitor', c.oid, 'SELECT') AND a.attname LIKE '%secret%';

----------------------------------------------------------------- functions

-- Who may execute each function.  PUBLIC keeps only the pure helpers
-- (validators, signing with a secret the caller supplies, histograms);
-- nothing that sends HTTP, writes the queue or reveals a secret.
SELECT * FROM (
SELECT p.proname || '(' || CASE WHEN p.pronargs <= 2 THEN oidvectortypes(p.proargtypes)
                                ELSE p.pronargs || ' args' END || ')' AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('callback_admin', p.oid, 'EXECUTE') AS admin,
       has_function_privilege('callback_producer', p.oid, 'EXECUTE') AS producer,
       has_function_privilege('callback_monitor', p.oid, 'EXECUTE') AS monitor,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS pg_monitor
  FROM pg_proc p
 WHERE p.pronamespace = 'callback'::regnamespace) f
 ORDER BY function COLLATE "C";

-- SECURITY DEFINER functions: each pins search_path = pg_catalog, pg_temp
-- and none is executable by PUBLIC (no row here is a defect).
SELECT p.oid::regprocedure AS function, p.proconfig,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'callback'::regnamespace AND p.prosecdef
   AND (p.proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
        OR has_function_privilege('public', p.oid, 'EXECUTE'));
SELECT count(*) AS security_definer_functions
  FROM pg_proc p WHERE p.pronamespace = 'callback'::regnamespace AND p.prosecdef;

-- The pinned search_path holds against a caller's hostile one: a schema
-- first in the path with its own ceil() does not change the burst that
-- create_endpoint computes as ceil(rate_limit) (3 for 2.5, not 999).
CREATE SCHEMA regress_pgcb_evil;
CREATE FUNCTION regress_pgcb_evil.ceil(double precision) RETURNS double precision
    LANGUAGE sql AS 'SELECT 999::double precision';
GRANT USAGE ON SCHEMA regress_pgcb_evil TO regress_pgcb_admin;
SET search_path = regress_pgcb_evil, pg_catalog, public;
SELECT ceil(2.5::double precision) AS hostile_ceil;
SELECT pg_temp.try('regress_pgcb_admin',
    $$SELECT callback.create_endpoint('regress_pgcb_burst', 'http://127.0.0.1:1/b', rate_limit => 2.5)$$) AS result;
RESET search_path;
SELECT rate_limit, rate_burst FROM callback.callback_endpoints WHERE name = 'regress_pgcb_burst';

----------------------------------------------------------------- what non-admins cannot do

-- Each of these is refused to the nobody, producer and monitor roles: read a
-- secret (by column, SELECT *, whole row, as a filter, or by probing with
-- the duplicate-secret check), manage endpoints, send HTTP, write the tables
-- directly, raise superuser-only (PGC_SUSET) settings for the session or as
-- their own default.
CREATE TEMP TABLE cmds (n int, cmd text);
INSERT INTO cmds VALUES
    (1, $$SELECT secret FROM callback.callback_endpoints$$),
    (2, $$SELECT previous_secret FROM callback.callback_endpoints$$),
    (3, $$SELECT * FROM callback.callback_endpoints$$),
    (4, $$SELECT e FROM callback.callback_endpoints e$$),
    (5, $$SELECT name FROM callback.callback_endpoints WHERE secret LIKE 'whsec_M%'$$),
    (6, $$SELECT callback.create_endpoint('regress_pgcb_x', 'http://127.0.0.1:1/x')$$),
    (7, $$SELECT callback.alter_endpoint('regress_pgcb_ep', url => 'http://127.0.0.1:2/x')$$),
    (8, $$SELECT callback.rotate_secret('regress_pgcb_ep')$$),
    (9, $$SELECT callback.pause_endpoint('regress_pgcb_ep')$$),
    (10, $$SELECT callback.resume_endpoint('regress_pgcb_ep')$$),
    (11, $$SELECT callback.drop_endpoint('regress_pgcb_ep', force => true)$$),
    (12, $$SELECT callback.redrive('regress_pgcb_ep')$$),
    (13, $$SELECT callback.purge('0')$$),
    (14, $$SELECT callback.process_callbacks(1)$$),
    (15, $$SELECT callback.wake_worker()$$),
    (16, $$SELECT callback.generate_secret()$$),
    (17, $$INSERT INTO callback.callback_queue (event_id, endpoint_id, event_type, body) VALUES (gen_random_uuid(), 1, 'x', '{}')$$),
    (18, $$UPDATE callback.callback_endpoints SET url = 'http://127.0.0.1:2/x'$$),
    (19, $$DELETE FROM callback.callback_queue$$),
    (20, $$TRUNCATE callback.callback_attempts$$),
    (21, $$CREATE TRIGGER regress_pgcb_tg AFTER INSERT ON callback.callback_queue FOR EACH ROW EXECUTE FUNCTION callback.trigger()$$),
    (22, $$SET callback.max_payload_bytes = '100MB'$$),
    (23, $$SET callback.retention = '1min'$$),
    (24, $$ALTER ROLE CURRENT_USER SET callback.max_payload_bytes = '100MB'$$),
    (25, $$SELECT callback._check_secret_unused('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', NULL)$$);

SELECT c.n, pg_temp.try('regress_pgcb_nobody', c.cmd) AS nobody
  FROM cmds c ORDER BY c.n;
SELECT c.n, pg_temp.try('regress_pgcb_producer', c.cmd) AS producer
  FROM cmds c ORDER BY c.n;
SELECT c.n, pg_temp.try('regress_pgcb_monitor', c.cmd) AS monitor
  FROM cmds c ORDER BY c.n;

-- Nothing changed: no new endpoint, the test endpoint as made, no queue row.
SELECT name FROM callback.callback_endpoints WHERE name LIKE 'regress\_pgcb\_%' ORDER BY name COLLATE "C";
SELECT url, secret = :'sec1' AS same_secret, previous_secret IS NULL AS no_previous, paused, enabled
  FROM callback.callback_endpoints WHERE name = 'regress_pgcb_ep';
SELECT count(*) AS queued FROM callback.callback_queue q
  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id WHERE e.name LIKE 'regress\_pgcb\_%';

-- The admin holds no table privilege beyond SELECT either: changes go through
-- the functions.
SELECT c.n, pg_temp.try('regress_pgcb_admin', c.cmd) AS admin
  FROM cmds c WHERE c.n BETWEEN 17 AND 24 ORDER BY c.n;

-- 22..24 are refused for want of privilege, not by the settings' context:
-- the superuser may (then puts them back).
SELECT c.n, pg_temp.try(current_user, c.cmd) AS superuser
  FROM cmds c WHERE c.n BETWEEN 22 AND 24 ORDER BY c.n;
RESET callback.max_payload_bytes;
RESET callback.retention;
ALTER ROLE CURRENT_USER RESET callback.max_payload_bytes;

----------------------------------------------------------------- the monitor

-- Reads the endpoint columns but secrets, headers and URL (1.1: see
-- privileges.sql), the metrics and health views; no whole row of the
-- queue, the attempts or the dead letters (their bodies are business data).
SELECT pg_temp.try('regress_pgcb_monitor', cmd) AS result, cmd
  FROM unnest(ARRAY[
    $$SELECT id, name, event_types, timeout_ms, max_attempts, retry_schedule, rate_limit, rate_burst, failure_threshold, breaker_cooldown, enabled, paused, disabled_reason, breaker_state, breaker_reason, breaker_changed_at, previous_secret_expires_at, created_at, updated_at FROM callback.callback_endpoints$$,
    $$SELECT count(*) FROM callback.callback_endpoints$$,
    $$SELECT * FROM callback.callback_queue$$,
    $$SELECT * FROM callback.callback_attempts$$,
    $$SELECT * FROM callback.callback_stats$$,
    $$SELECT * FROM callback.callback_metrics$$,
    $$SELECT * FROM callback.callback_health$$,
    $$SELECT * FROM callback.callback_dead_letters$$,
    $$SELECT * FROM callback.callback_worker_stats$$,
    $$SELECT * FROM callback.callback_databases$$,
    $$SELECT callback.prometheus_metrics()$$,
    $$SELECT callback.enqueue('regress_pgcb.test', '{}')$$]) cmd;

-- What the monitor sees of the test endpoint, as the monitor.
SET ROLE regress_pgcb_monitor;
SELECT name, url, event_types, enabled, paused, breaker_state
  FROM callback.callback_endpoints_redacted WHERE name = 'regress_pgcb_ep';
SELECT endpoint, status, backlog FROM callback.callback_health WHERE endpoint = 'regress_pgcb_ep';
SELECT callback.prometheus_metrics() LIKE '%# TYPE pg_callback_endpoint_health gauge%' AS prometheus_text;
RESET ROLE;

----------------------------------------------------------------- the producer

-- Enqueues (an event id comes back) though it holds no right on the queue.
SELECT pg_temp.try('regress_pgcb_producer', $$SELECT callback.enqueue('regress_pgcb.test', '{"n": 1}')$$) AS enqueue;
SET ROLE regress_pgcb_producer;
SELECT callback.enqueue('regress_pgcb.test', '{"n": 2}') IS NOT NULL AS event_id_returned;
RESET ROLE;

-- Attaches callback.trigger() to its own table; its inserts are queued.
CREATE TABLE regress_pgcb_orders (id int PRIMARY KEY, note text);
ALTER TABLE regress_pgcb_orders OWNER TO regress_pgcb_producer;
SET ROLE regress_pgcb_producer;
CREATE TRIGGER regress_pgcb_orders_cb AFTER INSERT OR UPDATE OR DELETE ON regress_pgcb_orders
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_pgcb_order');
INSERT INTO regress_pgcb_orders VALUES (1, 'by the producer');
-- Another role that may write the table fires the trigger too, with no
-- extension role of its own.
GRANT SELECT, INSERT, UPDATE ON regress_pgcb_orders TO regress_pgcb_nobody;
SET ROLE regress_pgcb_nobody;
INSERT INTO regress_pgcb_orders VALUES (2, 'by a plain writer');
UPDATE regress_pgcb_orders SET note = 'updated by a plain writer' WHERE id = 2;
RESET ROLE;
-- ... but that role still cannot enqueue by hand.
SELECT pg_temp.try('regress_pgcb_nobody', $$SELECT callback.enqueue('regress_pgcb.test', '{}')$$) AS enqueue;

SELECT q.event_type, q.body::jsonb -> 'data' AS data, q.status
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_ep'
 ORDER BY q.id;

----------------------------------------------------------------- a plain table owner

-- callback_producer is what lets a role attach callback.trigger() (README
-- "Roles"): a table owner without it is refused ...
CREATE TABLE regress_pgcb_plain (id int PRIMARY KEY);
ALTER TABLE regress_pgcb_plain OWNER TO regress_pgcb_owner;
SELECT pg_temp.try('regress_pgcb_owner',
    $$CREATE TRIGGER regress_pgcb_plain_cb AFTER INSERT ON regress_pgcb_plain FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_pgcb_plain')$$) AS attach;
-- ... but once a trigger is attached (here by the superuser), the owner's
-- writes are queued although the owner holds no right on the queue.
CREATE TRIGGER regress_pgcb_plain_cb AFTER INSERT ON regress_pgcb_plain
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_pgcb_plain');
SELECT pg_temp.try('regress_pgcb_owner', $$INSERT INTO regress_pgcb_plain VALUES (7)$$) AS insert;
SELECT q.event_type, q.body::jsonb -> 'data' -> 'new' AS new
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_ep' AND q.event_type LIKE 'regress\_pgcb\_plain.%';

----------------------------------------------------------------- the admin

-- Manages endpoints and reads secrets.
SELECT pg_temp.try('regress_pgcb_admin', cmd) AS result, cmd
  FROM unnest(ARRAY[
    $$SELECT callback.create_endpoint('regress_pgcb_admin_ep', 'http://127.0.0.1:1/a', event_types => '{nothing.matches}')$$,
    $$SELECT secret FROM callback.callback_endpoints$$,
    $$SELECT * FROM callback.callback_endpoints$$,
    $$SELECT callback.alter_endpoint('regress_pgcb_admin_ep', url => 'http://127.0.0.1:2/a', max_attempts => 3)$$,
    $$SELECT callback.pause_endpoint('regress_pgcb_admin_ep')$$,
    $$SELECT callback.resume_endpoint('regress_pgcb_admin_ep')$$,
    $$SELECT callback.rotate_secret('regress_pgcb_admin_ep', '1 hour')$$,
    $$SELECT callback.redrive('regress_pgcb_admin_ep')$$,
    $$SELECT callback.purge('365 days')$$,
    $$SELECT callback.wake_worker()$$,
    $$SELECT * FROM callback.callback_dead_letters$$,
    $$SELECT * FROM callback.callback_metrics$$]) cmd;

-- What the admin's calls did.
SET ROLE regress_pgcb_admin;
SELECT name, url, max_attempts, paused,
       secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$' AS new_secret,
       previous_secret IS NOT NULL AS has_previous,
       previous_secret_expires_at > now() + interval '59 minutes' AS grace_about_an_hour
  FROM callback.callback_endpoints WHERE name = 'regress_pgcb_admin_ep';
SELECT secret = :'sec1' AS reads_given_secret FROM callback.callback_endpoints WHERE name = 'regress_pgcb_ep';
SELECT callback.rotate_secret('regress_pgcb_admin_ep', '0') ~ '^whsec_' AS rotate_returns_secret;
RESET ROLE;

-- Disabling records who did it: the admin's login (session user), not the
-- functions' owner.
SET SESSION AUTHORIZATION regress_pgcb_admin;
SELECT callback.alter_endpoint('regress_pgcb_admin_ep', enabled => false);
SELECT enabled, disabled_reason FROM callback.callback_endpoints WHERE name = 'regress_pgcb_admin_ep';
SELECT callback.drop_endpoint('regress_pgcb_admin_ep');
RESET SESSION AUTHORIZATION;
SELECT count(*) AS admin_ep_left FROM callback.callback_endpoints WHERE name = 'regress_pgcb_admin_ep';

-- Drives delivery from SQL (the pg_cron mode), though it may not write the
-- queue itself: process_callbacks runs as the extension's owner.  Only the
-- test endpoint is left active for this transaction; its deliveries go to a
-- closed loopback port (or are refused by the address policy), so the one
-- attempt fails and is written back as a retry.  The rollback then returns
-- everything as it was.
BEGIN;
UPDATE callback.callback_endpoints SET paused = true WHERE name <> 'regress_pgcb_ep';
SET LOCAL ROLE regress_pgcb_admin;
SELECT callback.process_callbacks(1) AS attempted;
RESET ROLE;
SELECT q.status, q.attempts, q.last_error IS NOT NULL AS has_error,
       q.next_attempt_at > now() AS retry_later, count(*)
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_ep'
 GROUP BY 1, 2, 3, 4 ORDER BY 2, 1;
SELECT count(*) AS attempts_recorded FROM callback.callback_attempts a
  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id WHERE e.name = 'regress_pgcb_ep';
ROLLBACK;
SELECT q.status, q.attempts, count(*)
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_ep'
 GROUP BY 1, 2;

----------------------------------------------------------------- pg_monitor

-- A pg_monitor member reads the live worker counters and the Prometheus
-- text, and nothing else of the extension.
SELECT pg_temp.try('regress_pgcb_pgmon', cmd) AS result, cmd
  FROM unnest(ARRAY[
    $$SELECT * FROM callback.worker_stats()$$,
    $$SELECT * FROM callback.callback_worker_stats$$,
    $$SELECT * FROM callback.launcher_databases()$$,
    $$SELECT * FROM callback.callback_databases$$,
    $$SELECT callback.prometheus_metrics()$$,
    $$SELECT * FROM callback.callback_metrics$$,
    $$SELECT * FROM callback.callback_health$$,
    $$SELECT name FROM callback.callback_endpoints$$,
    $$SELECT secret FROM callback.callback_endpoints$$,
    $$SELECT * FROM callback.callback_queue$$,
    $$SELECT callback.enqueue('regress_pgcb.test', '{}')$$,
    $$SELECT callback.process_callbacks(1)$$]) cmd;

----------------------------------------------------------------- clean up

DROP TABLE regress_pgcb_orders, regress_pgcb_plain;
DROP SCHEMA regress_pgcb_evil CASCADE;
SELECT callback.drop_endpoint(name, force => true)
  FROM callback.callback_endpoints WHERE name LIKE 'regress\_pgcb\_%';
DROP OWNED BY regress_pgcb_admin, regress_pgcb_producer, regress_pgcb_monitor,
              regress_pgcb_nobody, regress_pgcb_owner, regress_pgcb_pgmon;
DROP ROLE regress_pgcb_admin, regress_pgcb_producer, regress_pgcb_monitor,
          regress_pgcb_nobody, regress_pgcb_owner, regress_pgcb_pgmon;
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname LIKE 'regress\_pgcb\_%';
