--
-- default_acl: the installing superuser's ALTER DEFAULT PRIVILEGES do not
-- reach the extension's objects.  Objects created by CREATE EXTENSION (and
-- by ALTER EXTENSION UPDATE) start with their creator's default ACL; part
-- 99-acl of the upgrade sets each to the privileges the extension intends.
-- Every member's ACL (and the schema's, and column grants) in a database
-- installed under hostile default privileges must equal that of a database
-- installed without any.  Each case in a database of its own.
--
SET client_min_messages = warning;
\set VERBOSITY terse
\set regress_db :DBNAME

CREATE ROLE regress_pgcb_plain NOLOGIN;
CREATE ROLE regress_pgcb_watcher NOLOGIN IN ROLE callback_monitor;
CREATE ROLE regress_pgcb_direct NOLOGIN;

-- the template: a function listing the privileges on every member, one line each
CREATE DATABASE regress_pgcb_acl_base;
\c regress_pgcb_acl_base
CREATE FUNCTION public.pgcb_acls() RETURNS SETOF text LANGUAGE sql AS $$
    WITH m AS (
        SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
         WHERE x.extname = 'pg_callback' AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
        UNION
        SELECT 'pg_namespace'::regclass, x.extnamespace FROM pg_extension x WHERE x.extname = 'pg_callback'),
    acl AS (
        SELECT m.classid, m.objid, 0 AS subid,
               CASE m.classid
                   WHEN 'pg_class'::regclass THEN
                       (SELECT coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
                          FROM pg_class c WHERE c.oid = m.objid)
                   WHEN 'pg_proc'::regclass THEN
                       (SELECT coalesce(p.proacl, acldefault('f', p.proowner)) FROM pg_proc p WHERE p.oid = m.objid)
                   WHEN 'pg_type'::regclass THEN
                       (SELECT coalesce(t.typacl, acldefault('T', t.typowner)) FROM pg_type t WHERE t.oid = m.objid)
                   WHEN 'pg_namespace'::regclass THEN
                       (SELECT coalesce(n.nspacl, acldefault('n', n.nspowner)) FROM pg_namespace n WHERE n.oid = m.objid)
               END AS acl
          FROM m
        UNION ALL
        SELECT m.classid, m.objid, a.attnum, a.attacl
          FROM m JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid
         WHERE a.attnum > 0 AND a.attacl IS NOT NULL)
    SELECT pg_describe_object(acl.classid, acl.objid, acl.subid) || ': '
           || CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE e.grantee::regrole::text END
           || ' ' || e.privilege_type || CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
           || ' by ' || e.grantor::regrole::text
      FROM acl, aclexplode(acl.acl) e
$$;

-- 1. Without default privileges: what the extension intends.
\c :regress_db
CREATE DATABASE regress_pgcb_acl_clean TEMPLATE regress_pgcb_acl_base;
\c regress_pgcb_acl_clean
SET client_min_messages = warning;
CREATE EXTENSION pg_callback;
SELECT count(*) > 100 AS many_acl_entries FROM public.pgcb_acls();
SELECT string_agg(a, E'\n' ORDER BY a) AS clean_acls FROM public.pgcb_acls() a \gset

-- 2. Hostile default privileges of the installing role: a broad GRANT to a
-- role (with grant option), and REVOKEs from PUBLIC and from itself.
\c :regress_db
CREATE DATABASE regress_pgcb_acl_hostile TEMPLATE regress_pgcb_acl_base;
\c regress_pgcb_acl_hostile
SET client_min_messages = warning;
ALTER DEFAULT PRIVILEGES GRANT SELECT, UPDATE ON TABLES TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO regress_pgcb_plain WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES GRANT USAGE ON TYPES TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE USAGE ON TYPES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE TRUNCATE ON TABLES FROM CURRENT_USER;
CREATE EXTENSION pg_callback;
SELECT a AS only_in_clean FROM unnest(string_to_array(:'clean_acls', E'\n')) a
EXCEPT SELECT * FROM public.pgcb_acls() ORDER BY 1;
SELECT a AS only_here FROM public.pgcb_acls() a
EXCEPT SELECT unnest(string_to_array(:'clean_acls', E'\n')) ORDER BY 1;
SELECT callback.create_endpoint('acl', 'http://127.0.0.1:9/') > 0 AS created;
-- one minute of statistics, so that the metrics view calls its histogram functions
INSERT INTO callback.callback_stats (minute, endpoint_id, event_type, attempts, delivered, latency_hist)
SELECT date_trunc('minute', now()), e.id, 'order.created', 24, 24, array_fill(1::bigint, ARRAY[24])
  FROM callback.callback_endpoints e WHERE e.name = 'acl';
-- the role of the default privileges reaches nothing
SET ROLE regress_pgcb_plain;
SELECT secret FROM callback.callback_endpoints;
SELECT callback.create_endpoint('acl2', 'http://127.0.0.1:9/');
SELECT callback.process_callbacks(1);
RESET ROLE;
-- and the monitor reads the metrics (histogram_percentile is PUBLIC's)
SET ROLE regress_pgcb_watcher;
SELECT endpoint, event_type, total_calls, p95_ms IS NOT NULL AS has_p95 FROM callback.callback_metrics;
SELECT count(*) AS monitor_reads_endpoints FROM callback.callback_endpoints_redacted;
RESET ROLE;

-- 3. The same on ALTER EXTENSION UPDATE: 1.0 installed without them, then
-- hostile default privileges, global and for the schema, then the update.
\c :regress_db
CREATE DATABASE regress_pgcb_acl_update TEMPLATE regress_pgcb_acl_base;
\c regress_pgcb_acl_update
SET client_min_messages = warning;
CREATE EXTENSION pg_callback VERSION '1.0';
-- what an administrator granted on 1.0 objects stays: here the metrics view,
-- given directly to a role (it calls histogram_sum() as that role)
GRANT USAGE ON SCHEMA callback TO regress_pgcb_direct;
GRANT SELECT ON callback.callback_metrics TO regress_pgcb_direct;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES IN SCHEMA callback GRANT ALL ON TABLES TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES IN SCHEMA callback GRANT EXECUTE ON FUNCTIONS TO regress_pgcb_plain;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER EXTENSION pg_callback UPDATE;
SELECT a AS only_in_clean FROM unnest(string_to_array(:'clean_acls', E'\n')) a
EXCEPT SELECT * FROM public.pgcb_acls() ORDER BY 1;
SELECT a AS only_here FROM public.pgcb_acls() a
EXCEPT SELECT unnest(string_to_array(:'clean_acls', E'\n')) ORDER BY 1;
INSERT INTO callback.callback_endpoints (name, url, secret) VALUES ('acl', 'http://127.0.0.1:9/', callback.generate_secret());
INSERT INTO callback.callback_stats (minute, endpoint_id, event_type, attempts, delivered, latency_hist)
SELECT date_trunc('minute', now()), e.id, 'order.created', 24, 24, array_fill(1::bigint, ARRAY[24])
  FROM callback.callback_endpoints e WHERE e.name = 'acl';
SET ROLE regress_pgcb_direct;
SELECT endpoint, event_type, total_calls, p95_ms IS NOT NULL AS has_p95 FROM callback.callback_metrics;
RESET ROLE;

\c :regress_db
DROP DATABASE regress_pgcb_acl_base;
DROP DATABASE regress_pgcb_acl_clean;
DROP DATABASE regress_pgcb_acl_hostile;
DROP DATABASE regress_pgcb_acl_update;
DROP ROLE regress_pgcb_plain;
DROP ROLE regress_pgcb_watcher;
DROP ROLE regress_pgcb_direct;
