
/*
 * 80-databases: the launcher serves every database where pg_callback is
 * installed (callback.database_name is now a filter, empty by default),
 * with at most callback.max_workers workers.  Which databases it knows, and
 * which wait for a slot or are left out, and why.
 */
CREATE FUNCTION callback.launcher_databases(
    OUT database oid, OUT state text, OUT worker_pid integer,
    OUT since timestamptz, OUT detail text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'launcher_databases'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION callback.launcher_databases() IS
    'Databases where the launcher knows pg_callback is installed: served, starting, waiting for a worker slot, restarting or excluded, and why.';

CREATE VIEW callback.callback_databases AS
SELECT d.datname AS database, l.state, l.worker_pid, l.since, l.detail
  FROM callback.launcher_databases() l
  LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) l.database;

COMMENT ON VIEW callback.callback_databases IS
    'One row per database with pg_callback installed, cluster-wide: state served / starting / waiting / restarting / excluded, the worker''s pid, since when, and why it waits.';

REVOKE ALL ON FUNCTION callback.launcher_databases() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION callback.launcher_databases() TO pg_monitor, callback_monitor;
REVOKE ALL ON callback.callback_databases FROM PUBLIC;
GRANT SELECT ON callback.callback_databases TO pg_monitor, callback_monitor;
