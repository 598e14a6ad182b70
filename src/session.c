/*
 * session.c
 *		The settings under which pg_callback's own SQL runs.
 *
 * The worker and the SQL run for a caller (the trigger's insert, enqueue(),
 * process_callbacks()) act with the extension owner's rights.  Name lookup
 * there must not depend on anything another role can create: a function in
 * public or in a "$user" schema with a more exact signature than
 * pg_catalog's (unnest(interval[]) over unnest(anyarray)), or an operator on
 * the extension's enum, would otherwise run attacker code as the owner.  So
 * every statement is written schema-qualified, and on top of that runs with
 * search_path = pg_catalog, pg_temp, as the owner, in a security-restricted
 * operation (the same guard as a SECURITY DEFINER function with a SET
 * clause, as fmgr applies it).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pg_callback.h"
#include "session.h"

PG_FUNCTION_INFO_V1(pgcb_calling_role);

void
pgcb_session_pin_search_path(void)
{
	/* above ALTER ROLE / ALTER DATABASE ... SET search_path and the file */
	SetConfigOption("search_path", PGCB_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
}

Oid
pgcb_session_relid(const char *relname)
{
	Oid			nsp = get_namespace_oid(PGCB_SCHEMA_NAME, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_callback is not installed in this database"),
				 errhint("Run CREATE EXTENSION pg_callback.")));
	return relid;
}

Oid
pgcb_session_owner(void)
{
	Oid			relid = pgcb_session_relid("callback_queue");
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
pgcb_session_enter(PgcbSession *s)
{
	Oid			owner = pgcb_session_owner();

	GetUserIdAndSecContext(&s->save_userid, &s->save_sec_context);
	SetUserIdAndSecContext(owner, s->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	/* PGC_S_SESSION outranks every other source: the setting always applies */
	s->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", PGCB_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

void
pgcb_session_leave(PgcbSession *s)
{
	AtEOXact_GUC(true, s->save_nestlevel);
	SetUserIdAndSecContext(s->save_userid, s->save_sec_context);
}

/*
 * callback._calling_role(): the role in effect outside every SECURITY
 * DEFINER function (what SET ROLE left), so that create_endpoint can record
 * who created an endpoint although it runs as the extension's owner.
 */
Datum
pgcb_calling_role(PG_FUNCTION_ARGS)
{
	char	   *name = GetUserNameFromId(GetOuterUserId(), false);

	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(name)));
}
