--
-- setup: the objects CREATE EXTENSION pg_callback installs.  pg_regress has
-- created the extension (--load-extension).  Every listing is sorted with
-- COLLATE "C" so that the output does not depend on the cluster's locale.
--
SET client_min_messages = warning;
\set VERBOSITY default

SELECT extname, extversion, n.nspname AS extension_schema, extrelocatable
  FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
 WHERE extname = 'pg_callback';

-- The schema: usable by the three roles, not by PUBLIC.
SELECT r AS grantee, has_schema_privilege(r, 'callback', 'USAGE') AS usage,
       has_schema_privilege(r, 'callback', 'CREATE') AS "create"
  FROM unnest(ARRAY['public', 'callback_admin', 'callback_producer', 'callback_monitor']) r;

-- Tables and views.  The queue and the attempt history are logged tables
-- (relpersistence 'p'): an unlogged queue would be emptied by a crash.
SELECT c.relname, c.relkind, c.relpersistence
  FROM pg_class c
 WHERE c.relnamespace = 'callback'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
 ORDER BY c.relname COLLATE "C";

SELECT relpersistence = 'p' AS queue_is_logged
  FROM pg_class WHERE oid = 'callback.callback_queue'::regclass;

-- Columns of the queue, in order.
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
  FROM pg_attribute a
 WHERE a.attrelid = 'callback.callback_queue'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- Indexes.
SELECT i.indrelid::regclass::text AS "table", i.indexrelid::regclass::text AS index,
       am.amname AS method, i.indisunique AS "unique", i.indpred IS NOT NULL AS partial
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam
 WHERE i.indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'callback'::regnamespace)
 ORDER BY i.indrelid::regclass::text COLLATE "C", i.indexrelid::regclass::text COLLATE "C";

-- The delivery status enum.
SELECT enum_range(NULL::callback.delivery_status);

-- Every function of the schema, its kind, whether it is SECURITY DEFINER and
-- the settings it pins.
SELECT p.oid::regprocedure::text AS function, p.prokind AS kind,
       p.prosecdef AS security_definer, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'callback'::regnamespace
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- Every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp
-- (no row here is a defect).
SELECT p.oid::regprocedure AS unpinned_security_definer
  FROM pg_proc p
 WHERE p.pronamespace = 'callback'::regnamespace AND p.prosecdef
   AND (p.proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig));

-- The roles, cluster-wide, and who is a member of whom.
SELECT rolname, rolcanlogin, rolsuper, rolinherit
  FROM pg_roles WHERE rolname IN ('callback_admin', 'callback_producer', 'callback_monitor')
 ORDER BY rolname COLLATE "C";
SELECT r.rolname AS role, m.rolname AS member
  FROM pg_auth_members am
  JOIN pg_roles r ON r.oid = am.roleid
  JOIN pg_roles m ON m.oid = am.member
 WHERE r.rolname LIKE 'callback\_%' AND m.rolname LIKE 'callback\_%'
 ORDER BY r.rolname COLLATE "C", m.rolname COLLATE "C";

-- Settings: name, default and when a change takes effect.
SELECT name, boot_val, unit, context
  FROM pg_settings WHERE name LIKE 'callback.%'
 ORDER BY name COLLATE "C";

-- The library is preloaded, so delivery from SQL has its shared memory.
SELECT 'pg_callback' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
    AS preloaded;

-- Nothing is queued yet.
SELECT count(*) AS endpoints FROM callback.callback_endpoints;
SELECT count(*) AS queued FROM callback.callback_queue;
