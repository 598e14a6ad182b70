/*
 * dbguard.c
 *		A ProcessUtility hook that sees DROP DATABASE of the database our
 *		worker is connected to, holds the launcher off for a while, and asks
 *		the worker to leave before the drop looks for other sessions.  If
 *		the drop fails, the hold simply runs out and the worker comes back.
 */
#include "postgres.h"

#include <signal.h>

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "dbguard.h"
#include "shmem.h"

#define HOLD_MS 10000
#define LEAVE_WAIT_MS 5000

static ProcessUtility_hook_type prev_utility_hook = NULL;

static void
hold_and_evict(Oid dboid)
{
	TimestampTz deadline;

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	pgcb_shared->hold_dboid = dboid;
	pgcb_shared->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HOLD_MS);
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
	{
		PgcbWorkerSlot *slot = &pgcb_shared->workers[i];

		if (slot->pid != 0 && slot->dboid == dboid)
			kill(slot->pid, SIGTERM);
	}
	LWLockRelease(pgcb_shared->lock);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LEAVE_WAIT_MS);
	for (;;)
	{
		bool		still_there = false;

		LWLockAcquire(pgcb_shared->lock, LW_SHARED);
		for (int i = 0; i < PGCB_MAX_WORKERS; i++)
			if (pgcb_shared->workers[i].pid != 0 && pgcb_shared->workers[i].dboid == dboid)
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
pgcb_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (pgcb_shared != NULL && IsA(stmt, DropdbStmt))
	{
		Oid			dboid = get_database_oid(((DropdbStmt *) stmt)->dbname, true);

		if (OidIsValid(dboid))
			hold_and_evict(dboid);
	}

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
pgcb_dbguard_init(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = pgcb_utility_hook;
}
