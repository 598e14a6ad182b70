/*
 * dbguard.c
 *		Sees DROP DATABASE of a database our workers (or the launcher's
 *		probe) are connected to, holds the launcher off that database for a
 *		while, and asks them to leave before the drop looks for other
 *		sessions.  If the drop fails after all, the hold is lifted when its
 *		transaction aborts and the worker comes back.  Each database has a
 *		hold of its own, so that two drops at once do not undo each other.
 *
 * It acts from the object access hook (OAT_DROP of a pg_database entry),
 * not from ProcessUtility: dropdb() calls that hook only after its own
 * checks that the database exists and that the caller owns it, and
 * ProcessUtility has refused a transaction block before dropdb() runs.  A
 * ProcessUtility hook sees the statement before all of that, so any login
 * role could evict the worker with a DROP DATABASE it may not run.  From
 * the hook dropdb() goes on to refuse templates and its own database,
 * logical slots and subscriptions, then (WITH (FORCE)) terminates the other
 * sessions and counts those left: the worker is gone by then.  dropdb()
 * holds the database's lock from before the hook, so no new session (nor
 * a worker the launcher starts) can connect meanwhile.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "dbguard.h"
#include "shmem.h"

#define HOLD_MS 10000
#define LEAVE_WAIT_MS 5000

static object_access_hook_type prev_object_access_hook = NULL;

/* The hold this backend set in its current transaction, if any. */
static Oid	my_hold_dboid = InvalidOid;
static TimestampTz my_hold_until = 0;
static bool xact_callback_registered = false;

/*
 * The drop failed after the hook (a template, other sessions without
 * FORCE, a cancel): lift our hold, so the launcher restarts the worker now
 * rather than when the hold runs out.
 */
static void
dbguard_xact_callback(XactEvent event, void *arg)
{
	if (!OidIsValid(my_hold_dboid))
		return;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		Latch	   *launcher_latch = NULL;

		LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
		if (pgcb_shmem_unhold(my_hold_dboid, my_hold_until))
			launcher_latch = pgcb_shared->launcher_latch;
		LWLockRelease(pgcb_shared->lock);
		if (launcher_latch != NULL)
			SetLatch(launcher_latch);
	}
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		my_hold_dboid = InvalidOid;
		my_hold_until = 0;
	}
}

static void
hold_and_evict(Oid dboid)
{
	TimestampTz deadline;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(dbguard_xact_callback, NULL);
		xact_callback_registered = true;
	}

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	my_hold_dboid = dboid;
	my_hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HOLD_MS);
	pgcb_shmem_hold(dboid, my_hold_until);
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
	{
		PgcbWorkerSlot *slot = &pgcb_shared->workers[i];

		if (slot->pid != 0 && slot->dboid == dboid)
			kill(slot->pid, SIGTERM);
	}
	/* the probe lasts milliseconds, but the drop need not wait for it */
	if (pgcb_shared->probe_pid != 0 && pgcb_shared->probe_dboid == dboid)
		kill(pgcb_shared->probe_pid, SIGTERM);
	LWLockRelease(pgcb_shared->lock);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LEAVE_WAIT_MS);
	for (;;)
	{
		bool		still_there = false;

		LWLockAcquire(pgcb_shared->lock, LW_SHARED);
		for (int i = 0; i < PGCB_MAX_WORKERS; i++)
			if (pgcb_shared->workers[i].pid != 0 && pgcb_shared->workers[i].dboid == dboid)
				still_there = true;
		if (pgcb_shared->probe_pid != 0 && pgcb_shared->probe_dboid == dboid)
			still_there = true;
		LWLockRelease(pgcb_shared->lock);
		if (!still_there || GetCurrentTimestamp() > deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PGCB_WAIT_EVENT);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
pgcb_object_access_hook(ObjectAccessType access, Oid classId, Oid objectId,
						int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	/* dropdb() calls this once the caller is known to own the database */
	if (access == OAT_DROP && classId == DatabaseRelationId && pgcb_shared != NULL)
		hold_and_evict(objectId);
}

void
pgcb_dbguard_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = pgcb_object_access_hook;
}
