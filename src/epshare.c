/*
 * epshare.c
 *		What the workers of one database share about each endpoint, so that
 *		limits stay exact however many workers deliver
 *		(callback.workers_per_database): requests in flight (the per-endpoint
 *		cap and the single half-open probe), the circuit breaker (state,
 *		consecutive failures, and the breaker time in the table as last read
 *		or written by any worker) and a 429's hold.  Token buckets are
 *		shared already (ratelimit.c).
 *
 * Each worker keeps its PgcbEndpoint as a local copy; delivery.c pushes
 * every breaker change here (a generation number counts them) and pulls
 * the shared state before it decides what an endpoint may take.  In-flight
 * counts are kept per worker slot, so that a worker that dies (SIGKILL
 * included: the postmaster then restarts everything) or exits gives its
 * requests back (pgcb_epshare_forget_worker, from its on_shmem_exit).
 * process_callbacks() in a backend keeps to its local state, as before.
 *
 * Locking: one LWLock guards the hash and every entry; it is taken once
 * per endpoint per cycle and once per finished request.
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "epshare.h"
#include "pg_callback.h"

typedef struct EpKey
{
	Oid			dboid;
	int			endpoint_id;
} EpKey;

typedef struct EpShared
{
	EpKey		key;
	Oid			gen;			/* the extension's OID when made: ids restart with it */
	int32		inflight[PGCB_MAX_WORKERS];	/* per worker slot */
	PgcbEpBreaker b;
} EpShared;

static HTAB *entries = NULL;
static LWLock *entries_lock = NULL;
static Oid	my_gen = InvalidOid;	/* this worker's database's extension */
static bool warned_full = false;

static int	total_inflight(EpShared *e);

static int
pg_cmp_int(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}


Size
pgcb_epshare_shmem_size(void)
{
	return hash_estimate_size(PGCB_MAX_SHARED_ENDPOINTS, sizeof(EpShared));
}

void
pgcb_epshare_shmem_startup(LWLock *lock)
{
	HASHCTL		info;

	info.keysize = sizeof(EpKey);
	info.entrysize = sizeof(EpShared);
	entries = ShmemInitHash("pg_callback endpoint state", PGCB_MAX_SHARED_ENDPOINTS, PGCB_MAX_SHARED_ENDPOINTS,
							&info, HASH_ELEM | HASH_BLOBS);
	entries_lock = lock;
}

/* The entry (lock held exclusively), made from *init if new; NULL if full. */
static EpShared *
entry(Oid dboid, int endpoint_id, const PgcbEpBreaker *init)
{
	EpKey		key;
	EpShared   *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.endpoint_id = endpoint_id;
	e = hash_search(entries, &key, init ? HASH_ENTER_NULL : HASH_FIND, &found);
	/* an endpoint of a dropped extension that had the same id is not this one */
	if (e != NULL && found && e->gen != my_gen)
	{
		if (init == NULL)
			return NULL;
		found = false;
	}
	if (e != NULL && !found)
	{
		memset(e->inflight, 0, sizeof(e->inflight));
		e->gen = my_gen;
		e->b = *init;
		e->b.gen = 1;
	}
	if (e == NULL && init != NULL && !warned_full)
	{
		warned_full = true;
		ereport(LOG,
				(errmsg("pg_callback: the shared state of %d endpoints is full; endpoint %d of database %u is limited by each worker alone",
						PGCB_MAX_SHARED_ENDPOINTS, endpoint_id, dboid),
				 errhint("Drop endpoints that are no longer used, or run one worker per database.")));
	}
	return e;
}

void
pgcb_epshare_set_generation(Oid extoid)
{
	my_gen = extoid;
}

/*
 * Forget the state of dboid's endpoints other than ids (sorted here), and
 * of a dropped extension's, unless a request of theirs is still in flight.
 */
void
pgcb_epshare_keep(Oid dboid, int *ids, int n)
{
	HASH_SEQ_STATUS seq;
	EpShared   *e;

	if (entries == NULL)
		return;
	qsort(ids, n, sizeof(int), pg_cmp_int);
	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dboid != dboid || total_inflight(e) > 0)
			continue;
		if (e->gen != my_gen ||
			bsearch(&e->key.endpoint_id, ids, n, sizeof(int), pg_cmp_int) == NULL)
			(void) hash_search(entries, &e->key, HASH_REMOVE, NULL);
	}
	LWLockRelease(entries_lock);
}

static int
total_inflight(EpShared *e)
{
	int			n = 0;

	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		n += e->inflight[i];
	return n;
}

bool
pgcb_epshare_sync(Oid dboid, int endpoint_id, bool adopted, PgcbEpBreaker *local)
{
	EpShared   *e;
	bool		changed = false;

	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, local);
	if (e == NULL)
	{
		/* table full: this worker keeps its own state (fails open) */
		LWLockRelease(entries_lock);
		return false;
	}
	/* a table value no worker had seen (a resume): it wins, as it does locally */
	if (adopted && local->table_at != e->b.table_at)
	{
		e->b.state = local->state;
		e->b.changed_at = local->changed_at;
		e->b.table_at = local->table_at;
		e->b.failures = local->failures;
		e->b.gen++;
	}
	if (e->b.gen != local->gen)
		changed = true;
	local->state = e->b.state;
	local->changed_at = e->b.changed_at;
	local->table_at = e->b.table_at;
	local->failures = e->b.failures;
	local->hold_until = Max(local->hold_until, e->b.hold_until);
	e->b.hold_until = local->hold_until;
	local->gen = e->b.gen;
	LWLockRelease(entries_lock);
	return changed;
}

void
pgcb_epshare_push(Oid dboid, int endpoint_id, PgcbEpBreaker *local)
{
	EpShared   *e;

	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, local);
	if (e != NULL)
	{
		e->b.state = local->state;
		e->b.changed_at = local->changed_at;
		e->b.failures = local->failures;
		e->b.hold_until = Max(e->b.hold_until, local->hold_until);
		e->b.gen++;
		local->gen = e->b.gen;
	}
	LWLockRelease(entries_lock);
}

int
pgcb_epshare_failures(Oid dboid, int endpoint_id, int add, int local_failures)
{
	EpShared   *e;
	int			n;

	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, NULL);
	if (e == NULL)
		n = add ? local_failures + add : 0;
	else
	{
		e->b.failures = add ? e->b.failures + add : 0;
		n = e->b.failures;
	}
	LWLockRelease(entries_lock);
	return n;
}

void
pgcb_epshare_written(Oid dboid, int endpoint_id, TimestampTz table_at)
{
	EpShared   *e;

	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, NULL);
	if (e != NULL)
		e->b.table_at = table_at;
	LWLockRelease(entries_lock);
}

TimestampTz
pgcb_epshare_table_at(Oid dboid, int endpoint_id, TimestampTz local_table_at)
{
	EpShared   *e;
	TimestampTz at = local_table_at;

	LWLockAcquire(entries_lock, LW_SHARED);
	e = entry(dboid, endpoint_id, NULL);
	if (e != NULL)
		at = e->b.table_at;
	LWLockRelease(entries_lock);
	return at;
}

int
pgcb_epshare_reserve(int slotno, Oid dboid, int endpoint_id, int want, int cap, bool only_if_idle)
{
	EpShared   *e;
	int			granted = want;

	if (want <= 0)
		return 0;
	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, NULL);
	if (e != NULL)
	{
		int			total = total_inflight(e);

		if (only_if_idle && total > 0)
			granted = 0;
		else
			granted = Max(0, Min(want, cap - total));
		e->inflight[slotno] += granted;
	}
	LWLockRelease(entries_lock);
	return granted;
}

void
pgcb_epshare_release(int slotno, Oid dboid, int endpoint_id, int n)
{
	EpShared   *e;

	if (n <= 0)
		return;
	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	e = entry(dboid, endpoint_id, NULL);
	if (e != NULL)
		e->inflight[slotno] = Max(0, e->inflight[slotno] - n);
	LWLockRelease(entries_lock);
}

void
pgcb_epshare_forget_worker(int slotno)
{
	HASH_SEQ_STATUS seq;
	EpShared   *e;

	if (entries == NULL)
		return;
	LWLockAcquire(entries_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
		e->inflight[slotno] = 0;
	LWLockRelease(entries_lock);
}
