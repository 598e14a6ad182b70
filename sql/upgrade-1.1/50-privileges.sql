/*
 * 50-privileges.sql: who may see what, and whose schema this is.
 *
 * 1. The schema must be the extension's alone (issue 14 item 20).  A role
 *    that may create objects in a pre-existing schema "callback", or owns
 *    objects in it, could shadow the extension's objects and run code as the
 *    extension's owner: refuse to install or upgrade.  (Part 10 refuses a
 *    schema that a non-superuser owns.)
 * 2. callback.redact_url(): the one redaction of URLs that messages and
 *    views use (item 10).
 * 3. callback_monitor reads counts, states, errors, timings, names and a
 *    redacted URL; never the endpoint headers (where Authorization goes),
 *    the full URL, event bodies or response bodies (item 9).
 * 4. Deliveries stranded by a dropped endpoint become dead letters (item 11).
 */

/* ---------------------------------------------------------------- 1. the schema */

/*
 * Part 10 has checked that a superuser owns the schema.  That is not enough:
 * another role that may create objects in it, or that left objects in it,
 * can shadow or replace the extension's own just the same.  Operators are
 * qualified: while this runs, search_path is the schema being judged.
 */
DO $check$
DECLARE
    ext record;
    nsp record;
    bad record;
BEGIN
    SELECT x.extowner, x.extnamespace INTO ext
      FROM pg_catalog.pg_extension x WHERE x.extname OPERATOR(pg_catalog.=) 'pg_callback';
    SELECT n.nspname, n.nspowner, n.nspacl INTO nsp
      FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) ext.extnamespace;

    -- nobody else may create objects in it
    FOR bad IN
        SELECT a.grantee FROM pg_catalog.aclexplode(nsp.nspacl) a
         WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
           AND a.grantee OPERATOR(pg_catalog.<>) nsp.nspowner
           AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) a.grantee), false)
    LOOP
        RAISE EXCEPTION 'role "%" may create objects in schema "%"',
                        CASE WHEN bad.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(bad.grantee) END,
                        nsp.nspname
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Objects it creates there could shadow the extension''s own.',
                  HINT = pg_catalog.format('REVOKE CREATE ON SCHEMA %I FROM %s, then try again.', nsp.nspname,
                                           CASE WHEN bad.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC'
                                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(bad.grantee)) END);
    END LOOP;

    -- and nothing in it belongs to another role
    FOR bad IN
        SELECT * FROM (
            SELECT 'relation' AS kind, c.oid::pg_catalog.regclass::text AS name, c.relowner AS owner
              FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'function', p.oid::pg_catalog.regprocedure::text, p.proowner
              FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'type', t.oid::pg_catalog.regtype::text, t.typowner
              FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'operator', o.oid::pg_catalog.regoperator::text, o.oprowner
              FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'collation', co.collname::text, co.collowner
              FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'conversion', cv.conname::text, cv.conowner
              FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'operator family', f.opfname::text, f.opfowner
              FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'operator class', oc.opcname::text, oc.opcowner
              FROM pg_catalog.pg_opclass oc WHERE oc.opcnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'text search configuration', tc.cfgname::text, tc.cfgowner
              FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'text search dictionary', td.dictname::text, td.dictowner
              FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) ext.extnamespace
            UNION ALL
            SELECT 'statistics object', se.stxname::text, se.stxowner
              FROM pg_catalog.pg_statistic_ext se WHERE se.stxnamespace OPERATOR(pg_catalog.=) ext.extnamespace) o
         WHERE o.owner OPERATOR(pg_catalog.<>) ext.extowner
           AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) o.owner), false)
         ORDER BY o.kind, o.name
    LOOP
        RAISE EXCEPTION '% % in schema "%" is owned by role "%", not by the owner of pg_callback',
                        bad.kind, bad.name, nsp.nspname, pg_catalog.pg_get_userbyid(bad.owner)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An object of another role in the extension''s schema could shadow the extension''s own.',
                  HINT = 'Move it to another schema or drop it, then try again.';
    END LOOP;
END
$check$;

/* ---------------------------------------------------------------- 2. redaction */

/*
 * The form of a URL that messages, logs and views show: user name and
 * password, query and fragment replaced by ***, and the path too when
 * keep_path is false.  Pure: PUBLIC may run it.
 */
CREATE FUNCTION callback.redact_url(url text, keep_path boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'redact_url'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/* ---------------------------------------------------------------- 3. the monitor */

/*
 * 1.0 let callback_monitor read every endpoint column but the secrets
 * (headers hold Authorization; a URL may hold a password or a token) and
 * whole rows of the queue and the attempt history (bodies are row images of
 * the tables with triggers, rows hidden from the monitor by privileges or
 * row-level security included; response bodies are the receiver's).  Each
 * REVOKE ... ON TABLE also takes the column grants away; what the monitor
 * may read is then granted column by column, so a column added later is
 * hidden until someone decides otherwise.
 */
REVOKE SELECT ON callback.callback_endpoints, callback.callback_queue,
                 callback.callback_attempts, callback.callback_stats,
                 callback.callback_dead_letters
    FROM callback_monitor;

GRANT SELECT (id, name, event_types, timeout_ms, max_attempts, retry_schedule,
              rate_limit, rate_burst, failure_threshold, breaker_cooldown, enabled, paused,
              disabled_reason, breaker_state, breaker_reason, breaker_changed_at,
              previous_secret_expires_at, created_at, updated_at)
    ON callback.callback_endpoints TO callback_monitor;

GRANT SELECT (id, event_id, endpoint_id, event_type, status, attempts, created_at,
              next_attempt_at, lease_expires_at, claimed_by, last_attempt_at,
              last_status_code, last_error, finished_at)
    ON callback.callback_queue TO callback_monitor;

GRANT SELECT (delivery_id, event_id, endpoint_id, event_type, attempt, started_at,
              latency_ms, status_code, error, outcome)
    ON callback.callback_attempts TO callback_monitor;

GRANT SELECT (minute, endpoint_id, event_type, attempts, delivered, failed, dead,
              latency_sum_ms, latency_max_ms, latency_hist, last_error)
    ON callback.callback_stats TO callback_monitor;

GRANT SELECT (id, event_id, endpoint, event_type, attempts, last_status_code, last_error,
              last_attempt_at, died_at, created_at)
    ON callback.callback_dead_letters TO callback_monitor;

/*
 * Each endpoint as the monitor may see it: the URL reduced to scheme, host
 * and port (a path or query may hold a token, such as Slack's or Azure's
 * ?code=), the names of the extra headers but not their values.
 */
CREATE VIEW callback.callback_endpoints_redacted AS
SELECT e.id, e.name, callback.redact_url(e.url, false) AS url,
       ARRAY(SELECT h.k FROM pg_catalog.jsonb_object_keys(e.headers) h(k)
              ORDER BY h.k COLLATE "C") AS header_names,
       e.event_types, e.timeout_ms, e.max_attempts, e.retry_schedule, e.rate_limit,
       e.rate_burst, e.failure_threshold, e.breaker_cooldown, e.enabled, e.paused,
       e.disabled_reason, e.breaker_state, e.breaker_reason, e.breaker_changed_at,
       e.created_at, e.updated_at
  FROM callback.callback_endpoints e;
COMMENT ON VIEW callback.callback_endpoints_redacted IS
    'Endpoints without secrets, header values or the URL''s credentials, path and query: what callback_monitor may read.';
REVOKE ALL ON callback.callback_endpoints_redacted FROM PUBLIC;
GRANT SELECT ON callback.callback_endpoints_redacted TO callback_admin, callback_monitor;

/* ---------------------------------------------------------------- 4. dropped endpoints */

/*
 * A transaction that queued an event for an endpoint and committed after
 * callback.drop_endpoint() removed it leaves a pending delivery that no
 * claim reaches (claims go by endpoint).  The trigger takes no lock on the
 * endpoint (a row lock per event would cost every business write), so the
 * race is allowed and cleaned up afterwards: the worker's sweep (every
 * callback.poll_interval) and process_callbacks() call this, which makes
 * such deliveries dead letters with the error 'endpoint dropped' and says
 * so in a WARNING.  Nothing is lost silently: they stay in
 * callback_dead_letters until callback.purge().  A claim of a stopped
 * claimer whose endpoint's row is gone joins them once the sweep of expired
 * leases has returned it (src/queue.c, PLAN_RELEASE_EXPIRED).
 *
 * The endpoints with undelivered rows are found with one probe of
 * callback_queue_due per endpoint (a loose index scan, index-only: no row
 * in flight is read), so the cost follows the number of endpoints, not the
 * backlog.
 */
CREATE FUNCTION callback._dead_letter_orphans()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    orphans integer[];
    n bigint;
BEGIN
    WITH RECURSIVE ids(id) AS (
        SELECT min(q.endpoint_id) FROM callback.callback_queue q
         WHERE q.finished_at IS NULL
        UNION ALL
        SELECT (SELECT min(q.endpoint_id) FROM callback.callback_queue q
                 WHERE q.finished_at IS NULL AND q.endpoint_id > ids.id)
          FROM ids WHERE ids.id IS NOT NULL)
    SELECT array_agg(ids.id) INTO orphans
      FROM ids
     WHERE ids.id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM callback.callback_endpoints e WHERE e.id = ids.id);
    IF orphans IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE callback.callback_queue q
       SET status = 'dead', last_error = 'endpoint dropped', finished_at = now(),
           lease_expires_at = NULL, claimed_by = NULL
     WHERE q.finished_at IS NULL AND q.status = 'pending' AND q.endpoint_id = ANY (orphans);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE WARNING 'pg_callback: % deliveries to dropped endpoints are dead letters now', n
            USING DETAIL = 'Their endpoint is gone: their events were queued by transactions that committed after callback.drop_endpoint() had removed it, or they were claimed and returned to the queue after its row was removed.',
                  HINT = 'See SELECT * FROM callback.callback_dead_letters WHERE last_error = ''endpoint dropped''; callback.purge() removes them in time.';
    END IF;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION callback._dead_letter_orphans() FROM PUBLIC;
