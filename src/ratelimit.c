/*
 * ratelimit.c
 *		Token buckets per endpoint, in a shared hash table, refilled lazily
 *		when tokens are taken.  An event over the limit is simply not claimed
 *		yet: it waits in the queue, never dropped, and other endpoints'
 *		buckets are untouched.
 *
 * Locking: one LWLock guards the hash and every bucket; it is taken once
 * per endpoint per claim, not per request.
 */
#include "postgres.h"

#include <math.h>

#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "ratelimit.h"

typedef struct BucketKey
{
	Oid			dboid;
	int			endpoint_id;	/* 0: the global bucket */
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;
	double		tokens;
	double		rate;
	double		burst;
	TimestampTz refilled_at;
} Bucket;

static HTAB *buckets = NULL;
static LWLock *buckets_lock = NULL;

Size
pgcb_ratelimit_shmem_size(void)
{
	return hash_estimate_size(PGCB_MAX_BUCKETS, sizeof(Bucket));
}

void
pgcb_ratelimit_shmem_startup(LWLock *lock)
{
	HASHCTL		info;

	info.keysize = sizeof(BucketKey);
	info.entrysize = sizeof(Bucket);
	buckets = ShmemInitHash("pg_callback rate limits", PGCB_MAX_BUCKETS, PGCB_MAX_BUCKETS,
							&info, HASH_ELEM | HASH_BLOBS);
	buckets_lock = lock;
}

/* Find or create a bucket (lock held exclusively), refilled up to now. */
static Bucket *
bucket_refill(Oid dboid, int endpoint_id, double rate, double burst, TimestampTz now)
{
	BucketKey	key;
	Bucket	   *b;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.endpoint_id = endpoint_id;
	b = hash_search(buckets, &key, HASH_ENTER_NULL, &found);
	if (b == NULL)
		return NULL;			/* table full: fail open rather than stall */
	if (!found)
	{
		b->tokens = burst;
		b->refilled_at = now;
	}
	else
	{
		double		elapsed = (double) (now - b->refilled_at) / USECS_PER_SEC;

		if (elapsed > 0)
			b->tokens = Min(burst, b->tokens + elapsed * rate);
		b->refilled_at = now;
		b->tokens = Min(b->tokens, burst);
	}
	b->rate = rate;
	b->burst = burst;
	return b;
}

/*
 * Milliseconds until the bucket holds a whole token, at most
 * PGCB_RATELIMIT_MAX_WAIT_MS.  Clamped as a double, before the cast: a tiny
 * rate (a row older than the bounds of create_endpoint) gives a wait no
 * long can hold, and the cast of that is undefined (LONG_MIN in practice,
 * which made the worker retry every millisecond).  Waking early is
 * harmless: the next claim asks again.
 */
static long
ms_until_token(Bucket *b)
{
	double		missing = 1.0 - b->tokens;
	double		ms;

	if (!(missing > 0) || !(b->rate > 0))
		return 0;
	ms = ceil(missing / b->rate * 1000.0);
	if (!(ms < PGCB_RATELIMIT_MAX_WAIT_MS))
		return PGCB_RATELIMIT_MAX_WAIT_MS;
	return (long) ms;
}

int
pgcb_ratelimit_take(Oid dboid, int endpoint_id, double rate, int burst,
					int want, long *wait_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	int			granted = want;
	Bucket	   *ep = NULL;
	Bucket	   *global = NULL;

	*wait_ms = 0;
	if (want <= 0 || (rate <= 0 && pgcb_max_rate <= 0))
		return Max(want, 0);

	LWLockAcquire(buckets_lock, LW_EXCLUSIVE);
	if (rate > 0)
	{
		ep = bucket_refill(dboid, endpoint_id, rate, Max(burst, 1), now);
		if (ep)
			granted = Min(granted, (int) floor(ep->tokens));
	}
	if (pgcb_max_rate > 0)
	{
		global = bucket_refill(InvalidOid, 0, pgcb_max_rate, Max(pgcb_max_rate, 1), now);
		if (global)
			granted = Min(granted, (int) floor(global->tokens));
	}
	granted = Max(granted, 0);
	if (ep)
		ep->tokens -= granted;
	if (global)
		global->tokens -= granted;
	if (granted < want)
	{
		long		w = 0;

		if (ep)
			w = Max(w, ms_until_token(ep));
		if (global)
			w = Max(w, ms_until_token(global));
		*wait_ms = Max(w, 1);
	}
	LWLockRelease(buckets_lock);
	return granted;
}

void
pgcb_ratelimit_give_back(Oid dboid, int endpoint_id, int n)
{
	BucketKey	key;
	Bucket	   *b;

	if (n <= 0 || buckets == NULL)
		return;
	memset(&key, 0, sizeof(key));
	LWLockAcquire(buckets_lock, LW_EXCLUSIVE);
	key.dboid = dboid;
	key.endpoint_id = endpoint_id;
	b = hash_search(buckets, &key, HASH_FIND, NULL);
	if (b)
		b->tokens = Min(b->burst, b->tokens + n);
	if (pgcb_max_rate > 0)
	{
		key.dboid = InvalidOid;
		key.endpoint_id = 0;
		b = hash_search(buckets, &key, HASH_FIND, NULL);
		if (b)
			b->tokens = Min(b->burst, b->tokens + n);
	}
	LWLockRelease(buckets_lock);
}
