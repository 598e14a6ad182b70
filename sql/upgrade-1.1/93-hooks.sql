/*
 * 93-hooks: transform and on_response, the SQL functions an endpoint may
 * name (issue 12, items 2 and 4).  The worker runs them (src/hooks.c) as the
 * endpoint's owner, never as a superuser, security-restricted, with
 * search_path pinned and callback.hook_timeout.
 *
 * Checked here, once, when an endpoint is created or altered: the name is
 * schema-qualified (so that nothing depends on a search_path), the function
 * exists with exactly the hook's arguments, the calling role may execute
 * it, and that role is not a superuser.  The worker checks the same again
 * before each call (the function may be dropped, replaced or revoked later,
 * the owner made a superuser): a failed check there is a failed attempt
 * with the reason recorded, like an error of the function itself.
 */

/* What an on_response function left behind when it failed; NULL: it ran, or there is none. */
ALTER TABLE callback.callback_attempts ADD COLUMN hook_error text;
COMMENT ON COLUMN callback.callback_attempts.hook_error IS
    'The error of the endpoint''s on_response function, run after this final attempt; the outcome stands.';
GRANT SELECT (hook_error) ON callback.callback_attempts TO callback_monitor;

CREATE OR REPLACE FUNCTION callback._check_hook(kind text, fn text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    args CONSTANT text := CASE kind WHEN 'transform' THEN 'jsonb'
                                    ELSE 'bigint, jsonb, integer, jsonb, text' END;
    shape CONSTANT text := CASE kind WHEN 'transform' THEN '(jsonb) RETURNS jsonb'
                                     ELSE '(delivery_id bigint, event jsonb, status integer, headers jsonb, body text)' END;
    parts text[];
    p oid;
    f record;
    caller CONSTANT name := callback._calling_role();
BEGIN
    IF fn IS NULL THEN
        RETURN;
    END IF;
    IF length(fn) > 200 THEN
        RAISE EXCEPTION '% function name is too long', kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give the function as schema.name, e.g. app.my_%s.', kind);
    END IF;
    BEGIN
        parts := parse_ident(fn);
    EXCEPTION WHEN invalid_parameter_value THEN
        parts := NULL;
    END;
    IF coalesce(array_length(parts, 1), 0) <> 2 THEN
        RAISE EXCEPTION '% function "%" is not a schema-qualified function name', kind, fn
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give the function as schema.name without arguments, e.g. app.my_%s: '
                                'it is looked up with the arguments %s, never through search_path.',
                                kind, shape);
    END IF;
    p := to_regprocedure(format('%I.%I(%s)', parts[1], parts[2], args));
    IF p IS NULL THEN
        RAISE EXCEPTION '% function %(%) does not exist', kind, fn, args
            USING ERRCODE = 'undefined_function',
                  HINT = format('Create %s%s first (a %s function takes exactly these arguments).',
                                fn, shape, kind);
    END IF;
    SELECT pr.prokind, pr.proretset, pr.prorettype INTO f FROM pg_proc pr WHERE pr.oid = p;
    IF f.prokind <> 'f' OR f.proretset
       OR (kind = 'transform' AND f.prorettype <> 'jsonb'::regtype) THEN
        RAISE EXCEPTION '% function % is not a function %', kind, p::regprocedure, shape
            USING ERRCODE = 'wrong_object_type',
                  HINT = CASE kind WHEN 'transform'
                              THEN 'A transform is a plain function (not a procedure, aggregate or set-returning function) returning one jsonb: the body to send.'
                              ELSE 'An on_response hook is a plain function (not a procedure, aggregate or set-returning function); what it returns is ignored.' END;
    END IF;
    IF NOT has_function_privilege(caller, p, 'EXECUTE') THEN
        RAISE EXCEPTION 'role "%" may not execute % function %', caller, kind, p::regprocedure
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT EXECUTE ON FUNCTION %s TO %I, or name a function that role may run: it runs with that role''s rights.',
                                p::regprocedure, caller);
    END IF;
    /*
     * A hook runs with its owner's rights: its code must be the owner's
     * own (or a role's the owner belongs to), or a function's author could
     * have it run as anyone who creates an endpoint naming it, e.g.
     * through a SECURITY DEFINER function that role is led to call.
     */
    IF NOT pg_has_role(caller, (SELECT pr.proowner FROM pg_proc pr WHERE pr.oid = p), 'USAGE') THEN
        RAISE EXCEPTION 'role "%" does not own % function %', caller, kind, p::regprocedure
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A hook runs with the rights of the endpoint''s owner (%I): name a function that role, or a role it belongs to, owns.',
                                caller);
    END IF;
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = caller) THEN
        RAISE EXCEPTION '% functions never run as a superuser, and role "%" is one', kind, caller
            USING ERRCODE = 'invalid_role_specification',
                  HINT = 'Create the endpoint as a role that is not a superuser (SET ROLE app_owner first): its hooks run as that role, with its rights only.';
    END IF;
END
$fn$;
