/*
 * batch_claim.c
 *		The claim of batch endpoints (issue 12.3) in C, with no SPI.  The
 *		statement it replaces (batch.c's claim_sql) cost 101.7k instructions
 *		per delivery at batch_size 100 (callgrind, bench part 9), this 55.3k,
 *		most of it the rows' new versions and index entries, as in the
 *		one-event claim.  It keeps what that statement did:
 *	d: per endpoint, up to n * size due rows from callback_queue_due in
 *	   index order, each locked FOR UPDATE SKIP LOCKED and rechecked as
 *	   queue_claim.c does (whose pieces it uses; see its header comment);
 *	   the values grouped are the locked version's;
 *	grouping (group_endpoint, no I/O): a row sent before keeps its batch;
 *	   new rows are cut into chunks of size among rows of equal attempts,
 *	   in (next_attempt_at, id) order; the first n batches per endpoint,
 *	   ranked by (min next_attempt_at, min id), are kept, a new one with a
 *	   random (version 4) id;
 *	x: the rest of a kept batch sent before that the limit cut off (or
 *	   that is not due), from callback_queue_batch (a sequential scan
 *	   when that index is missing or invalid), each batch id scanned
 *	   once, locked the same way and rechecked: pending, and its
 *	   (endpoint_id, batch_id) one of a kept batch.  A batch id is only
 *	   unique per endpoint: an operator may move part of a batch to
 *	   another endpoint, whose rows are its own batch then;
 *	then each kept row written in id order, as the statement's UPDATE
 *	did: status 'sending', claimed_by, batch_id, lease, through
 *	queue_rows.c (constraints, indexes, triggers).  Rows locked but not
 *	kept stay pending; their lock ends with the transaction.
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/stratnum.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch_claim.h"
#include "queue_claim.h"

/* A row locked by the due scan (d). */
typedef struct DueRow
{
	int64		id;
	TimestampTz at;				/* next_attempt_at */
	int32		attempts;
	bool		has_batch;		/* sent before: batch_id is its batch */
	pg_uuid_t	batch_id;		/* kept: the batch it goes in */
	ItemPointerData tid;		/* the version locked */
	int			chunk;			/* new rows: which chunk of its attempts */
	int			group;
	bool		kept;
} DueRow;

/* One batch formed from an endpoint's due rows. */
typedef struct DueGroup
{
	TimestampTz min_at;
	int64		min_id;
	int			first;			/* one of its rows */
	bool		kept;
	pg_uuid_t	new_id;
} DueGroup;

/* A kept batch sent before: the ids x completes it by. */
typedef struct OldBatch
{
	pg_uuid_t	batch_id;
	int			endpoint_id;
} OldBatch;

/* A row to write: its id, locked version and batch. */
typedef struct KeptRow
{
	int64		id;
	ItemPointerData tid;
	pg_uuid_t	batch_id;
} KeptRow;

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b) ? 1 : 0)

/* New rows of one attempt count in (next_attempt_at, id) order. */
static int
cmp_new(const void *a, const void *b, void *arg)
{
	const DueRow *rows = (const DueRow *) arg;
	const DueRow *x = &rows[*(const int *) a];
	const DueRow *y = &rows[*(const int *) b];

	if (x->attempts != y->attempts)
		return CMP(x->attempts, y->attempts);
	if (x->at != y->at)
		return CMP(x->at, y->at);
	return CMP(x->id, y->id);
}

/* The grouping key: (batch sent before) or (attempts, chunk) of new rows. */
static int
cmp_key(const void *a, const void *b, void *arg)
{
	const DueRow *rows = (const DueRow *) arg;
	const DueRow *x = &rows[*(const int *) a];
	const DueRow *y = &rows[*(const int *) b];

	if (x->has_batch != y->has_batch)
		return CMP(x->has_batch, y->has_batch);
	if (x->has_batch)
		return memcmp(x->batch_id.data, y->batch_id.data, UUID_LEN);
	if (x->attempts != y->attempts)
		return CMP(x->attempts, y->attempts);
	return CMP(x->chunk, y->chunk);
}

static int
cmp_rank(const void *a, const void *b, void *arg)
{
	const DueGroup *groups = (const DueGroup *) arg;
	const DueGroup *x = &groups[*(const int *) a];
	const DueGroup *y = &groups[*(const int *) b];

	if (x->min_at != y->min_at)
		return CMP(x->min_at, y->min_at);
	return CMP(x->min_id, y->min_id);
}

static int
cmp_kept(const void *a, const void *b)
{
	return CMP(((const KeptRow *) a)->id, ((const KeptRow *) b)->id);
}

static int
cmp_old(const void *a, const void *b)
{
	const OldBatch *x = (const OldBatch *) a;
	const OldBatch *y = (const OldBatch *) b;
	int			c = memcmp(x->batch_id.data, y->batch_id.data, UUID_LEN);

	if (c != 0)
		return c;
	return CMP(x->endpoint_id, y->endpoint_id);
}

static int
cmp_id(const void *a, const void *b)
{
	return CMP(*(const int64 *) a, *(const int64 *) b);
}

/* gen_random_uuid(): version 4, variant RFC 4122 */
static void
random_uuid(pg_uuid_t *u)
{
	if (!pg_strong_random(u->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	u->data[6] = (u->data[6] & 0x0f) | 0x40;
	u->data[8] = (u->data[8] & 0x3f) | 0x80;
}

/*
 * One endpoint's due rows into batches of at most size, the first n kept
 * (rows[].kept, and batch_id for new ones); the batches sent before that
 * are kept go to *old (room enough given).  No I/O.
 */
static void
group_endpoint(int endpoint_id, DueRow *rows, int nrows, int n, int size, OldBatch *old,
			   int *n_old)
{
	int		   *order = palloc(sizeof(int) * Max(nrows, 1));
	int		   *rank = palloc(sizeof(int) * Max(nrows, 1));
	DueGroup   *groups = palloc(sizeof(DueGroup) * Max(nrows, 1));
	int			nn = 0;
	int			ng = 0;

	/* new rows: chunks of size among rows of equal attempts */
	for (int i = 0; i < nrows; i++)
		if (!rows[i].has_batch)
			order[nn++] = i;
	qsort_arg(order, nn, sizeof(int), cmp_new, rows);
	for (int k = 0, pos = 0; k < nn; k++, pos++)
	{
		if (k > 0 && rows[order[k]].attempts != rows[order[k - 1]].attempts)
			pos = 0;
		rows[order[k]].chunk = pos / size;
	}

	/* the batches, each with its oldest next_attempt_at and lowest id */
	for (int i = 0; i < nrows; i++)
		order[i] = i;
	qsort_arg(order, nrows, sizeof(int), cmp_key, rows);
	for (int k = 0; k < nrows; k++)
	{
		DueRow	   *r = &rows[order[k]];

		if (k == 0 || cmp_key(&order[k - 1], &order[k], rows) != 0)
		{
			groups[ng].min_at = r->at;
			groups[ng].min_id = r->id;
			groups[ng].first = order[k];
			groups[ng].kept = false;
			ng++;
		}
		else
		{
			groups[ng - 1].min_at = Min(groups[ng - 1].min_at, r->at);
			groups[ng - 1].min_id = Min(groups[ng - 1].min_id, r->id);
		}
		r->group = ng - 1;
	}

	/* the first n of them */
	for (int g = 0; g < ng; g++)
		rank[g] = g;
	qsort_arg(rank, ng, sizeof(int), cmp_rank, groups);
	for (int k = 0; k < ng && k < n; k++)
	{
		DueGroup   *g = &groups[rank[k]];

		g->kept = true;
		/* a batch sent before keeps its id: only a new one needs one */
		if (!rows[g->first].has_batch)
			random_uuid(&g->new_id);
	}
	for (int i = 0; i < nrows; i++)
	{
		DueGroup   *g = &groups[rows[i].group];

		rows[i].kept = g->kept;
		if (g->kept && !rows[i].has_batch)
			rows[i].batch_id = g->new_id;
	}
	for (int k = 0; k < ng && k < n; k++)
	{
		DueRow	   *first = &rows[groups[rank[k]].first];

		if (first->has_batch)
		{
			old[*n_old].batch_id = first->batch_id;
			old[*n_old].endpoint_id = endpoint_id;
			(*n_old)++;
		}
	}
	pfree(order);
	pfree(rank);
	pfree(groups);
}

/* d: lock up to limit due rows of one endpoint, oldest due first. */
static int
lock_due(PgcbClaimRun *run, int endpoint_id, int64 limit, DueRow **rows, int *room)
{
	const PgcbClaimShape *shape = run->shape;
	int			got = 0;

	pgcb_claim_scan_due(run, endpoint_id);
	while (got < limit && index_getnext_slot(run->scan, ForwardScanDirection, run->scanslot))
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(run->row_cxt);
		if (pgcb_claim_seen_pending(run) &&
			pgcb_claim_lock(run, &run->scanslot->tts_tid) && pgcb_claim_still_due(run, endpoint_id))
		{
			TupleTableSlot *s = run->lockslot;
			DueRow	   *r;
			bool		isnull;
			Datum		d;

			if (got == *room)
			{
				*room *= 2;
				*rows = repalloc(*rows, sizeof(DueRow) * *room);
			}
			r = &(*rows)[got++];

			/* the locked version's values, as the statement's EvalPlanQual gave them */
			r->id = DatumGetInt64(slot_getattr(s, shape->att_id, &isnull));
			r->at = DatumGetTimestampTz(slot_getattr(s, shape->att_next_attempt_at, &isnull));
			r->attempts = DatumGetInt32(slot_getattr(s, shape->att_attempts, &isnull));
			d = slot_getattr(s, shape->att_batch_id, &isnull);
			r->has_batch = !isnull;
			if (isnull)
				memset(&r->batch_id, 0, sizeof(pg_uuid_t));
			else
				r->batch_id = *DatumGetUUIDP(d);
			r->tid = s->tts_tid;
			r->kept = false;
		}
		MemoryContextSwitchTo(old);
		pgcb_claim_next_row(run);
	}
	return got;
}

/* What x needs: the kept old batches (sorted, unique) and d's rows to skip. */
typedef struct RestRun
{
	PgcbClaimRun *run;
	const OldBatch *batches;
	int			n_batches;
	const int64 *locked_ids;
	int			n_locked;
	KeptRow   **kept;
	int		   *n_kept;
	int		   *room;
} RestRun;

static bool
is_batch_id(const RestRun *rr, const pg_uuid_t *id)
{
	OldBatch	key = {.batch_id = *id, .endpoint_id = PG_INT32_MIN};
	int			lo = 0;
	int			hi = rr->n_batches;

	/* the first pair not below (id, any endpoint) */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (cmp_old(&rr->batches[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < rr->n_batches && memcmp(rr->batches[lo].batch_id.data, id->data, UUID_LEN) == 0;
}

/* The row the scan saw (run->scanslot): locked, rechecked and kept. */
static void
take_rest_row(RestRun *rr)
{
	PgcbClaimRun *run = rr->run;
	const PgcbClaimShape *shape = run->shape;
	MemoryContext old;
	bool		isnull;
	int64		id;

	id = DatumGetInt64(slot_getattr(run->scanslot, shape->att_id, &isnull));
	if (bsearch(&id, rr->locked_ids, rr->n_locked, sizeof(int64), cmp_id) != NULL ||
		!pgcb_claim_seen_pending(run))
		return;
	old = MemoryContextSwitchTo(run->row_cxt);
	if (pgcb_claim_lock(run, &run->scanslot->tts_tid))
	{
		TupleTableSlot *s = run->lockslot;
		Datum		status = slot_getattr(s, shape->att_status, &isnull);
		Datum		d;
		OldBatch	key;

		if (!isnull && DatumGetObjectId(status) == DatumGetObjectId(shape->status_pending))
		{
			d = slot_getattr(s, shape->att_batch_id, &isnull);
			if (!isnull)
			{
				/* of a kept batch of its own endpoint: another's is not this batch */
				key.batch_id = *DatumGetUUIDP(d);
				key.endpoint_id = DatumGetInt32(slot_getattr(s, shape->att_endpoint_id, &isnull));
				if (bsearch(&key, rr->batches, rr->n_batches, sizeof(OldBatch), cmp_old) != NULL)
				{
					KeptRow    *k;

					if (*rr->n_kept == *rr->room)
					{
						*rr->room *= 2;
						*rr->kept = repalloc(*rr->kept, sizeof(KeptRow) * *rr->room);
					}
					k = &(*rr->kept)[(*rr->n_kept)++];
					k->id = DatumGetInt64(slot_getattr(s, shape->att_id, &isnull));
					k->tid = s->tts_tid;
					k->batch_id = key.batch_id;
				}
			}
		}
	}
	MemoryContextSwitchTo(old);
	pgcb_claim_next_row(run);
}

/* Without the batch index: the whole queue, as the SQL claim did without it. */
static void
scan_rest_seq(RestRun *rr)
{
	static TimestampTz last_warned = 0;
	PgcbClaimRun *run = rr->run;
	TableScanDesc scan;

	if (last_warned == 0 || TimestampDifferenceExceeds(last_warned, run->now, 60 * 1000))
	{
		last_warned = run->now;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.callback_queue has no valid index callback_queue_batch: "
						"batches sent before are completed by a sequential scan of the queue"),
				 errhint("Create it again: DROP INDEX IF EXISTS callback.callback_queue_batch; "
						 "CREATE INDEX callback_queue_batch ON callback.callback_queue (batch_id) "
						 "WHERE batch_id IS NOT NULL AND finished_at IS NULL;")));
	}
	scan = table_beginscan(run->rel, run->snapshot, 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, run->scanslot))
	{
		bool		isnull;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		d = slot_getattr(run->scanslot, run->shape->att_batch_id, &isnull);
		if (!isnull && is_batch_id(rr, DatumGetUUIDP(d)))
			take_rest_row(rr);
	}
	table_endscan(scan);
}

/*
 * x: the pending rows of the kept batches sent before (batches, sorted and
 * unique) that d did not lock (locked_ids, sorted), locked and rechecked;
 * appended to *kept.  Each batch id is scanned once: a row is seen once.
 */
static void
lock_rest(RestRun *rr)
{
	PgcbClaimRun *run = rr->run;
	Oid			indexoid = pgcb_claim_batch_index(run);
	Relation	index;
	IndexScanDesc scan;

	if (!OidIsValid(indexoid))
	{
		scan_rest_seq(rr);
		return;
	}
	index = index_open(indexoid, RowExclusiveLock);
	scan = index_beginscan(run->rel, index, run->snapshot, 1, 0);
	for (int b = 0; b < rr->n_batches; b++)
	{
		ScanKeyData key;

		if (b > 0 && memcmp(rr->batches[b].batch_id.data, rr->batches[b - 1].batch_id.data,
							UUID_LEN) == 0)
			continue;
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ,
					UUIDPGetDatum(&rr->batches[b].batch_id));
		index_rescan(scan, &key, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, run->scanslot))
		{
			CHECK_FOR_INTERRUPTS();
			take_rest_row(rr);
		}
	}
	index_endscan(scan);
	index_close(index, NoLock);
}

int
pgcb_batch_claim_rows(int n, const int *endpoint_ids, const int *counts, const int *sizes,
					  int claimed_by, int lease_ms, PgcbBatchRow **out, MemoryContext cxt)
{
	PgcbClaimRun run;
	MemoryContext call_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback batch claim",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(call_cxt);
	int			room = 64;
	KeptRow    *kept = palloc(sizeof(KeptRow) * room);
	int			n_kept = 0;
	int64	   *locked_ids = NULL;
	int			n_locked = 0;
	OldBatch   *batches = NULL;
	int			n_batches = 0;
	int			got = 0;
	int			due_room = 64;
	DueRow	   *rows = palloc(sizeof(DueRow) * due_room);

	pgcb_claim_begin(&run, claimed_by, lease_ms, true);
	for (int i = 0; i < n; i++)
	{
		int64		limit = (int64) counts[i] * sizes[i];
		int			nrows;

		CHECK_FOR_INTERRUPTS();
		if (counts[i] <= 0 || sizes[i] <= 0)
			continue;
		nrows = lock_due(&run, endpoint_ids[i], limit, &rows, &due_room);
		if (nrows == 0)
			continue;
		locked_ids = locked_ids == NULL ? palloc(sizeof(int64) * nrows)
			: repalloc(locked_ids, sizeof(int64) * (n_locked + nrows));
		batches = batches == NULL ? palloc(sizeof(OldBatch) * nrows)
			: repalloc(batches, sizeof(OldBatch) * (n_batches + nrows));
		group_endpoint(endpoint_ids[i], rows, nrows, counts[i], sizes[i], batches, &n_batches);
		for (int r = 0; r < nrows; r++)
		{
			locked_ids[n_locked++] = rows[r].id;
			if (!rows[r].kept)
				continue;
			if (n_kept == room)
			{
				room *= 2;
				kept = repalloc(kept, sizeof(KeptRow) * room);
			}
			kept[n_kept].id = rows[r].id;
			kept[n_kept].tid = rows[r].tid;
			kept[n_kept].batch_id = rows[r].batch_id;
			n_kept++;
		}
	}
	if (n_batches > 0)
	{
		RestRun		rr = {.run = &run, .batches = batches, .locked_ids = locked_ids,
			.n_locked = n_locked, .kept = &kept, .n_kept = &n_kept, .room = &room};
		int			u = 0;

		/* an endpoint listed twice would keep its batch twice */
		qsort(batches, n_batches, sizeof(OldBatch), cmp_old);
		for (int b = 0; b < n_batches; b++)
			if (u == 0 || cmp_old(&batches[u - 1], &batches[b]) != 0)
				batches[u++] = batches[b];
		rr.n_batches = u;
		qsort(locked_ids, n_locked, sizeof(int64), cmp_id);
		lock_rest(&rr);
	}

	/* written in id order, as the statement's UPDATE wrote them, each once */
	qsort(kept, n_kept, sizeof(KeptRow), cmp_kept);
	{
		int			u = 0;

		for (int k = 0; k < n_kept; k++)
			if (u == 0 || kept[u - 1].id != kept[k].id)
				kept[u++] = kept[k];
		n_kept = u;
	}
	*out = MemoryContextAllocZero(cxt, sizeof(PgcbBatchRow) * Max(n_kept, 1));
	for (int k = 0; k < n_kept; k++)
	{
		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(run.row_cxt);
		/* the version locked: no one else can have changed it since */
		if (!table_tuple_fetch_row_version(run.rel, &kept[k].tid, SnapshotAny, run.lockslot))
			elog(ERROR, "pg_callback: a locked row of callback.callback_queue is gone");
		if (pgcb_claim_write(&run, &kept[k].batch_id, &(*out)[got].c, &(*out)[got].batch_id,
							 &(*out)[got].batch_null, cxt))
			got++;
		MemoryContextSwitchTo(call_cxt);
		pgcb_claim_next_row(&run);
	}
	pgcb_claim_end(&run);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(call_cxt);
	return got;
}
