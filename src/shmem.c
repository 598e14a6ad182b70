/*
 * shmem.c
 *		Sets up pg_callback's shared memory and the rate-limit table, and
 *		gives the rest of the code small accessors for it.  See shmem.h for
 *		the locking rules.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "epshare.h"
#include "hook_escalation.h"
#include "ratelimit.h"
#include "shmem.h"

PgcbShared *pgcb_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
pgcb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PgcbShared)));
	RequestAddinShmemSpace(pgcb_ratelimit_shmem_size());
	RequestAddinShmemSpace(pgcb_epshare_shmem_size());
	RequestAddinShmemSpace(pgcb_hookesc_shmem_size());
	RequestNamedLWLockTranche("pg_callback", 3);
}

static void
pgcb_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pgcb_shared = ShmemInitStruct("pg_callback", sizeof(PgcbShared), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("pg_callback");

		memset(pgcb_shared, 0, sizeof(PgcbShared));
		pgcb_shared->lock = &locks[0].lock;
		for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		{
			PgcbWorkerSlot *slot = &pgcb_shared->workers[i];

			pg_atomic_init_u32(&slot->state, PGCB_STATE_STOPPED);
			pg_atomic_init_u64(&slot->inflight, 0);
			pg_atomic_init_u64(&slot->sent, 0);
			pg_atomic_init_u64(&slot->delivered, 0);
			pg_atomic_init_u64(&slot->failed, 0);
			pg_atomic_init_u64(&slot->dead, 0);
			pg_atomic_init_u64(&slot->bytes_sent, 0);
			pg_atomic_init_u64(&slot->batches, 0);
			SpinLockInit(&slot->error_mutex);
		}
	}
	pgcb_ratelimit_shmem_startup(&GetNamedLWLockTranche("pg_callback")[1].lock);
	pgcb_epshare_shmem_startup(&GetNamedLWLockTranche("pg_callback")[2].lock);
	pgcb_hookesc_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

void
pgcb_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pgcb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pgcb_shmem_startup;
}

/* Set the latches of dboid's workers; whether one was found. */
static bool
wake_workers(Oid dboid)
{
	bool		found = false;

	/*
	 * No lock: a stale latch pointer is still a valid PGPROC latch, and a
	 * missed wake-up is covered by the worker's poll interval.  Taking the
	 * LWLock at every commit would serialize busy databases.
	 */
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
	{
		PgcbWorkerSlot *slot = &pgcb_shared->workers[i];
		Latch	   *latch = slot->latch;

		if (slot->pid != 0 && slot->dboid == dboid && latch != NULL)
		{
			SetLatch(latch);
			found = true;
		}
	}
	return found;
}

void
pgcb_shmem_wake_workers_only(Oid dboid)
{
	if (pgcb_shared != NULL)
		(void) wake_workers(dboid);
}

void
pgcb_shmem_wake_worker(Oid dboid)
{
	static TimestampTz last_announced_at = 0;
	TimestampTz now;

	if (pgcb_shared == NULL || wake_workers(dboid))
		return;

	/*
	 * No worker: if the launcher has an entry for the database (any state,
	 * read without the lock) it knows, and serves it, or says in
	 * callback_databases why not.  Otherwise the extension came in a way
	 * that discovery.c did not see (CREATE DATABASE from a template that
	 * had it, a restore by pg_upgrade): tell the launcher, at most once a
	 * second per backend, so that a full table costs no lock per commit.
	 */
	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
		if (pgcb_shared->databases[i].dboid == dboid &&
			pgcb_shared->databases[i].state != PGCB_DB_FREE)
			return;
	now = GetCurrentTimestamp();
	if (!TimestampDifferenceExceeds(last_announced_at, now, 1000))
		return;
	last_announced_at = now;
	pgcb_shmem_announce_database(dboid, false);
}

PgcbDatabase *
pgcb_shmem_find_database(Oid dboid, bool create)
{
	PgcbDatabase *free_entry = NULL;
	PgcbDatabase *oldest_absent = NULL;

	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
	{
		PgcbDatabase *db = &pgcb_shared->databases[i];

		if (db->state != PGCB_DB_FREE && db->dboid == dboid)
			return db;
		if (db->state == PGCB_DB_FREE && free_entry == NULL)
			free_entry = db;
		if (db->state == PGCB_DB_ABSENT &&
			(oldest_absent == NULL || db->since < oldest_absent->since))
			oldest_absent = db;
	}
	if (!create)
		return NULL;
	/* full: forget the oldest "not installed" (a probe finds it again) */
	if (free_entry == NULL)
		free_entry = oldest_absent;
	if (free_entry != NULL)
	{
		memset(free_entry, 0, sizeof(PgcbDatabase));
		free_entry->dboid = dboid;
		free_entry->state = PGCB_DB_ABSENT;
		free_entry->since = GetCurrentTimestamp();
	}
	return free_entry;
}

void
pgcb_shmem_announce_database(Oid dboid, bool certain)
{
	PgcbDatabase *db;
	Latch	   *launcher_latch = NULL;

	if (pgcb_shared == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	db = pgcb_shmem_find_database(dboid, false);
	if (db == NULL)
	{
		db = pgcb_shmem_find_database(dboid, true);
		certain = true;			/* a new entry: worth a look */
	}
	if (db != NULL && certain)
		db->created_gen++;
	if (db != NULL && db->state == PGCB_DB_ABSENT && certain)
	{
		db->state = PGCB_DB_WANTED;
		db->reason = PGCB_WHY_NONE;
		db->since = GetCurrentTimestamp();
		launcher_latch = pgcb_shared->launcher_latch;
	}
	LWLockRelease(pgcb_shared->lock);
	if (launcher_latch != NULL)
		SetLatch(launcher_latch);
}

uint32
pgcb_shmem_database_gen(Oid dboid)
{
	PgcbDatabase *db;
	uint32		gen = 0;

	LWLockAcquire(pgcb_shared->lock, LW_SHARED);
	db = pgcb_shmem_find_database(dboid, false);
	if (db != NULL)
		gen = db->created_gen;
	LWLockRelease(pgcb_shared->lock);
	return gen;
}

bool
pgcb_shmem_database_absent(Oid dboid, uint32 gen)
{
	PgcbDatabase *db;
	bool		recorded = true;

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	db = pgcb_shmem_find_database(dboid, false);
	if (db != NULL && db->created_gen != gen)
		recorded = false;		/* created again meanwhile */
	else if (db != NULL)
	{
		db->state = PGCB_DB_ABSENT;
		db->reason = PGCB_WHY_NONE;
		db->since = GetCurrentTimestamp();
	}
	LWLockRelease(pgcb_shared->lock);
	return recorded;
}

/* Caller holds pgcb_shared->lock exclusively. */
void
pgcb_shmem_hold(Oid dboid, TimestampTz until)
{
	PgcbHold   *use = &pgcb_shared->holds[0];

	/* the same database's hold, else a lapsed one, else the soonest to lapse */
	for (int i = 0; i < PGCB_MAX_HOLDS; i++)
	{
		PgcbHold   *h = &pgcb_shared->holds[i];

		if (h->dboid == dboid)
		{
			use = h;
			break;
		}
		if (h->until < use->until)
			use = h;
	}
	use->dboid = dboid;
	use->until = until;
}

/* Caller holds pgcb_shared->lock exclusively.  Whether that hold was there. */
bool
pgcb_shmem_unhold(Oid dboid, TimestampTz until)
{
	for (int i = 0; i < PGCB_MAX_HOLDS; i++)
	{
		PgcbHold   *h = &pgcb_shared->holds[i];

		if (h->dboid == dboid && h->until == until)
		{
			h->dboid = InvalidOid;
			h->until = 0;
			return true;
		}
	}
	return false;
}

/* Caller holds pgcb_shared->lock. */
bool
pgcb_shmem_held(Oid dboid)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < PGCB_MAX_HOLDS; i++)
		if (pgcb_shared->holds[i].dboid == dboid && pgcb_shared->holds[i].until > now)
			return true;
	return false;
}

static void
pgcb_shmem_detach_worker(int code, Datum arg)
{
	PgcbWorkerSlot *slot = (PgcbWorkerSlot *) DatumGetPointer(arg);

	/* its requests in flight are no one's now (epshare.c) */
	pgcb_epshare_forget_worker((int) (slot - pgcb_shared->workers));
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	slot->pid = 0;
	slot->latch = NULL;
	pg_atomic_write_u64(&slot->inflight, 0);
	pg_atomic_write_u32(&slot->state, PGCB_STATE_STOPPED);
	LWLockRelease(pgcb_shared->lock);
}

PgcbWorkerSlot *
pgcb_shmem_attach_worker(int slotno, Oid dboid, int db_worker)
{
	PgcbWorkerSlot *slot = &pgcb_shared->workers[slotno];

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (slot->pid != 0 && slot->pid != MyProcPid)
	{
		pid_t		other = slot->pid;

		LWLockRelease(pgcb_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("pg_callback worker slot %d is already taken by process %d",
						slotno, (int) other)));
	}
	slot->pid = MyProcPid;
	slot->dboid = dboid;
	slot->db_worker = db_worker;
	slot->latch = MyLatch;
	slot->started_at = GetCurrentTimestamp();
	slot->last_activity_at = slot->started_at;
	pg_atomic_write_u32(&slot->state, PGCB_STATE_STARTING);
	pg_atomic_write_u64(&slot->inflight, 0);
	LWLockRelease(pgcb_shared->lock);

	on_shmem_exit(pgcb_shmem_detach_worker, PointerGetDatum(slot));
	return slot;
}

void
pgcb_shmem_set_state(PgcbWorkerSlot *slot, PgcbWorkerState state)
{
	pg_atomic_write_u32(&slot->state, state);
}

void
pgcb_shmem_set_error(PgcbWorkerSlot *slot, const char *error)
{
	SpinLockAcquire(&slot->error_mutex);
	strlcpy(slot->last_error, error, sizeof(slot->last_error));
	slot->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&slot->error_mutex);
}

const char *
pgcb_state_name(PgcbWorkerState state)
{
	switch (state)
	{
		case PGCB_STATE_STARTING:
			return "starting";
		case PGCB_STATE_IDLE:
			return "idle";
		case PGCB_STATE_DELIVERING:
			return "delivering";
		case PGCB_STATE_NO_EXTENSION:
			return "stopping: extension dropped";
		case PGCB_STATE_SCHEMA_MISMATCH:
			return "waiting for ALTER EXTENSION UPDATE";
		case PGCB_STATE_TABLE_RULES:
			return "waiting: rules on its tables";
		case PGCB_STATE_STOPPED:
			return "stopped";
	}
	return "unknown";
}

const char *
pgcb_database_state_name(PgcbDatabaseState state)
{
	switch (state)
	{
		case PGCB_DB_WANTED:
		case PGCB_DB_STARTING:
			return "starting";
		case PGCB_DB_WAITING:
			return "waiting";
		case PGCB_DB_SERVED:
			return "served";
		case PGCB_DB_RESTARTING:
			return "restarting";
		case PGCB_DB_EXCLUDED:
			return "excluded";
		case PGCB_DB_FREE:
		case PGCB_DB_ABSENT:
			break;
	}
	return "unknown";
}

const char *
pgcb_database_reason_text(PgcbDatabaseReason reason)
{
	switch (reason)
	{
		case PGCB_WHY_NONE:
			return NULL;
		case PGCB_WHY_MAX_WORKERS:
			return "every worker slot of callback.max_workers is taken";
		case PGCB_WHY_NO_BGWORKER:
			return "no background worker slot free (max_worker_processes)";
		case PGCB_WHY_FILTER:
			return "not named in callback.database_name";
		case PGCB_WHY_TEMPLATE:
			return "a template database, or one that allows no connections";
		case PGCB_WHY_HELD:
			return "DROP DATABASE in progress";
		case PGCB_WHY_BACKOFF:
			return "its worker exited; starting it again after a back-off";
		case PGCB_WHY_FEWER_WORKERS:
			return "served by fewer than callback.workers_per_database workers: the other slots of callback.max_workers are taken, or a worker restarts";
	}
	return NULL;
}
