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

#include "compat.h"
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
	RequestNamedLWLockTranche("pg_callback", 2);
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

void
pgcb_shmem_wake_worker(Oid dboid)
{
	if (pgcb_shared == NULL)
		return;

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
			SetLatch(latch);
	}
}

static void
pgcb_shmem_detach_worker(int code, Datum arg)
{
	PgcbWorkerSlot *slot = (PgcbWorkerSlot *) DatumGetPointer(arg);

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	slot->pid = 0;
	slot->latch = NULL;
	pg_atomic_write_u64(&slot->inflight, 0);
	pg_atomic_write_u32(&slot->state, PGCB_STATE_STOPPED);
	LWLockRelease(pgcb_shared->lock);
}

PgcbWorkerSlot *
pgcb_shmem_attach_worker(int slotno, Oid dboid)
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
			return "waiting for CREATE EXTENSION";
		case PGCB_STATE_SCHEMA_MISMATCH:
			return "waiting for ALTER EXTENSION UPDATE";
		case PGCB_STATE_STOPPED:
			return "stopped";
	}
	return "unknown";
}
