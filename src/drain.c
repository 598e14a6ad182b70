/*
 * drain.c
 *		callback.process_callbacks(max): the delivery engine run from SQL, for
 *		setups that drive delivery from pg_cron instead of the worker.  Same
 *		claim, signing, rate limits, retry policy and write-back as the
 *		worker; the difference is that it all happens inside the caller's
 *		transaction, so an error or a cancel rolls the claims back and the
 *		deliveries are sent again later, never lost.
 *
 * Memory: each refill (claim, start, wait, write back) allocates in a
 * context of its own, reset before the next, so that a call of a million
 * deliveries uses what one refill uses.
 */
#include "postgres.h"

#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "delivery.h"
#include "guc.h"
#include "hooks.h"
#include "inbox.h"
#include "pg_callback.h"
#include "queue.h"
#include "queue_rules.h"
#include "shmem.h"
#include "version.h"

PG_FUNCTION_INFO_V1(process_callbacks);

/* process_callbacks() is running in this backend: not again from inside it */
static bool draining = false;

#define DRAIN_WAIT_MS 100

Datum
process_callbacks(PG_FUNCTION_ARGS)
{
	int			max;
	volatile int attempted = 0;
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext refill_cxt;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max must not be NULL"),
				 errhint("Give how many deliveries to attempt, such as 1000.")));
	max = PG_GETARG_INT32(0);
	if (max < 1 || max > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max %d is out of range", max),
				 errhint("Give between 1 and 1000000 deliveries.")));
	if (pgcb_hooks_running())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("process_callbacks() cannot be called from an endpoint's transform or on_response"),
				 errhint("The delivery engine is running that hook: return, and let the worker deliver.")));
	/* a trigger fired by the engine's own writes (queue_rows.c) would re-enter it */
	if (draining || pgcb_delivery_in_worker())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("process_callbacks() cannot be called while the delivery engine runs in this process"),
				 errhint("A trigger on callback_queue or callback_attempts runs inside the engine's writes: let the worker deliver.")));
	if (pgcb_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_callback is not in shared_preload_libraries"),
				 errhint("Rate limits live in shared memory: add pg_callback to shared_preload_libraries and restart.")));

	pgcb_version_check_schema(get_extension_oid(PGCB_EXTENSION_NAME, false));
	{
		char	   *tables;

		/* a table locked (PGCB_RULES_UNKNOWN): our statements wait for it */
		if (pgcb_queue_rules_look(&tables) == PGCB_RULES_FOUND)
			pgcb_queue_rules_report(ERROR, tables);
	}

	(void) pgcb_queue_dead_letter_orphans();
	pgcb_delivery_init(NULL, -1);
	/* settings reloaded since the last call (callback.max_connections) */
	pgcb_delivery_apply_settings();
	refill_cxt = AllocSetContextCreate(caller_cxt, "pg_callback drain refill",
									   ALLOCSET_DEFAULT_SIZES);
	draining = true;
	PG_TRY();
	{
		for (;;)
		{
			int			room;
			int			started;

			MemoryContextReset(refill_cxt);
			MemoryContextSwitchTo(refill_cxt);
			room = Min(max - attempted, pgcb_max_inflight - pgcb_delivery_inflight());
			/* callback.inbox: what committed there joins the queue first */
			if (room > 0)
				(void) pgcb_inbox_move(PGCB_INBOX_MOVE_MAX);
			started = room > 0 ? pgcb_delivery_cycle(room) : 0;
			attempted += started;
			if (pgcb_delivery_inflight() == 0 && (started == 0 || attempted >= max))
				break;
			/* wait for at least one attempt to finish, then refill */
			do
			{
				CHECK_FOR_INTERRUPTS();
				(void) pgcb_delivery_wait(DRAIN_WAIT_MS);
			} while (pgcb_delivery_unflushed() == 0 && pgcb_delivery_inflight() > 0);
		}
		pgcb_delivery_flush();
	}
	PG_CATCH();
	{
		draining = false;
		MemoryContextSwitchTo(caller_cxt);
		pgcb_delivery_shutdown();
		PG_RE_THROW();
	}
	PG_END_TRY();
	draining = false;
	MemoryContextSwitchTo(caller_cxt);
	MemoryContextDelete(refill_cxt);
	PG_RETURN_INT32(attempted);
}
