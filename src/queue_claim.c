/*
 * queue_claim.c
 *		The claim of due deliveries (pgcb_queue_claim), in C: an index scan
 *		of callback_queue_due per endpoint, each row locked FOR UPDATE SKIP
 *		LOCKED and updated through the table AM and the queue's indexes,
 *		with no SPI, planner or executor start-up.  The saved statement it
 *		replaces cost about 56k instructions per delivery (callgrind), most
 *		of it executor set-up and expression evaluation.  Its pieces (the
 *		shape, the run, the lock and recheck, the write; queue_claim.h) are
 *		the batch claim's too (batch_claim.c), which keeps the guarantees
 *		below for the rows it locks.
 *
 * What it does, and why it is what
 *	UPDATE callback_queue SET status = 'sending', claimed_by = $c,
 *		   lease_expires_at = now() + $lease
 *	 WHERE ctid = ANY (per endpoint: SELECT ctid ... WHERE endpoint_id = e
 *		   AND status = 'pending' AND next_attempt_at <= now()
 *		   ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED)
 * did:
 *	- the same rows: the partial index callback_queue_due (endpoint_id,
 *	  next_attempt_at) WHERE finished_at IS NULL in forward order, the rows
 *	  in flight passed by their status (part 98: so that the claim's new
 *	  version is HOT, no index names status), under the
 *	  statement's snapshot (locks first, then the snapshot, as SPI takes
 *	  them);
 *	- the same lock: table_tuple_lock as nodeLockRows.c takes a row for
 *	  FOR UPDATE SKIP LOCKED: a row someone holds is skipped and does not
 *	  count; one deleted or updated since the snapshot is followed to its
 *	  last version in READ COMMITTED (and an error in REPEATABLE READ, as
 *	  there);
 *	- the same recheck: the version locked must still be the endpoint's,
 *	  pending and due (the statement rechecked it by EvalPlanQual; its TID
 *	  scan then skipped a version newer than its snapshot, so such a row is
 *	  now claimed once instead of left for the next cycle);
 *	- the same new version, written as an UPDATE writes it (queue_rows.c:
 *	  constraints, table AM update, index entries with partial predicates,
 *	  row and statement triggers, UPDATE OF columns, transition tables; an
 *	  operator's audit trigger on the queue keeps working, test_faults.py).
 * What an UPDATE would do and this does not is refused (row security that
 * applies to the owner, another relkind).
 *
 * Per backend: the queue's OID, the column numbers by name (an upgraded
 * 1.0 database has another column order than a fresh 1.1 install), the
 * enum values and the index, dropped by a relcache invalidation of the
 * queue.  Per call: the open relation, the EState, the scan and slots.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "catalog/pg_index.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "queue_claim.h"

#define DUE_INDEX_NAME "callback_queue_due"
#define BATCH_INDEX_NAME "callback_queue_batch"

static PgcbClaimShape shape;
static bool callback_registered = false;

/* Only sets a flag: it may run in the middle of a claim. */
static void
claim_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == shape.relid)
		shape.valid = false;
}

/*
 * An index of the queue by name, a btree whose leading keys are keys[]
 * (what the scan keys and the order need), valid and ready; InvalidOid
 * when there is none.  Its predicate is rechecked on every row anyway.
 */
static Oid
lookup_index(Relation rel, const char *name, int nkeys, const AttrNumber *keys)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;
	bool		usable = false;

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		char	   *iname = get_rel_name(indexoid);

		if (iname != NULL && strcmp(iname, name) == 0)
			found = indexoid;
	}
	list_free(indexes);
	if (OidIsValid(found))
	{
		Relation	index = index_open(found, AccessShareLock);
		Form_pg_index form = index->rd_index;

		usable = index->rd_rel->relam == BTREE_AM_OID &&
			form->indisvalid && form->indisready && form->indnkeyatts >= nkeys;
		for (int i = 0; usable && i < nkeys; i++)
			usable = form->indkey.values[i] == keys[i];
		index_close(index, AccessShareLock);
	}
	return usable ? found : InvalidOid;
}

static Oid
find_index(Relation rel, const char *name, int nkeys, const AttrNumber *keys, const char *cols)
{
	Oid			found = lookup_index(rel, name, nkeys, keys);

	if (!OidIsValid(found))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.%s has no valid btree index %s on (%s)",
						RelationGetRelationName(rel), name, cols),
				 errhint("The extension's tables were changed by hand; REINDEX the index, or create it again as pg_callback's install script does.")));
	return found;
}

static void
build_shape(Relation rel)
{
	Oid			status_type;
	AttrNumber	due_keys[2];

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(claim_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	shape.valid = false;
	shape.batch_valid = false;
	shape.relid = RelationGetRelid(rel);
	shape.att_id = pgcb_rows_column(rel, "id", INT8OID);
	shape.att_event_id = pgcb_rows_column(rel, "event_id", UUIDOID);
	shape.att_endpoint_id = pgcb_rows_column(rel, "endpoint_id", INT4OID);
	shape.att_event_type = pgcb_rows_column(rel, "event_type", TEXTOID);
	shape.att_body = pgcb_rows_column(rel, "body", TEXTOID);
	shape.att_status = pgcb_rows_column(rel, "status", InvalidOid);
	shape.att_attempts = pgcb_rows_column(rel, "attempts", INT4OID);
	shape.att_next_attempt_at = pgcb_rows_column(rel, "next_attempt_at", TIMESTAMPTZOID);
	shape.att_lease_expires_at = pgcb_rows_column(rel, "lease_expires_at", TIMESTAMPTZOID);
	shape.att_claimed_by = pgcb_rows_column(rel, "claimed_by", INT4OID);
	shape.att_traceparent = pgcb_rows_column(rel, "traceparent", TEXTOID);
	shape.att_tracestate = pgcb_rows_column(rel, "tracestate", TEXTOID);
	status_type = TupleDescAttr(RelationGetDescr(rel), shape.att_status - 1)->atttypid;
	shape.status_pending = DirectFunctionCall2(enum_in, CStringGetDatum("pending"),
											   ObjectIdGetDatum(status_type));
	shape.status_sending = DirectFunctionCall2(enum_in, CStringGetDatum("sending"),
											   ObjectIdGetDatum(status_type));
	due_keys[0] = shape.att_endpoint_id;
	due_keys[1] = shape.att_next_attempt_at;
	shape.due_index = find_index(rel, DUE_INDEX_NAME, 2, due_keys, "endpoint_id, next_attempt_at");
	shape.valid = true;
}

/* The batch claim's columns: apart, so that the plain claim never needs them. */
static void
build_batch_shape(Relation rel)
{
	shape.att_batch_id = pgcb_rows_column(rel, "batch_id", UUIDOID);
	shape.batch_index_known = false;
	shape.batch_valid = true;
}

/*
 * The batch index, looked up only when a claim needs it (a batch sent
 * before is kept): its absence must not stop the claims that do not.
 */
Oid
pgcb_claim_batch_index(PgcbClaimRun *run)
{
	if (!shape.batch_index_known)
	{
		shape.batch_index = lookup_index(run->rel, BATCH_INDEX_NAME, 1, &shape.att_batch_id);
		shape.batch_index_known = true;
	}
	return shape.batch_index;
}

/*
 * callback_queue_due and callback_queue_batch hold the rows in flight too
 * (no index names status, so that a claim stays HOT: part 98).  A row our
 * snapshot sees in flight is passed without a lock; one claimed or
 * released since is left to pgcb_claim_still_due, or to the next cycle.
 */
bool
pgcb_claim_seen_pending(PgcbClaimRun *run)
{
	bool		isnull;
	Datum		d = slot_getattr(run->scanslot, shape.att_status, &isnull);

	return !isnull && DatumGetObjectId(d) == DatumGetObjectId(shape.status_pending);
}

bool
pgcb_claim_lock(PgcbClaimRun *run, ItemPointer tid)
{
	bool		held;

	return pgcb_rows_lock(&run->stmt, 0, tid, run->lockslot, LockWaitSkip, &held);
}

/*
 * The locked version may be newer than the snapshot's: it is claimed only
 * if it still is the endpoint's, pending and due.
 */
bool
pgcb_claim_still_due(PgcbClaimRun *run, int endpoint_id)
{
	TupleTableSlot *s = run->lockslot;
	bool		isnull;
	Datum		d;

	d = slot_getattr(s, shape.att_endpoint_id, &isnull);
	if (isnull || DatumGetInt32(d) != endpoint_id)
		return false;
	d = slot_getattr(s, shape.att_status, &isnull);
	if (isnull || DatumGetObjectId(d) != DatumGetObjectId(shape.status_pending))
		return false;
	d = slot_getattr(s, shape.att_next_attempt_at, &isnull);
	return !isnull && DatumGetTimestampTz(d) <= run->now;
}

static char *
copy_text(Datum d, int *len, MemoryContext cxt)
{
	text	   *t = DatumGetTextPP(d);
	int			n = VARSIZE_ANY_EXHDR(t);
	char	   *s = MemoryContextAlloc(cxt, n + 1);

	memcpy(s, VARDATA_ANY(t), n);
	s[n] = '\0';
	if (len != NULL)
		*len = n;
	return s;
}

bool
pgcb_claim_write(PgcbClaimRun *run, const pg_uuid_t *new_batch_id, PgcbClaimed *c,
				 pg_uuid_t *batch_id, bool *batch_null, MemoryContext cxt)
{
	TupleTableSlot *old = run->lockslot;
	TupleTableSlot *new = run->newslot;
	int			natts = RelationGetDescr(run->rel)->natts;
	bool		isnull;
	Datum		d;

	slot_getallattrs(old);
	ExecClearTuple(new);
	memcpy(new->tts_values, old->tts_values, sizeof(Datum) * natts);
	memcpy(new->tts_isnull, old->tts_isnull, sizeof(bool) * natts);
	new->tts_values[shape.att_status - 1] = shape.status_sending;
	new->tts_isnull[shape.att_status - 1] = false;
	new->tts_values[shape.att_claimed_by - 1] = Int32GetDatum(run->claimed_by);
	new->tts_isnull[shape.att_claimed_by - 1] = false;
	new->tts_values[shape.att_lease_expires_at - 1] = run->lease_expires_at;
	new->tts_isnull[shape.att_lease_expires_at - 1] = false;
	if (run->batch)
	{
		new->tts_values[shape.att_batch_id - 1] = UUIDPGetDatum(new_batch_id);
		new->tts_isnull[shape.att_batch_id - 1] = false;

		/*
		 * A batch claim writes batch_id, a key of callback_queue_batch, so
		 * its version is not heap-only anyway.  It also sets next_attempt_at
		 * to the lease's end, when the row is due again if its request never
		 * comes back: that moves the rows in flight (batch_size per request)
		 * past the due rows in callback_queue_due, where every scan for due
		 * rows would otherwise pass them (part 98).
		 */
		new->tts_values[shape.att_next_attempt_at - 1] = run->lease_expires_at;
		new->tts_isnull[shape.att_next_attempt_at - 1] = false;
	}
	ExecStoreVirtualTuple(new);
	if (!pgcb_rows_update(&run->stmt, 0, old, new))
		return false;

	/* what was written, as RETURNING gives it (a BEFORE trigger may change it) */
	c->id = DatumGetInt64(slot_getattr(new, shape.att_id, &isnull));
	/* the version written: the write-back starts its search there */
	c->tid = new->tts_tid;
	memcpy(&c->event_id, DatumGetUUIDP(slot_getattr(new, shape.att_event_id, &isnull)),
		   sizeof(pg_uuid_t));
	c->endpoint_id = DatumGetInt32(slot_getattr(new, shape.att_endpoint_id, &isnull));
	c->attempts = DatumGetInt32(slot_getattr(new, shape.att_attempts, &isnull));
	c->body = copy_text(slot_getattr(new, shape.att_body, &isnull), &c->body_len, cxt);
	if (run->batch)
	{
		/* the batch statement returned no trace context or event type (batch.c) */
		d = slot_getattr(new, shape.att_batch_id, &isnull);
		*batch_null = isnull;
		if (isnull)
			memset(batch_id, 0, sizeof(pg_uuid_t));
		else
			memcpy(batch_id, DatumGetUUIDP(d), sizeof(pg_uuid_t));
		return true;
	}
	d = slot_getattr(new, shape.att_traceparent, &isnull);
	c->traceparent = isnull ? NULL : copy_text(d, NULL, cxt);
	d = slot_getattr(new, shape.att_tracestate, &isnull);
	c->tracestate = isnull ? NULL : copy_text(d, NULL, cxt);
	c->event_type = copy_text(slot_getattr(new, shape.att_event_type, &isnull), NULL, cxt);
	return true;
}

void
pgcb_claim_next_row(PgcbClaimRun *run)
{
	ExecClearTuple(run->lockslot);
	ExecClearTuple(run->newslot);
	ResetPerTupleExprContext(run->stmt.estate);
	MemoryContextReset(run->row_cxt);
}

void
pgcb_claim_scan_due(PgcbClaimRun *run, int endpoint_id)
{
	ScanKeyData keys[2];

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(endpoint_id));
	ScanKeyInit(&keys[1], 2, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(run->now));
	index_rescan(run->scan, keys, 2, NULL, 0);
}

/* Claim up to count due rows of one endpoint, oldest due first. */
static void
claim_endpoint(PgcbClaimRun *run, int endpoint_id, int count,
			   PgcbClaimed **out, int *got, int *room, MemoryContext cxt)
{
	int			taken = 0;

	pgcb_claim_scan_due(run, endpoint_id);
	while (taken < count && index_getnext_slot(run->scan, ForwardScanDirection, run->scanslot))
	{
		MemoryContext old;
		bool		claimed = false;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(run->row_cxt);
		if (pgcb_claim_seen_pending(run) &&
			pgcb_claim_lock(run, &run->scanslot->tts_tid) && pgcb_claim_still_due(run, endpoint_id))
		{
			if (*got == *room)
			{
				*room *= 2;
				*out = repalloc(*out, sizeof(PgcbClaimed) * *room);
			}
			claimed = pgcb_claim_write(run, NULL, &(*out)[*got], NULL, NULL, cxt);
			if (claimed)
				(*got)++;
		}
		MemoryContextSwitchTo(old);
		pgcb_claim_next_row(run);
		if (claimed)
			taken++;
	}
}

void
pgcb_claim_begin(PgcbClaimRun *run, int claimed_by, int lease_ms, bool batch)
{
	CmdType		cmd = CMD_UPDATE;
	List	   *cols;
	Interval	lease;

	pgcb_session_enter(&run->session);

	/* the lock first, then the snapshot, as a statement takes them */
	run->rel = table_open(pgcb_session_relid("callback_queue"), RowExclusiveLock);
	pgcb_rows_check(run->rel, CMD_UPDATE, "claim");
	if (!shape.valid || shape.relid != RelationGetRelid(run->rel))
		build_shape(run->rel);
	if (batch && !shape.batch_valid)
		build_batch_shape(run->rel);
	run->shape = &shape;
	run->batch = batch;
	/* the caller's earlier writes in this transaction are seen */
	PushActiveSnapshot(GetTransactionSnapshot());
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();
	run->snapshot = GetActiveSnapshot();

	cols = list_make3_int(shape.att_status, shape.att_claimed_by, shape.att_lease_expires_at);
	if (batch)
		cols = lappend_int(lappend_int(cols, shape.att_batch_id), shape.att_next_attempt_at);
	pgcb_rows_begin(&run->stmt, run->snapshot, 1, &run->rel, &cmd, &cols);

	run->now = GetCurrentTransactionStartTimestamp();
	/* now() + lease_ms * interval '1 millisecond' */
	lease.month = 0;
	lease.day = 0;
	lease.time = (int64) lease_ms * INT64CONST(1000);
	run->lease_expires_at = DirectFunctionCall2(timestamptz_pl_interval,
												TimestampTzGetDatum(run->now),
												IntervalPGetDatum(&lease));
	run->claimed_by = claimed_by;
	run->scanslot = table_slot_create(run->rel, NULL);
	run->lockslot = table_slot_create(run->rel, NULL);
	run->newslot = MakeSingleTupleTableSlot(RelationGetDescr(run->rel), &TTSOpsVirtual);
	run->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback claim row",
										 ALLOCSET_DEFAULT_SIZES);

	run->index = index_open(shape.due_index, RowExclusiveLock);
	run->scan = index_beginscan(run->rel, run->index, run->snapshot, 2, 0);
}

void
pgcb_claim_end(PgcbClaimRun *run)
{
	index_endscan(run->scan);
	index_close(run->index, NoLock);

	MemoryContextDelete(run->row_cxt);
	ExecDropSingleTupleTableSlot(run->newslot);
	ExecDropSingleTupleTableSlot(run->lockslot);
	ExecDropSingleTupleTableSlot(run->scanslot);
	pgcb_rows_end(&run->stmt);
	/* the lock stays to the end of the transaction, as an UPDATE's does */
	table_close(run->rel, NoLock);
	PopActiveSnapshot();
	pgcb_session_leave(&run->session);
}

/*
 * The claim, as a step of the cycle (pgcb_queue_run_step): run as the
 * extension's owner; *out (in cxt) gets the rows claimed, in the order of
 * endpoint_ids and, per endpoint, of next_attempt_at.
 */
static int
claim_rows(int n, const int *endpoint_ids, const int *counts, int claimed_by, int lease_ms,
		   PgcbClaimed **out, MemoryContext cxt)
{
	PgcbClaimRun run;
	int			got = 0;
	int			room = 16;

	*out = MemoryContextAlloc(cxt, sizeof(PgcbClaimed) * room);
	pgcb_claim_begin(&run, claimed_by, lease_ms, false);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (counts[i] > 0)
			claim_endpoint(&run, endpoint_ids[i], counts[i], out, &got, &room, cxt);
	}
	pgcb_claim_end(&run);
	return got;
}

typedef struct ClaimArgs
{
	int			n;
	const int  *endpoint_ids;
	const int  *counts;
	int			claimed_by;
	int			lease_ms;
	PgcbClaimed **out;
	MemoryContext cxt;
	int			got;
} ClaimArgs;

static void
claim_step(void *arg)
{
	ClaimArgs  *cs = (ClaimArgs *) arg;

	cs->got = claim_rows(cs->n, cs->endpoint_ids, cs->counts, cs->claimed_by, cs->lease_ms,
						 cs->out, cs->cxt);
}

int
pgcb_queue_claim(int n, const int *endpoint_ids, const int *counts, int claimed_by,
				 int lease_ms, PgcbClaimed **out, MemoryContext cxt)
{
	ClaimArgs	cs;

	cs.n = n;
	cs.endpoint_ids = endpoint_ids;
	cs.counts = counts;
	cs.claimed_by = claimed_by;
	cs.lease_ms = lease_ms;
	cs.out = out;
	cs.cxt = cxt;
	cs.got = 0;
	/* SKIP LOCKED already; a lock timeout only means nothing claimed now */
	if (!pgcb_queue_run_step(claim_step, &cs))
	{
		*out = MemoryContextAlloc(cxt, sizeof(PgcbClaimed));
		return 0;
	}
	return cs.got;
}
