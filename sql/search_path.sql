--
-- search_path: no function of the extension resolves names through the
-- caller's search_path.  Each one written in SQL or PL/pgSQL, and each
-- SECURITY DEFINER one whatever its language, must carry
-- SET search_path = pg_catalog, pg_temp.  A catalog check, so that a
-- function added later that forgets it fails here.  (The C code's own SQL
-- is covered by test/e2e/test_search_path.py.)
--
SET client_min_messages = warning;

CREATE FUNCTION pg_temp.unpinned_functions()
RETURNS TABLE (fn regprocedure, lang name, secdef boolean, config text[])
LANGUAGE sql
AS $fn$
    SELECT p.oid::regprocedure, l.lanname, p.prosecdef, p.proconfig
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
     WHERE d.classid = 'pg_catalog.pg_proc'::regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::regclass
       AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_callback')
       AND d.deptype = 'e'
       AND (l.lanname NOT IN ('c', 'internal') OR p.prosecdef)
       AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
     ORDER BY 1::text
$fn$;

-- the check sees the extension's functions, of every kind it judges
SELECT count(*) FILTER (WHERE l.lanname = 'plpgsql') > 0 AS has_plpgsql,
       count(*) FILTER (WHERE l.lanname = 'sql') > 0 AS has_sql,
       count(*) FILTER (WHERE l.lanname = 'c' AND p.prosecdef) > 0 AS has_c_secdef
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON p.oid = d.objid
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
 WHERE d.classid = 'pg_catalog.pg_proc'::regclass
   AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_callback')
   AND d.deptype = 'e';

-- none forgets it
SELECT * FROM pg_temp.unpinned_functions();

-- and the check can fail: functions added to the extension without the pin
BEGIN;
CREATE FUNCTION callback.regress_unpinned_sql() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION callback.regress_other_path() RETURNS int LANGUAGE plpgsql
    SET search_path = public, pg_catalog AS 'BEGIN RETURN 1; END';
CREATE FUNCTION callback.regress_secdef_c(text) RETURNS text LANGUAGE internal
    SECURITY DEFINER AS 'textout';
ALTER EXTENSION pg_callback ADD FUNCTION callback.regress_unpinned_sql();
ALTER EXTENSION pg_callback ADD FUNCTION callback.regress_other_path();
ALTER EXTENSION pg_callback ADD FUNCTION callback.regress_secdef_c(text);
SELECT * FROM pg_temp.unpinned_functions();
ROLLBACK;

-- the schema that holds it all belongs to a superuser (upgrade part 10)
SELECT r.rolsuper AS callback_schema_owner_is_superuser
  FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
 WHERE n.nspname = 'callback';
