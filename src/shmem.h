/*
 * shmem.h
 *		pg_callback's shared memory: who the launcher and workers are, what
 *		they are doing, and the counters worker_stats() shows.
 *
 * Locking: PgcbShared->lock (an LWLock) guards the slot table (pid, dboid,
 * latch, hold).  Counters are atomics, written by their slot's owner only.
 * Never pointers to backend-local memory, file descriptors or curl handles:
 * latches live in PGPROC, which is shared.
 */
#ifndef PGCB_SHMEM_H
#define PGCB_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "pg_callback.h"

typedef enum PgcbWorkerState
{
	PGCB_STATE_STARTING = 0,
	PGCB_STATE_IDLE,			/* nothing due; waiting to be woken */
	PGCB_STATE_DELIVERING,		/* requests in flight */
	PGCB_STATE_NO_EXTENSION,	/* connected, but pg_callback is not installed */
	PGCB_STATE_SCHEMA_MISMATCH, /* installed at a version we cannot use */
	PGCB_STATE_STOPPED
} PgcbWorkerState;

#define PGCB_LAST_ERROR_LEN 256

typedef struct PgcbWorkerSlot
{
	/* guarded by PgcbShared->lock */
	pid_t		pid;			/* 0 when free */
	Oid			dboid;
	Latch	   *latch;

	/* written by the owner only */
	pg_atomic_uint32 state;
	pg_atomic_uint64 inflight;
	pg_atomic_uint64 sent;		/* attempts finished */
	pg_atomic_uint64 delivered;
	pg_atomic_uint64 failed;	/* attempts that did not succeed */
	pg_atomic_uint64 dead;
	pg_atomic_uint64 bytes_sent;
	pg_atomic_uint64 batches;
	TimestampTz started_at;
	TimestampTz last_activity_at;
	slock_t		error_mutex;	/* guards last_error and last_error_at */
	char		last_error[PGCB_LAST_ERROR_LEN];
	TimestampTz last_error_at;
} PgcbWorkerSlot;

typedef struct PgcbShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;

	/*
	 * Set by a backend about to DROP DATABASE the worker is connected to:
	 * the worker leaves, and the launcher does not start it again before
	 * this time, so the drop does not wait on us.
	 */
	Oid			hold_dboid;
	TimestampTz hold_until;

	PgcbWorkerSlot workers[PGCB_MAX_WORKERS];
} PgcbShared;

extern PgcbShared *pgcb_shared;

extern void pgcb_shmem_init(void);

/* Wake the delivery worker of database dboid, if one runs. */
extern void pgcb_shmem_wake_worker(Oid dboid);

/* Claim slot for this process; released by an on_shmem_exit callback. */
extern PgcbWorkerSlot *pgcb_shmem_attach_worker(int slotno, Oid dboid);
extern void pgcb_shmem_set_state(PgcbWorkerSlot *slot, PgcbWorkerState state);
extern void pgcb_shmem_set_error(PgcbWorkerSlot *slot, const char *error);
extern const char *pgcb_state_name(PgcbWorkerState state);

#endif							/* PGCB_SHMEM_H */
