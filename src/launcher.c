/*
 * launcher.c
 *		The leader, modelled on autoprewarm: a static background worker,
 *		restarted by the postmaster if it dies, that starts one delivery
 *		worker for callback.database_name (a dynamic worker with
 *		bgw_notify_pid set to us, never restarted by the postmaster) and
 *		starts it again when it exits, backing off if it keeps failing.
 *		More databases or more workers per database are more slots here,
 *		not a new design.
 *
 * It connects to no database, only to the shared catalogs, to see whether
 * the worker's database exists (it may have been dropped).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"
#include "worker.h"

#define RESTART_DELAY_MIN_MS 100
#define RESTART_DELAY_MAX_MS 30000
/* A worker that ran this long was healthy: restart it without backoff. */
#define HEALTHY_RUN_MS 10000
#define CHECK_INTERVAL_MS 1000

static BackgroundWorkerHandle *worker_handle = NULL;

void
pgcb_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, PGCB_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pgcb_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, PGCB_LAUNCHER_TYPE, BGW_MAXLEN);
	strlcpy(bgw.bgw_type, PGCB_LAUNCHER_TYPE, BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_detach(int code, Datum arg)
{
	/* our worker must not outlive us: the next launcher starts a new one */
	if (worker_handle != NULL)
		TerminateBackgroundWorker(worker_handle);
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (pgcb_shared->launcher_pid == MyProcPid)
	{
		pgcb_shared->launcher_pid = 0;
		pgcb_shared->launcher_latch = NULL;
	}
	LWLockRelease(pgcb_shared->lock);
}

static bool
start_worker(int slotno)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, PGCB_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pgcb_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s %d", PGCB_WORKER_TYPE, slotno);
	strlcpy(bgw.bgw_type, PGCB_WORKER_TYPE, BGW_MAXLEN);
	bgw.bgw_main_arg = Int32GetDatum(slotno);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &worker_handle))
	{
		worker_handle = NULL;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("pg_callback could not start its delivery worker"),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

/*
 * The oid of the worker's database, or InvalidOid.  A plain heap scan of
 * pg_database: without a database we may read shared catalogs, not their
 * indexes.
 */
static Oid
worker_database_oid(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid			dboid = InvalidOid;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), pgcb_database_name) == 0)
		{
			dboid = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dboid;
}

/* Does the worker's database exist, and is no DROP DATABASE holding it? */
static bool
database_ready(void)
{
	Oid			dboid = worker_database_oid();
	TimestampTz hold_until;
	Oid			hold_dboid;

	LWLockAcquire(pgcb_shared->lock, LW_SHARED);
	hold_dboid = pgcb_shared->hold_dboid;
	hold_until = pgcb_shared->hold_until;
	LWLockRelease(pgcb_shared->lock);

	if (!OidIsValid(dboid))
		return false;
	if (dboid == hold_dboid && GetCurrentTimestamp() < hold_until)
		return false;
	return true;
}

void
pgcb_launcher_main(Datum main_arg)
{
	TimestampTz started_at = 0;
	TimestampTz next_start_at = 0;
	long		delay_ms = RESTART_DELAY_MIN_MS;
	bool		warned_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	pgcb_shared->launcher_pid = MyProcPid;
	pgcb_shared->launcher_latch = MyLatch;
	LWLockRelease(pgcb_shared->lock);
	on_shmem_exit(launcher_detach, (Datum) 0);

	for (;;)
	{
		pid_t		pid;
		BgwHandleStatus status = BGWH_STOPPED;
		long		timeout = CHECK_INTERVAL_MS;
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (worker_handle != NULL)
			status = GetBackgroundWorkerPid(worker_handle, &pid);
		if (worker_handle != NULL && status == BGWH_STOPPED)
		{
			/* it exited: back off if it did not run long */
			pfree(worker_handle);
			worker_handle = NULL;
			if (TimestampDifferenceExceeds(started_at, now, HEALTHY_RUN_MS))
				delay_ms = RESTART_DELAY_MIN_MS;
			else
				delay_ms = Min(delay_ms * 2, RESTART_DELAY_MAX_MS);
			next_start_at = TimestampTzPlusMilliseconds(now, delay_ms);
		}
		if (worker_handle == NULL)
		{
			if (now < next_start_at)
				timeout = Min(timeout, (long) ((next_start_at - now) / 1000) + 1);
			else if (!database_ready())
			{
				if (!warned_missing)
					ereport(LOG,
							(errmsg("pg_callback: database \"%s\" is not available; the delivery worker waits for it",
									pgcb_database_name),
							 errhint("Create it, or set callback.database_name and restart.")));
				warned_missing = true;
			}
			else if (start_worker(0))
			{
				started_at = now;
				warned_missing = false;
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PGCB_WAIT_EVENT);
		ResetLatch(MyLatch);
	}
}
