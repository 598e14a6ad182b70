/*
 * epshare.h
 *		Endpoint state shared by the workers of a database: in-flight
 *		counts, the circuit breaker and a 429's hold (see epshare.c).
 */
#ifndef PGCB_EPSHARE_H
#define PGCB_EPSHARE_H

#include "storage/lwlock.h"
#include "utils/timestamp.h"

/* Endpoints (over all databases) whose state is shared; more fail open. */
#define PGCB_MAX_SHARED_ENDPOINTS 4096

/* A breaker as one worker sees it, and as it is shared. */
typedef struct PgcbEpBreaker
{
	char		state;			/* 'c'losed, 'o'pen, 'h'alf-open */
	TimestampTz changed_at;
	TimestampTz table_at;		/* breaker_changed_at in the table, as last read or written */
	int			failures;		/* consecutive */
	TimestampTz hold_until;
	uint64		gen;			/* changes pushed; the local copy: the one it holds */
} PgcbEpBreaker;

extern Size pgcb_epshare_shmem_size(void);

/* The worker's database's extension OID: state made under another is stale. */
extern void pgcb_epshare_set_generation(Oid extoid);

/* Drop dboid's state for endpoints not among ids (sorted in place) and idle. */
extern void pgcb_epshare_keep(Oid dboid, int *ids, int n);
extern void pgcb_epshare_shmem_startup(LWLock *lock);

/*
 * After a load: if the worker adopted a table value (adopted) that no
 * worker has seen yet (a resume_endpoint), it becomes the shared state;
 * then *local is set from the shared state.  True if another worker
 * changed it since *local->gen.
 */
extern bool pgcb_epshare_sync(Oid dboid, int endpoint_id, bool adopted, PgcbEpBreaker *local);

/* A breaker change decided by this worker (state, changed_at, failures, hold). */
extern void pgcb_epshare_push(Oid dboid, int endpoint_id, PgcbEpBreaker *local);

/* Add to (add > 0) or reset (add = 0) the consecutive failures; the new count. */
extern int	pgcb_epshare_failures(Oid dboid, int endpoint_id, int add, int local_failures);

/* The breaker time this worker wrote into the table, and the one to write against. */
extern void pgcb_epshare_written(Oid dboid, int endpoint_id, TimestampTz table_at);
extern TimestampTz pgcb_epshare_table_at(Oid dboid, int endpoint_id, TimestampTz local_table_at);

/*
 * Take up to want in-flight slots of the endpoint for worker slotno, so
 * that all workers together hold at most cap (only_if_idle: none unless
 * nothing is in flight, for the half-open probe); give them back one by
 * one as requests finish.
 */
extern int	pgcb_epshare_reserve(int slotno, Oid dboid, int endpoint_id, int want, int cap,
								 bool only_if_idle);
extern void pgcb_epshare_release(int slotno, Oid dboid, int endpoint_id, int n);

/* A worker slot is freed: whatever it had in flight is not any more. */
extern void pgcb_epshare_forget_worker(int slotno);

#endif							/* PGCB_EPSHARE_H */
