
/*
 * 70-route-cache: the trigger and enqueue() route from a copy of the enabled
 * endpoints' patterns kept in each backend (src/route_cache.c).  Row
 * changes send no cache invalidation by themselves: this statement-level
 * trigger sends one for callback_endpoints whenever routing may have
 * changed (rows added or removed, id, enabled or event_types updated) or
 * whether a commit must wake the worker (paused: the events of paused
 * endpoints wait for resume_endpoint(), which wakes it); every backend
 * drops its copy at our next command or at our commit.  The breaker's
 * updates touch other columns and invalidate nothing.
 * Without the trigger (a 1.0 schema before ALTER EXTENSION ... UPDATE) the
 * library reads the endpoints for every event.  The trigger function is
 * no one's to call: the trigger manager does not check EXECUTE at fire
 * time.
 */
CREATE FUNCTION callback._endpoints_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'endpoints_changed'
LANGUAGE C;
REVOKE ALL ON FUNCTION callback._endpoints_changed() FROM PUBLIC;

CREATE TRIGGER callback_endpoints_routes_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, enabled, paused, event_types
    ON callback.callback_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION callback._endpoints_changed();
-- also in a session with session_replication_role = replica (logical
-- replication's apply, restores): the library caches routes only while
-- this trigger exists and fires always.
ALTER TABLE callback.callback_endpoints ENABLE ALWAYS TRIGGER callback_endpoints_routes_changed;
