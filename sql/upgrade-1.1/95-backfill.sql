
/*
 * 95-backfill.sql: callback.backfill(), one "<prefix>.backfill" event per
 * existing row of a table for one endpoint (issue 12, item 6).
 *
 * The procedure is C (src/backfill.c) and commits after every batch, so it
 * carries no SET clause (PostgreSQL forbids COMMIT in a procedure that has
 * one) and is SECURITY INVOKER: the caller's where_clause runs with the
 * caller's rights and search_path.  Its own bookkeeping (this table) it
 * reads and writes as the extension's owner, from C, with search_path
 * pinned (src/session.c), in the same transaction as each batch's queue
 * rows: a batch and its progress commit or roll back together.
 */

CREATE TABLE callback.callback_backfill_progress (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid oid NOT NULL,
    -- no foreign key (its RI triggers would be named by OID, unlike a fresh
    -- install's): the rows of dropped endpoints and tables are deleted by
    -- the next backfill, and the view shows none of them
    endpoint_id integer NOT NULL,
    where_clause text,
    prefix text NOT NULL,
    walk_by text NOT NULL CHECK (walk_by IN ('primary key', 'ctid')),
    -- the primary key of the last row queued (each column as text), or the
    -- next heap block to read when walking by ctid; NULL before the first batch
    last_key text[],
    rows_queued bigint NOT NULL DEFAULT 0 CHECK (rows_queued >= 0),
    batches bigint NOT NULL DEFAULT 0 CHECK (batches >= 0),
    rows_estimated bigint,
    started_by oid NOT NULL,
    pid integer,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz,
    CONSTRAINT callback_backfill_progress_key UNIQUE NULLS NOT DISTINCT (relid, endpoint_id, where_clause)
);
COMMENT ON TABLE callback.callback_backfill_progress IS
    'One row per backfill (table, endpoint, where clause): how far callback.backfill() got; written in each batch''s transaction.';

/*
 * Like pg_stat_progress_*: one row per backfill, running, stopped (cancelled
 * or crashed: CALL it again to resume) or finished.  "running" needs the
 * backend of pid to be active and visible to the reader (pg_stat_activity's
 * rules: the same role, pg_read_all_stats or a superuser); otherwise a
 * backfill that is not finished shows as "stopped" to that reader.
 */
CREATE VIEW callback.callback_backfills AS
SELECT b.id,
       b.relid::pg_catalog.regclass AS relation,
       e.name AS endpoint,
       -- what the rows are is for those who may read them
       CASE WHEN pg_catalog.has_table_privilege(b.relid, 'SELECT') THEN b.where_clause END
           AS where_clause,
       b.prefix,
       b.prefix OPERATOR(pg_catalog.||) '.backfill' AS event_type,
       b.walk_by,
       CASE WHEN pg_catalog.has_table_privilege(b.relid, 'SELECT') THEN b.last_key END
           AS last_key,
       b.rows_queued,
       b.rows_estimated,
       b.batches,
       CASE WHEN b.finished_at IS NOT NULL THEN 'finished'
            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(b.pid) a
                          WHERE a.state OPERATOR(pg_catalog.=) 'active'
                            AND a.backend_start OPERATOR(pg_catalog.<=) b.updated_at)
            THEN 'running'
            ELSE 'stopped' END AS state,
       CASE WHEN b.finished_at IS NULL THEN b.pid END AS pid,
       b.started_by::pg_catalog.regrole AS started_by,
       b.started_at,
       b.updated_at,
       b.finished_at
  FROM callback.callback_backfill_progress b
  JOIN callback.callback_endpoints e ON e.id OPERATOR(pg_catalog.=) b.endpoint_id
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) b.relid);
COMMENT ON VIEW callback.callback_backfills IS
    'Progress of callback.backfill(): one row per (table, endpoint, where clause).';

CREATE PROCEDURE callback.backfill(
    "table" regclass,
    endpoint text,
    where_clause text DEFAULT NULL,
    batch_size integer DEFAULT 10000,
    prefix text DEFAULT NULL,
    restart boolean DEFAULT false)
LANGUAGE c
AS 'MODULE_PATHNAME', 'backfill';
COMMENT ON PROCEDURE callback.backfill(regclass, text, text, integer, text, boolean) IS
    'Queue a <prefix>.backfill event (the trigger''s body for that row) per existing row of a table, for one endpoint; commits per batch, resumable.';
