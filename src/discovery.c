/*
 * discovery.c
 *		Finds the databases where pg_callback is installed, for the launcher,
 *		which connects to no database and so can read pg_database but no
 *		database's pg_extension.  Three ways, fastest first:
 *
 *		1. A commit that created the extension tells the launcher at once
 *		   (the object access hook sees the extension's script create its
 *		   objects; the transaction callback announces at commit).  A commit
 *		   that dropped it wakes that database's worker, which then sees the
 *		   extension gone and stops.
 *		2. A commit that queued an event in a database no worker serves
 *		   tells the launcher too (shmem.c, pgcb_shmem_wake_worker): this
 *		   catches a database made from a template that had the extension.
 *		3. The launcher probes: a short-lived background worker connects to
 *		   one database, looks in pg_extension, writes the answer to shared
 *		   memory and exits.  Every connectable database at launcher start
 *		   (the extension was there before the server started), each new one
 *		   as it appears, and each again every PGCB_PROBE_INTERVAL_MS.
 *
 * A probe costs a process start and a connection, a few milliseconds; one
 * runs at a time.  Templates and databases that allow no connections are
 * never probed nor served: a session in a template would make CREATE
 * DATABASE from it fail.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"

#include "discovery.h"
#include "launcher.h"
#include "pg_callback.h"
#include "shmem.h"

static object_access_hook_type prev_object_access_hook = NULL;

/* this transaction created / dropped pg_callback here */
static bool created_in_xact = false;
static bool dropped_in_xact = false;
/* the extension whose script we last looked at, and whether it is ours */
static Oid	seen_extension = InvalidOid;
static bool seen_is_ours = false;
static bool xact_callback_registered = false;

static void
discovery_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (created_in_xact)
				pgcb_shmem_announce_database(MyDatabaseId, true);
			else if (dropped_in_xact)
				pgcb_shmem_wake_workers_only(MyDatabaseId);
			break;
		default:
			break;
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		/* a prepared CREATE EXTENSION is found by the next probe */
		created_in_xact = dropped_in_xact = false;
		seen_extension = InvalidOid;
	}
}

static void
note_in_xact(bool created)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(discovery_xact_callback, NULL);
		xact_callback_registered = true;
	}
	if (created)
		created_in_xact = true;
	else
		dropped_in_xact = true;
}

/*
 * CREATE EXTENSION: while the extension's script runs, creating_extension
 * is set and CurrentExtensionObject names the extension, whose row is
 * visible by then (the hook on the extension row itself runs before it
 * is).  So the first object pg_callback's script creates marks the
 * transaction; the name is looked up once per extension per transaction.
 * This sees CREATE EXTENSION pg_callback, a CASCADE that pulls it in, and a
 * restore's CREATE EXTENSION alike; ALTER EXTENSION UPDATE too, harmlessly.
 */
static void
discovery_object_access(ObjectAccessType access, Oid classId, Oid objectId,
						int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_POST_CREATE && creating_extension &&
		OidIsValid(CurrentExtensionObject) && !created_in_xact)
	{
		if (CurrentExtensionObject != seen_extension)
		{
			char	   *name = get_extension_name(CurrentExtensionObject);

			seen_extension = CurrentExtensionObject;
			seen_is_ours = name != NULL && strcmp(name, PGCB_EXTENSION_NAME) == 0;
		}
		if (seen_is_ours)
			note_in_xact(true);
	}
	else if (access == OAT_DROP && classId == ExtensionRelationId && !dropped_in_xact)
	{
		char	   *name = get_extension_name(objectId);

		if (name != NULL && strcmp(name, PGCB_EXTENSION_NAME) == 0)
			note_in_xact(false);
	}
}

void
pgcb_discovery_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = discovery_object_access;
}

/*
 * The databases in pg_database, as (oid, name, servable).  A plain heap
 * scan: without a database we may read shared catalogs, not their indexes.
 * Runs in the launcher, in a transaction of its own.
 */
PgcbDatabaseInfo *
pgcb_discovery_list_databases(int *n)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			cap = 16;
	PgcbDatabaseInfo *list;

	*n = 0;
	list = palloc(cap * sizeof(PgcbDatabaseInfo));
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		/*
		 * datconnlimit -2: being dropped, or a drop that failed half-way
		 * (PostgreSQL 15.4+); nobody can connect to it again: as good as gone
		 */
		if (db->datconnlimit == -2)
			continue;
		if (*n == cap)
		{
			cap *= 2;
			list = repalloc(list, cap * sizeof(PgcbDatabaseInfo));
		}
		list[*n].oid = db->oid;
		strlcpy(list[*n].name, NameStr(db->datname), NAMEDATALEN);
		list[*n].servable = db->datallowconn && !db->datistemplate;
		(*n)++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return list;
}

/* Start a probe of dboid; its handle, or NULL if no worker slot was free. */
BackgroundWorkerHandle *
pgcb_discovery_start_probe(Oid dboid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	char		name[BGW_MAXLEN];

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	pgcb_shared->probe_dboid = dboid;
	pgcb_shared->probe_result = -1;
	LWLockRelease(pgcb_shared->lock);

	snprintf(name, sizeof(name), "%s %u", PGCB_PROBE_TYPE, dboid);
	pgcb_launcher_fill_worker(&bgw, "pgcb_probe_main", PGCB_PROBE_TYPE, name);
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
		return NULL;
	return handle;
}

/* The answer of the probe that has stopped: -1 unknown, 0 absent, 1 there. */
int
pgcb_discovery_probe_result(void)
{
	int			result;

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	result = pgcb_shared->probe_result;
	pgcb_shared->probe_dboid = InvalidOid;
	pgcb_shared->probe_pid = 0;
	LWLockRelease(pgcb_shared->lock);
	return result;
}

static void
probe_detach(int code, Datum arg)
{
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (pgcb_shared->probe_pid == MyProcPid)
		pgcb_shared->probe_pid = 0;
	LWLockRelease(pgcb_shared->lock);
}

/*
 * The probe: connect to one database, look for the extension, say so,
 * exit.  A database dropped meanwhile makes the connection fail (FATAL):
 * the answer stays unknown and the launcher's next scan forgets it.
 */
void
pgcb_probe_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	bool		installed;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* before connecting, so that a DROP DATABASE meanwhile can evict us */
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (pgcb_shared->probe_dboid == dboid)
		pgcb_shared->probe_pid = MyProcPid;
	LWLockRelease(pgcb_shared->lock);
	on_shmem_exit(probe_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname(PGCB_PROBE_TYPE);

	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid(PGCB_EXTENSION_NAME, true));
	CommitTransactionCommand();

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (pgcb_shared->probe_dboid == dboid)
		pgcb_shared->probe_result = installed ? 1 : 0;
	LWLockRelease(pgcb_shared->lock);
	proc_exit(0);
}
