/*
 * shmem.h
 *		pg_callback's shared memory: who the launcher and workers are, what
 *		they are doing, the counters worker_stats() shows, and the table of
 *		databases the launcher serves (launcher_databases() shows it).
 *
 * Locking: PgcbShared->lock (an LWLock) guards the slot table (pid, dboid,
 * latch), the database table and the DROP DATABASE holds.  Counters are
 * atomics, written by their slot's owner only.  Two lock-free reads, both
 * of single aligned words and both only hints: pgcb_shmem_wake_worker()
 * reads the slots' pid/dboid/latch and the database table's dboid/state at
 * every commit that queued an event.  Never pointers to backend-local
 * memory, file descriptors or curl handles: latches live in PGPROC, which
 * is shared.
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
	PGCB_STATE_TABLE_RULES,		/* a table we write has rules (queue_rules.c) */
	PGCB_STATE_STOPPED
} PgcbWorkerState;

#define PGCB_LAST_ERROR_LEN 256

typedef struct PgcbWorkerSlot
{
	/* guarded by PgcbShared->lock */
	pid_t		pid;			/* 0 when free */
	Oid			dboid;
	int			db_worker;		/* the worker's number within its database */
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

/*
 * A database the launcher knows has (or may have) the extension.  Entries
 * are made by a commit that created the extension or queued an event there
 * (pgcb_shmem_announce_database), and by the launcher's probes; the
 * launcher owns them after that.
 */
typedef enum PgcbDatabaseState
{
	PGCB_DB_FREE = 0,			/* unused entry */
	PGCB_DB_WANTED,				/* announced: the launcher is to serve it */
	PGCB_DB_WAITING,			/* no worker slot free (callback.max_workers) */
	PGCB_DB_STARTING,			/* worker registered, not yet running */
	PGCB_DB_SERVED,				/* its worker runs */
	PGCB_DB_RESTARTING,			/* its worker exited; started again soon */
	PGCB_DB_EXCLUDED,			/* has the extension, but is not to be served */
	PGCB_DB_ABSENT				/* the extension is not there (kept as a
								 * negative cache; not shown) */
} PgcbDatabaseState;

/* Why a database is waiting or excluded (the view's detail). */
typedef enum PgcbDatabaseReason
{
	PGCB_WHY_NONE = 0,
	PGCB_WHY_MAX_WORKERS,		/* callback.max_workers are all busy */
	PGCB_WHY_NO_BGWORKER,		/* max_worker_processes reached */
	PGCB_WHY_FILTER,			/* callback.database_name leaves it out */
	PGCB_WHY_TEMPLATE,			/* a template, or connections not allowed */
	PGCB_WHY_HELD,				/* DROP DATABASE in progress */
	PGCB_WHY_BACKOFF,			/* its worker exited; waiting to restart it */
	PGCB_WHY_FEWER_WORKERS		/* served, by fewer than workers_per_database */
} PgcbDatabaseReason;

typedef struct PgcbDatabase
{
	Oid			dboid;			/* InvalidOid: free */
	PgcbDatabaseState state;
	PgcbDatabaseReason reason;
	TimestampTz since;			/* when it entered this state */
	pid_t		worker_pid;		/* of its worker, once running */
	uint32		created_gen;	/* counts commits of CREATE EXTENSION here */

	/* the launcher's own bookkeeping */
	TimestampTz next_start_at;	/* restart back-off */
	long		restart_delay_ms;
	int			said;			/* reasons already said in the log (bits) */
} PgcbDatabase;

/* A DROP DATABASE in progress: no worker for dboid before until. */
typedef struct PgcbHold
{
	Oid			dboid;
	TimestampTz until;
} PgcbHold;

#define PGCB_MAX_HOLDS 16

typedef struct PgcbShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;

	/*
	 * Set by a backend about to DROP DATABASE a worker is connected to: the
	 * worker leaves, and the launcher does not start it again before the
	 * hold's time, so the drop does not wait on us.
	 */
	PgcbHold	holds[PGCB_MAX_HOLDS];

	/* the probe the launcher runs (one at a time): see discovery.c */
	pid_t		probe_pid;
	Oid			probe_dboid;
	int			probe_result;	/* -1 unknown, 0 absent, 1 installed */

	PgcbDatabase databases[PGCB_MAX_DATABASES];
	PgcbWorkerSlot workers[PGCB_MAX_WORKERS];
} PgcbShared;

extern PgcbShared *pgcb_shared;

extern void pgcb_shmem_init(void);

/*
 * Wake the delivery worker of database dboid; if none serves it and the
 * launcher does not know the database yet, tell the launcher (at most once
 * a second per backend).
 */
extern void pgcb_shmem_wake_worker(Oid dboid);

/* Set the latches of dboid's workers, and nothing else. */
extern void pgcb_shmem_wake_workers_only(Oid dboid);

/*
 * Tell the launcher that dboid has the extension: certain when the caller
 * has just committed CREATE EXTENSION (it overrides an "absent" entry), not
 * when it only saw an event committed there.
 */
extern void pgcb_shmem_announce_database(Oid dboid, bool certain);

/*
 * A worker found the extension gone from its database: the launcher is not
 * to start it again.  Refused (false) if CREATE EXTENSION committed there
 * since the worker read pgcb_shmem_database_gen(): the worker goes on.
 */
extern uint32 pgcb_shmem_database_gen(Oid dboid);
extern bool pgcb_shmem_database_absent(Oid dboid, uint32 gen);

/* The entry for dboid (lock held by the caller), or NULL; make one if asked. */
extern PgcbDatabase *pgcb_shmem_find_database(Oid dboid, bool create);

/* DROP DATABASE holds (see dbguard.c); pgcb_shmem_held() takes the lock. */
extern void pgcb_shmem_hold(Oid dboid, TimestampTz until);
extern bool pgcb_shmem_unhold(Oid dboid, TimestampTz until);
extern bool pgcb_shmem_held(Oid dboid);

/* Claim slot for this process; released by an on_shmem_exit callback. */
extern PgcbWorkerSlot *pgcb_shmem_attach_worker(int slotno, Oid dboid, int db_worker);
extern void pgcb_shmem_set_state(PgcbWorkerSlot *slot, PgcbWorkerState state);
extern void pgcb_shmem_set_error(PgcbWorkerSlot *slot, const char *error);
extern const char *pgcb_state_name(PgcbWorkerState state);
extern const char *pgcb_database_state_name(PgcbDatabaseState state);
extern const char *pgcb_database_reason_text(PgcbDatabaseReason reason);

#endif							/* PGCB_SHMEM_H */
