
/*
 * 99-acl.sql: the privileges on the extension's objects, whatever DEFAULT
 * PRIVILEGES the installing role has.
 *
 * Every object created by CREATE EXTENSION or ALTER EXTENSION UPDATE starts
 * with the ACL that ALTER DEFAULT PRIVILEGES gave its creator (the
 * installing superuser), global or for schema callback: a GRANT SELECT ON
 * TABLES TO someone let him read the endpoint secrets; a GRANT EXECUTE ON
 * FUNCTIONS let him create endpoints; a REVOKE EXECUTE ON FUNCTIONS FROM
 * PUBLIC broke callback_metrics for the monitor.  The GRANTs and REVOKEs of
 * the scripts only add to or take from that start.
 *
 * This part runs last and sets the ACL of each object that this very
 * transaction created (its membership in pg_depend was written by it: every
 * object on a fresh install, the new ones on an upgrade) to exactly the
 * table below.  Objects from 1.0 that an upgrade finds keep what their
 * administrator gave them.  The schema is reset on a fresh install only.
 * Column privileges are not subject to default privileges and are kept.
 *
 * The table is the documentation of who may use what: one row per object
 * and grantee (kind as pg_identify_object() names it, the object as GRANT
 * takes it with search_path = pg_catalog).  The owner (the installing
 * superuser) keeps every privilege and is not listed; an object whose only
 * row has a NULL grantee is its owner's alone.  A member of the extension
 * created here without a row is an error: whoever adds an object adds its
 * row.  This part must stay the last one.
 */
DO $acl$
DECLARE
    intended CONSTANT text[] := ARRAY[
        -- the schema
        ['schema',   'callback',                                   'callback_admin',    'USAGE'],
        ['schema',   'callback',                                   'callback_producer', 'USAGE'],
        ['schema',   'callback',                                   'callback_monitor',  'USAGE'],
        ['schema',   'callback',                                   'pg_monitor',        'USAGE'],
        -- tables, their sequences and views (the monitor's columns are granted column by column in part 50)
        ['table',    'callback.callback_endpoints',                'callback_admin',    'SELECT'],
        ['table',    'callback.callback_queue',                    'callback_admin',    'SELECT'],
        ['table',    'callback.callback_inbox',                    'callback_admin',    'SELECT'],
        ['table',    'callback.callback_attempts',                 'callback_admin',    'SELECT'],
        ['table',    'callback.callback_stats',                    'callback_admin',    'SELECT'],
        ['table',    'callback.callback_stats_purged',             'callback_admin',    'SELECT'],
        ['table',    'callback.callback_stats_purged',             'callback_monitor',  'SELECT'],
        ['sequence', 'callback.callback_endpoints_id_seq',         NULL,                NULL],
        ['sequence', 'callback.callback_queue_id_seq',             NULL,                NULL],
        ['view',     'callback.callback_dead_letters',             'callback_admin',    'SELECT'],
        ['view',     'callback.callback_endpoints_redacted',       'callback_admin',    'SELECT'],
        ['view',     'callback.callback_endpoints_redacted',       'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_health',                   'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_metrics',                  'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_worker_stats',             'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_worker_stats',             'pg_monitor',        'SELECT'],
        ['view',     'callback.callback_databases',                'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_databases',                'pg_monitor',        'SELECT'],
        ['table',    'callback.callback_backfill_progress',        'callback_admin',    'SELECT'],
        ['sequence', 'callback.callback_backfill_progress_id_seq', NULL,                NULL],
        ['view',     'callback.callback_backfills',                'callback_producer', 'SELECT'],
        ['view',     'callback.callback_backfills',                'callback_monitor',  'SELECT'],
        ['view',     'callback.callback_backfills',                'pg_monitor',        'SELECT'],
        ['type',     'callback.delivery_status',                   'PUBLIC',            'USAGE'],
        -- the administrator's functions
        ['function', 'callback.create_endpoint(text,text,text[],jsonb,interval,text,integer,interval[],double precision,integer,integer,interval,boolean,text,text,integer,interval)', 'callback_admin', 'EXECUTE'],
        ['function', 'callback.alter_endpoint(text,text,text[],jsonb,interval,integer,interval[],double precision,integer,integer,interval,boolean,boolean,boolean,text,text,integer,interval,boolean,boolean)', 'callback_admin', 'EXECUTE'],
        ['function', 'callback.drop_endpoint(text,boolean)',       'callback_admin',    'EXECUTE'],
        ['function', 'callback.pause_endpoint(text)',              'callback_admin',    'EXECUTE'],
        ['function', 'callback.resume_endpoint(text)',             'callback_admin',    'EXECUTE'],
        ['function', 'callback.rotate_secret(text,interval,text)', 'callback_admin',    'EXECUTE'],
        ['function', 'callback.generate_secret()',                 'callback_admin',    'EXECUTE'],
        ['function', 'callback.process_callbacks(integer)',        'callback_admin',    'EXECUTE'],
        ['function', 'callback.purge(interval,integer)',           'callback_admin',    'EXECUTE'],
        ['function', 'callback.redrive(bigint[])',                 'callback_admin',    'EXECUTE'],
        ['function', 'callback.redrive(text)',                     'callback_admin',    'EXECUTE'],
        ['function', 'callback.redrive(timestamp with time zone)', 'callback_admin',    'EXECUTE'],
        ['function', 'callback.wake_worker()',                     'callback_admin',    'EXECUTE'],
        -- the producer's
        ['function', 'callback.enqueue(text,jsonb,text,text,text)', 'callback_producer', 'EXECUTE'],
        ['function', 'callback.trigger()',                         'callback_producer', 'EXECUTE'],
        ['procedure', 'callback.backfill(regclass,text,text,integer,text,boolean)', 'callback_producer', 'EXECUTE'],
        -- the monitor's
        ['function', 'callback.worker_stats()',                    'callback_monitor',  'EXECUTE'],
        ['function', 'callback.worker_stats()',                    'pg_monitor',        'EXECUTE'],
        ['function', 'callback.launcher_databases()',              'callback_monitor',  'EXECUTE'],
        ['function', 'callback.launcher_databases()',              'pg_monitor',        'EXECUTE'],
        ['function', 'callback.prometheus_metrics()',              'callback_monitor',  'EXECUTE'],
        ['function', 'callback.prometheus_metrics()',              'pg_monitor',        'EXECUTE'],
        ['function', 'callback.prometheus_series()',               'callback_monitor',  'EXECUTE'],
        ['function', 'callback.prometheus_series()',               'pg_monitor',        'EXECUTE'],
        ['function', 'callback.prometheus_health()',               'callback_monitor',  'EXECUTE'],
        ['function', 'callback.prometheus_health()',               'pg_monitor',        'EXECUTE'],
        -- pure functions of their arguments: everyone with USAGE on the schema
        ['function', 'callback.address_allowed(inet)',             'PUBLIC',            'EXECUTE'],
        ['function', 'callback.event_type_matches(text[],text)',   'PUBLIC',            'EXECUTE'],
        ['function', 'callback.histogram_percentile(bigint[],double precision)', 'PUBLIC', 'EXECUTE'],
        ['aggregate', 'callback.histogram_sum(bigint[])',          'PUBLIC',            'EXECUTE'],
        ['aggregate', 'callback.histogram_sum(bigint[])',          'callback_monitor',  'EXECUTE'],
        ['function', 'callback.redact_url(text,boolean)',          'PUBLIC',            'EXECUTE'],
        ['function', 'callback.sign(text,text,bigint,text)',       'PUBLIC',            'EXECUTE'],
        ['function', 'callback.validate_event_types(text[])',      'PUBLIC',            'EXECUTE'],
        ['function', 'callback.validate_headers(jsonb)',           'PUBLIC',            'EXECUTE'],
        ['function', 'callback.validate_secret(text)',             'PUBLIC',            'EXECUTE'],
        ['function', 'callback.validate_url(text)',                'PUBLIC',            'EXECUTE'],
        ['function', 'callback.verify_signature(text,text,bigint,text,text,interval)', 'PUBLIC', 'EXECUTE'],
        -- internal: the owner's alone (aggregates and SECURITY DEFINER functions call them as the owner)
        ['aggregate', 'callback.latency_histogram(double precision)', NULL,             NULL],
        ['function', 'callback.histogram_accum(bigint[],double precision)', NULL,       NULL],
        ['function', 'callback.histogram_add(bigint[],bigint[])',  NULL,                NULL],
        ['function', 'callback._check_endpoint_args(text,text,text[],jsonb,interval,text,integer,interval[],double precision,integer,integer,interval)', NULL, NULL],
        ['function', 'callback._check_secret_unused(text,integer)', NULL,               NULL],
        ['function', 'callback._calling_role()',                   NULL,                NULL],
        ['function', 'callback._check_endpoint_options(boolean,text,text,integer,interval)', NULL, NULL],
        ['function', 'callback._check_ordered(boolean)',           NULL,                NULL],
        ['function', 'callback._check_hook(text,text)',            NULL,                NULL],
        ['function', 'callback._check_batch(integer,interval)',    NULL,                NULL],
        ['function', 'callback._dead_letter_orphans()',            NULL,                NULL],
        ['function', 'callback._inbox_seq()',                      NULL,                NULL],
        ['function', 'callback._move_inbox(integer)',              NULL,                NULL],
        ['function', 'callback._endpoints_changed()',              NULL,                NULL],
        ['function', 'callback._endpoint_for_update(text)',        NULL,                NULL],
        ['function', 'callback._prom_label(text)',                 NULL,                NULL],
        ['function', 'callback._redrive_where(text,anyelement)',   NULL,                NULL],
        ['function', 'callback._stats_drop_purged()',              NULL,                NULL],
        ['function', 'callback._stats_fold_purged()',              NULL,                NULL]
    ];
    me CONSTANT xid := pg_catalog.pg_current_xact_id()::xid;
    m record;
    g record;
    col record;
    fresh boolean;
BEGIN
    -- names below are printed and parsed unqualified only in pg_catalog
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    SELECT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = 'callback.callback_endpoints'::regclass
                      AND d.deptype = 'e' AND d.xmin = me)
      INTO fresh;

    CREATE TEMP TABLE pgcb_acl_intended ON COMMIT DROP AS
    SELECT intended[i][1] AS kind, intended[i][2] AS object, intended[i][3] AS grantee, intended[i][4] AS privilege
      FROM generate_subscripts(intended, 1) i;

    /*
     * The objects to reset: name as GRANT takes it, owner, ACL (the
     * built-in default when NULL) and which built-in default applies.
     */
    CREATE TEMP TABLE pgcb_acl_members ON COMMIT DROP AS
    SELECT o.type AS kind, k.name, k.owner, coalesce(k.acl, acldefault(k.deftype, k.owner)) AS acl,
           k.deftype, k.relid
      FROM pg_depend d
      JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'pg_callback'
      CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
      CROSS JOIN LATERAL (
            SELECT c.oid::regclass::text, c.relowner, c.relacl,
                   CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.oid
              FROM pg_class c WHERE d.classid = 'pg_class'::regclass AND c.oid = d.objid
               AND c.relpersistence <> 't'   -- this part's own work tables
            UNION ALL
            SELECT p.oid::regprocedure::text, p.proowner, p.proacl, 'f', NULL
              FROM pg_proc p WHERE d.classid = 'pg_proc'::regclass AND p.oid = d.objid
            UNION ALL
            SELECT t.oid::regtype::text, t.typowner, t.typacl, 'T', NULL
              FROM pg_type t WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid)
            k(name, owner, acl, deftype, relid)
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND d.xmin = me
    UNION ALL
    SELECT 'schema', quote_ident(n.nspname), n.nspowner, coalesce(n.nspacl, acldefault('n', n.nspowner)), 'n', NULL
      FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
     WHERE x.extname = 'pg_callback' AND fresh;

    FOR m IN SELECT * FROM pgcb_acl_members mm
              WHERE NOT EXISTS (SELECT 1 FROM pgcb_acl_intended i WHERE i.kind = mm.kind AND i.object = mm.name)
    LOOP
        RAISE EXCEPTION 'pg_callback: % % has no privileges declared', m.kind, m.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Every object of the extension gets exactly the privileges listed in the table of sql/upgrade-1.1/99-acl.sql, whatever default privileges the installing role has.',
                  HINT = 'Add a row for it to that table (NULL grantee: the owner''s alone).';
    END LOOP;

    /*
     * For each grantee whose privileges differ from the table: REVOKE ALL,
     * then GRANT what the table says.  A table-level REVOKE takes the column
     * grants of that grantee too; they are granted again.
     */
    FOR g IN
        WITH want AS (
            SELECT mm.kind, mm.name, CASE WHEN i.grantee = 'PUBLIC' THEN 0 ELSE i.grantee::regrole::oid END AS grantee,
                   i.privilege, false AS grantable
              FROM pgcb_acl_members mm JOIN pgcb_acl_intended i ON i.kind = mm.kind AND i.object = mm.name
             WHERE i.grantee IS NOT NULL
            UNION
            SELECT mm.kind, mm.name, a.grantee, a.privilege_type, a.is_grantable
              FROM pgcb_acl_members mm, aclexplode(acldefault(mm.deftype, mm.owner)) a
             WHERE a.grantee = mm.owner),
        have AS (
            SELECT mm.kind, mm.name, a.grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
              FROM pgcb_acl_members mm, aclexplode(mm.acl) a),
        diff AS (
            (SELECT * FROM want EXCEPT SELECT * FROM have)
            UNION
            (SELECT * FROM have EXCEPT SELECT * FROM want))
        SELECT DISTINCT mm.kind, mm.name, mm.relid, d.grantee,
               CASE WHEN d.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(d.grantee::regrole::text) END AS role,
               CASE WHEN mm.kind IN ('table', 'view', 'materialized view', 'foreign table') THEN 'TABLE'
                    WHEN mm.kind IN ('function', 'aggregate', 'procedure') THEN 'ROUTINE'
                    ELSE upper(mm.kind) END AS on_what,
               (SELECT string_agg(w.privilege, ', ') FROM want w
                 WHERE w.kind = mm.kind AND w.name = mm.name AND w.grantee = d.grantee) AS privileges
          FROM diff d JOIN pgcb_acl_members mm ON mm.kind = d.kind AND mm.name = d.name
         ORDER BY mm.kind, mm.name, role
    LOOP
        CREATE TEMP TABLE IF NOT EXISTS pgcb_acl_columns (attname name, privilege text) ON COMMIT DROP;
        TRUNCATE pgcb_acl_columns;
        IF g.relid IS NOT NULL THEN
            INSERT INTO pgcb_acl_columns
            SELECT a.attname, e.privilege_type
              FROM pg_attribute a, aclexplode(a.attacl) e
             WHERE a.attrelid = g.relid AND a.attnum > 0 AND NOT a.attisdropped AND e.grantee = g.grantee;
        END IF;
        EXECUTE format('REVOKE ALL ON %s %s FROM %s CASCADE', g.on_what, g.name, g.role);
        IF g.privileges IS NOT NULL THEN
            EXECUTE format('GRANT %s ON %s %s TO %s', g.privileges, g.on_what, g.name, g.role);
        END IF;
        FOR col IN SELECT * FROM pgcb_acl_columns LOOP
            EXECUTE format('GRANT %s (%I) ON TABLE %s TO %s', col.privilege, col.attname, g.name, g.role);
        END LOOP;
    END LOOP;

    DROP TABLE pgcb_acl_intended, pgcb_acl_members;
    DROP TABLE IF EXISTS pgcb_acl_columns;
END
$acl$;
