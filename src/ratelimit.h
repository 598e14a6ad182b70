/*
 * ratelimit.h
 *		Token buckets in shared memory, one per endpoint plus one global,
 *		shared by every worker and backend that delivers.
 */
#ifndef PGCB_RATELIMIT_H
#define PGCB_RATELIMIT_H

#include "storage/lwlock.h"

#define PGCB_MAX_BUCKETS 4096

/* The longest wait pgcb_ratelimit_take() reports: an hour. */
#define PGCB_RATELIMIT_MAX_WAIT_MS (3600L * 1000L)

extern Size pgcb_ratelimit_shmem_size(void);
extern void pgcb_ratelimit_shmem_startup(LWLock *lock);

/*
 * Take up to want tokens from the bucket of (dboid, endpoint_id), refilled
 * lazily at rate per second up to burst, and from the global bucket
 * (callback.max_rate).  rate <= 0 means no limit for the endpoint.
 * Returns how many were granted; when fewer than want, *wait_ms says how
 * long until the next token (at most PGCB_RATELIMIT_MAX_WAIT_MS).  A change of rate or burst applies at once.
 */
extern int	pgcb_ratelimit_take(Oid dboid, int endpoint_id, double rate, int burst,
								int want, long *wait_ms);

/* Give back tokens that were taken but not used. */
extern void pgcb_ratelimit_give_back(Oid dboid, int endpoint_id, int n);

#endif							/* PGCB_RATELIMIT_H */
