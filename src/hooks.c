/*
 * hooks.c
 *		Runs an endpoint's SQL hooks (transform, on_response) safely.
 *
 * A hook is user code called by the worker, which otherwise acts with the
 * extension owner's rights.  So each call:
 *   - looks the function up again by its stored name and its fixed
 *     arguments, and checks again what create_endpoint checked (part 93):
 *     the function may have been dropped, replaced or revoked since, and
 *     the owner made a superuser;
 *   - runs as the endpoint's owner (never a superuser), in a
 *     security-restricted operation (no SET ROLE, no temp objects), with
 *     search_path = pg_catalog, pg_temp, in a subtransaction, so that an
 *     error undoes only the hook's own work;
 *   - is cut by callback.hook_timeout: a timer of our own (not
 *     statement_timeout, which only a client's statement arms, and which
 *     process_callbacks' caller may be using) cancels the call, and keeps
 *     cancelling it every HOOK_RECANCEL_MS should the hook catch the
 *     cancel and go on; in the worker, a hook still running one more
 *     hook_timeout after that ends the worker (hook_escalation.c);
 *   - leaves no setting behind (its SETs are undone).
 * Every failure, a check or the function's own error, is returned as text
 * for the caller to record; nothing is thrown at the worker.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "compat.h"
#include "guc.h"
#include "hook_escalation.h"
#include "hooks.h"
#include "session.h"

#define HOOK_RECANCEL_MS 100
#define HOOK_MAX_ARGS 5

static TimeoutId hook_timer = MAX_TIMEOUTS;
static bool in_hook = false;	/* see pgcb_hooks_running() */
static volatile sig_atomic_t hook_timed_out = false;


/*
 * What a hook may leave in the worker's session beyond its transaction:
 * session-level advisory locks and prepared statements.  The worker itself
 * uses neither, so both are cleared after every call: one hook must not
 * hold a lock another session waits for, or leave state for the next.
 */
static void
undo_session_state(void)
{
	LockReleaseSession(USER_LOCKMETHOD);
	DropAllPreparedStatements();
}

/* Like statement_timeout's handler: ask for a cancel at the next check. */
static void
hook_timeout_handler(void)
{
	hook_timed_out = true;
	QueryCancelPending = true;
	pgcb_hookesc_tick();		/* past the grace: the worker ends instead */
	InterruptPending = true;
	SetLatch(MyLatch);
}

typedef struct HookCall
{
	const char *kind;			/* "transform" or "on_response" */
	const char *fn;
	const char *owner;
	int64		delivery_id;	/* the delivery (a batch's first) it runs for */
	int			nargs;
	Oid			argtypes[HOOK_MAX_ARGS];
	Datum		args[HOOK_MAX_ARGS];
	bool		nulls[HOOK_MAX_ARGS];
	bool		want_jsonb;		/* the result must be one jsonb */
} HookCall;

/*
 * The function and role to run, checked as create_endpoint checked them;
 * an error (caught by run_hook) otherwise.
 */
static void
resolve(const HookCall *call, Oid *fnoid, Oid *role)
{
	List	   *names;
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		bad;
	Oid			fn_owner;

	if (call->owner == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_ROLE_SPECIFICATION),
				 errmsg("the endpoint has no owner role to run its %s as", call->kind),
				 errhint("Endpoints created before version 1.1 have none: create it again as the role the hook should run as.")));
	*role = get_role_oid(call->owner, true);
	if (!OidIsValid(*role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the endpoint's owner role \"%s\" no longer exists", call->owner)));
	if (superuser_arg(*role))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_ROLE_SPECIFICATION),
				 errmsg("%s functions never run as a superuser, and the endpoint's owner \"%s\" is one",
						call->kind, call->owner),
				 errhint("Create the endpoint again as a role that is not a superuser.")));
	names = stringToQualifiedNameList(call->fn);
	if (list_length(names) != 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s function \"%s\" is not schema-qualified", call->kind, call->fn)));
	*fnoid = LookupFuncName(names, call->nargs, call->argtypes, true);
	if (!OidIsValid(*fnoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s function %s does not exist with the arguments of a %s",
						call->kind, call->fn, call->kind)));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(*fnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", *fnoid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	bad = proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		(call->want_jsonb && proc->prorettype != JSONBOID);
	fn_owner = proc->proowner;
	ReleaseSysCache(tup);
	if (bad)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s function %s no longer has the shape of a %s",
						call->kind, call->fn, call->kind)));
	if (pgcb_proc_aclcheck(*fnoid, *role) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may no longer execute %s function %s",
						call->owner, call->kind, call->fn)));
	/* nobody else's code runs with the owner's rights (part 93) */
	if (!has_privs_of_role(*role, fn_owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s function %s is not owned by the endpoint's owner \"%s\" or a role it belongs to",
						call->kind, call->fn, call->owner)));
}

static void
disarm(void)
{
	disable_timeout(hook_timer, false);
	pgcb_hookesc_disarm();
	/* a cancel of ours that no check consumed must not hit the worker later */
	if (hook_timed_out)
		QueryCancelPending = false;
}

/*
 * Call the hook.  True: *result / *isnull hold what it returned (copied
 * into the caller's memory context, which must outlive the call).  False:
 * *error says why.
 */
static bool
run_hook(const HookCall *call, Datum *result, bool *isnull, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	volatile bool ok = true;
	char	   *volatile aside = NULL;
	TimestampTz until;

	if (hook_timer == MAX_TIMEOUTS)
		hook_timer = RegisterTimeout(USER_TIMEOUT, hook_timeout_handler);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	hook_timed_out = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Oid			fnoid;
		Oid			role;
		FmgrInfo	flinfo;
		int			nest;
		bool		skip = false;
		Datum		res = (Datum) 0;
		LOCAL_FCINFO(fcinfo, HOOK_MAX_ARGS);

		resolve(call, &fnoid, &role);
		/* a worker ended itself in a call of it lately: a failure, not run */
		if (pgcb_hookesc_set_aside(call->kind, fnoid, &until))
		{
			aside = psprintf("%s %s did not stop within callback.hook_timeout (%d ms) after its cancel; the worker was restarted, and the %s is not called until %s",
							 call->kind, call->fn, pgcb_hook_timeout_ms, call->kind,
							 timestamptz_to_str(until));
			skip = true;
		}
		fmgr_info(fnoid, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, call->nargs, DEFAULT_COLLATION_OID, NULL, NULL);
		for (int i = 0; i < call->nargs; i++)
		{
			fcinfo->args[i].value = call->args[i];
			fcinfo->args[i].isnull = call->nulls[i];
			skip |= flinfo.fn_strict && call->nulls[i];
		}

		nest = NewGUCNestLevel();
		(void) set_config_option("search_path", PGCB_SAFE_SEARCH_PATH,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		pgcb_hookesc_arm(call->kind, call->fn, fnoid, call->delivery_id,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 2 * (int64) pgcb_hook_timeout_ms));
		enable_timeout_every(hook_timer,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), pgcb_hook_timeout_ms),
							 HOOK_RECANCEL_MS);
		/* a STRICT function with a NULL argument is not called, as in SQL */
		if (!skip)
		{
			in_hook = true;
			res = FunctionCallInvoke(fcinfo);
			CHECK_FOR_INTERRUPTS();
			in_hook = false;
		}
		disarm();
		SetUserIdAndSecContext(save_userid, save_sec);
		/* whatever the hook SET is undone, even without LOCAL */
		AtEOXact_GUC(false, nest);
		undo_session_state();

		*isnull = skip || fcinfo->isnull;
		*result = *isnull ? (Datum) 0 :
			call->want_jsonb ? PointerGetDatum(DatumGetJsonbPCopy(res)) : (Datum) 0;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		in_hook = false;
		disarm();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* restores the user, the security context and the settings */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		undo_session_state();
		if (hook_timed_out && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			*error = psprintf("%s %s did not finish within callback.hook_timeout (%d ms)",
							  call->kind, call->fn, pgcb_hook_timeout_ms);
		else
			*error = psprintf("%s %s failed: %s (SQLSTATE %s)", call->kind, call->fn,
							  edata->message ? edata->message : "unknown error",
							  unpack_sql_state(edata->sqlerrcode));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	hook_timed_out = false;
	if (ok && aside != NULL)
	{
		*error = aside;
		return false;
	}
	return ok;
}

bool
pgcb_hooks_running(void)
{
	return in_hook;
}

bool
pgcb_hooks_transform(const char *fn, const char *owner, int64 delivery_id,
					 char **body, int *body_len, char **error)
{
	HookCall	call;
	Datum		result;
	bool		isnull;
	Jsonb	   *jb;

	memset(&call, 0, sizeof(call));
	call.kind = "transform";
	call.fn = fn;
	call.owner = owner;
	call.delivery_id = delivery_id;
	call.nargs = 1;
	call.argtypes[0] = JSONBOID;
	call.want_jsonb = true;
	/* the body is the JSON text the trigger or enqueue() made */
	call.args[0] = DirectFunctionCall1(jsonb_in, CStringGetDatum(*body));

	if (!run_hook(&call, &result, &isnull, error))
		return false;
	if (isnull)
	{
		*error = psprintf("transform %s returned NULL", fn);
		return false;
	}
	jb = DatumGetJsonbP(result);
	*body = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	*body_len = (int) strlen(*body);
	return true;
}

char *
pgcb_hooks_on_response(const char *fn, const char *owner, int64 delivery_id,
					   const char *event, int status, const char *headers,
					   const char *response_body)
{
	HookCall	call;
	Datum		result;
	bool		isnull;
	char	   *error = NULL;

	memset(&call, 0, sizeof(call));
	call.kind = "on_response";
	call.fn = fn;
	call.owner = owner;
	call.delivery_id = delivery_id;
	call.nargs = 5;
	call.argtypes[0] = INT8OID;
	call.argtypes[1] = JSONBOID;
	call.argtypes[2] = INT4OID;
	call.argtypes[3] = JSONBOID;
	call.argtypes[4] = TEXTOID;
	call.args[0] = Int64GetDatum(delivery_id);
	call.nulls[1] = event == NULL;
	if (event != NULL)
		call.args[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(event));
	call.nulls[2] = status == 0;
	call.args[2] = Int32GetDatum(status);
	call.nulls[3] = headers == NULL;
	if (headers != NULL)
		call.args[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(headers));
	call.nulls[4] = response_body == NULL;
	if (response_body != NULL)
		call.args[4] = CStringGetTextDatum(response_body);

	if (!run_hook(&call, &result, &isnull, &error))
		return error;
	return NULL;
}
