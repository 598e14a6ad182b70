/*
 * inbox.c
 *		callback_inbox (sql/upgrade-1.1/58-inbox.sql): with callback.inbox
 *		on, queue_insert.c writes new deliveries there, where they cost a
 *		heap tuple and no index entry; the worker, at the start of each
 *		cycle, moves them into callback_queue with one statement.
 *
 * This file holds the two ends that are not queue_insert.c's: the counter
 * that orders one backend's inbox rows, and the worker's call of the move.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/lsyscache.h"

#include "inbox.h"
#include "pg_callback.h"
#include "queue.h"

PG_FUNCTION_INFO_V1(inbox_seq);

/* The order of this backend's inbox rows; with xact, of all of them. */
static int64 next_seq = 0;

Datum
inbox_seq(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(++next_seq);
}

Oid
pgcb_inbox_relid(void)
{
	Oid			nsp = get_namespace_oid(PGCB_SCHEMA_NAME, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("callback_inbox", nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.inbox is on, but this database's pg_callback has no callback_inbox"),
				 errhint("Run ALTER EXTENSION pg_callback UPDATE, or turn callback.inbox off.")));
	return relid;
}

typedef struct MoveStep
{
	Oid			fn;
	int			max;
	uint64		n;
} MoveStep;

static void
move_step(void *arg)
{
	MoveStep   *ms = (MoveStep *) arg;

	ms->n = (uint64) DatumGetInt64(OidFunctionCall1(ms->fn, Int32GetDatum(ms->max)));
}

uint64
pgcb_inbox_move(int max)
{
	Oid			argtypes[1] = {INT4OID};
	MoveStep	ms;

	/* by name and schema, not search_path; absent below 1.1: nothing to move */
	ms.fn = LookupFuncName(list_make2(makeString(PGCB_SCHEMA_NAME), makeString("_move_inbox")),
						   1, argtypes, true);
	if (!OidIsValid(ms.fn))
		return 0;
	ms.max = max;
	ms.n = 0;
	/* a DELETE meeting a row lock held elsewhere: the next cycle moves it */
	(void) pgcb_queue_run_step(move_step, &ms);
	return ms.n;
}
