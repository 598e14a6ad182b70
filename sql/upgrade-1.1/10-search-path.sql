
/* ---------------------------------------------------------------- 10: search_path */

/*
 * Name lookup that another role can steer.  The C side (src/session.c) runs
 * every statement of the worker, process_callbacks() and the trigger as the
 * extension's owner with search_path pinned and every name qualified.  On
 * this side, every SQL and PL/pgSQL function of 1.0 already has
 * SET search_path = pg_catalog, pg_temp (the regression test search_path
 * checks that each function of the extension does, so that a new one cannot
 * forget it) and the views bind their names when created.
 *
 * What remains is the schema itself: CREATE EXTENSION puts everything into an
 * existing schema named callback, whoever owns it, and a schema's owner may
 * drop and re-create any object in it, such as callback.event_type_matches(),
 * which the trigger then runs with the extension owner's rights.  So the
 * schema must belong to a superuser (the extension's owner is one).
 */
DO $guard$
DECLARE
    owner_name name;
BEGIN
    SELECT r.rolname INTO owner_name
      FROM pg_catalog.pg_namespace n
      JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
     WHERE n.nspname OPERATOR(pg_catalog.=) 'callback' AND NOT r.rolsuper;
    IF FOUND THEN
        RAISE EXCEPTION 'schema "callback" is owned by role "%", which is not a superuser', owner_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The owner of the schema could replace the functions that pg_callback runs with its owner''s rights.',
                  HINT = 'Make a superuser its owner (ALTER SCHEMA callback OWNER TO ...) or, before CREATE EXTENSION, drop that schema.';
    END IF;
END
$guard$;
