/*
 * queue_write_back.c
 *		Record a batch of outcomes: each delivery's queue row updated, an
 *		attempt row inserted, and the per-minute stats rollup of what was
 *		written handed back.  Written through the table AM (queue_rows.c),
 *		not as an SQL statement: the statement this replaces
 *		spent half of its 124k instructions per delivery on executor
 *		set-up, CTE tuplestores and expression evaluation (bench part 9).
 *
 * Per outcome, in the batch's order:
 *	- its row is found where the claim wrote it (the outcome's TID) if that
 *	  version is still the one the snapshot sees and still holds the
 *	  delivery (id and event id), else by its primary key: a row updated
 *	  since the claim, a line pointer pruned or reused by another row after
 *	  a VACUUM, an outcome with no TID (a claim in SQL) all take the key;
 *	  either way the same version, as the key is unique (find_row);
 *	- its row's latest version is locked FOR UPDATE: in the worker without
 *	  waiting (SKIP LOCKED), in process_callbacks() waiting, as the
 *	  caller's transaction chose (queue.c, LOCK_MARK).  A row someone else
 *	  holds is reported kept, for the caller to write later; a row that is
 *	  gone drops its outcome;
 *	- the locked version is updated only if it is still the delivery that
 *	  was claimed (the event id: TRUNCATE ... RESTART IDENTITY reuses ids)
 *	  and still open: 'sending' (our claim, or a claim made again after our
 *	  lease ran out) or 'pending' and claimed by nobody (a sweep returned
 *	  it).  A finished row drops the outcome: when a row was claimed twice,
 *	  the second outcome is lost if the first finished it;
 *	- an attempt row is inserted for each row updated, unless
 *	  callback.attempt_history leaves it out (attempt_history.c), and the
 *	  attempt is counted into the rollup of its (minute, endpoint, event
 *	  type) either way.
 * In REPEATABLE READ (a process_callbacks() caller's choice) a row changed
 * since the snapshot is a serialization failure, as SELECT FOR UPDATE
 * would raise.
 *
 * The rows are written as one UPDATE and one INSERT statement would write
 * them (queue_rows.c): an operator's triggers on either table fire, and a
 * BEFORE trigger that skips a queue row's update leaves that outcome
 * unwritten, as the statement's RETURNING left it out.
 *
 * The rollup is returned as the jsonb text PLAN_STATS reads
 * (jsonb_populate_recordset over callback_stats): its rows may be locked
 * by purge(), so they are written apart, later if need be.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "common/int.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "attempt_history.h"
#include "metrics.h"
#include "queue.h"
#include "queue_rows.h"
#include "queue_stats.h"
#include "session.h"

/* The columns written, by name: an upgraded 1.0 table orders them otherwise. */
typedef struct QueueAtts
{
	AttrNumber	id;
	AttrNumber	event_id;
	AttrNumber	endpoint_id;
	AttrNumber	event_type;
	AttrNumber	status;
	AttrNumber	attempts;
	AttrNumber	next_attempt_at;
	AttrNumber	lease_expires_at;
	AttrNumber	claimed_by;
	AttrNumber	last_attempt_at;
	AttrNumber	last_status_code;
	AttrNumber	last_error;
	AttrNumber	finished_at;
} QueueAtts;

typedef struct AttemptAtts
{
	AttrNumber	delivery_id;
	AttrNumber	event_id;
	AttrNumber	endpoint_id;
	AttrNumber	event_type;
	AttrNumber	attempt;
	AttrNumber	started_at;
	AttrNumber	latency_ms;
	AttrNumber	status_code;
	AttrNumber	error;
	AttrNumber	response_body;
	AttrNumber	outcome;
} AttemptAtts;

/* callback.delivery_status labels, as OIDs of the queue's status type */
typedef struct StatusOids
{
	Oid			pending;
	Oid			sending;
	Oid			delivered;
	Oid			dead;
} StatusOids;

/* One (minute, endpoint, event type) of the rollup. */
typedef PgcbStatsRow RollupRow;

typedef struct Rollup
{
	RollupRow  *rows;
	int			n;
	int			cap;
	TimestampTz minute_start;	/* the last minute computed: [start, +60 s) */
	bool		have_minute;
} Rollup;

typedef struct WriteBack
{
	const PgcbOutcome *o;
	int			n;
	bool	   *kept;
	int			n_kept;
	PgcbFinalAttempt *final;
	char	   *stats;
	MemoryContext cxt;
} WriteBack;

static void
queue_atts(Relation rel, QueueAtts *a)
{
	a->id = pgcb_rows_column(rel, "id", INT8OID);
	a->event_id = pgcb_rows_column(rel, "event_id", UUIDOID);
	a->endpoint_id = pgcb_rows_column(rel, "endpoint_id", INT4OID);
	a->event_type = pgcb_rows_column(rel, "event_type", TEXTOID);
	a->status = pgcb_rows_column(rel, "status", InvalidOid);
	a->attempts = pgcb_rows_column(rel, "attempts", INT4OID);
	a->next_attempt_at = pgcb_rows_column(rel, "next_attempt_at", TIMESTAMPTZOID);
	a->lease_expires_at = pgcb_rows_column(rel, "lease_expires_at", TIMESTAMPTZOID);
	a->claimed_by = pgcb_rows_column(rel, "claimed_by", INT4OID);
	a->last_attempt_at = pgcb_rows_column(rel, "last_attempt_at", TIMESTAMPTZOID);
	a->last_status_code = pgcb_rows_column(rel, "last_status_code", INT4OID);
	a->last_error = pgcb_rows_column(rel, "last_error", TEXTOID);
	a->finished_at = pgcb_rows_column(rel, "finished_at", TIMESTAMPTZOID);
}

static void
attempt_atts(Relation rel, AttemptAtts *a)
{
	a->delivery_id = pgcb_rows_column(rel, "delivery_id", INT8OID);
	a->event_id = pgcb_rows_column(rel, "event_id", UUIDOID);
	a->endpoint_id = pgcb_rows_column(rel, "endpoint_id", INT4OID);
	a->event_type = pgcb_rows_column(rel, "event_type", TEXTOID);
	a->attempt = pgcb_rows_column(rel, "attempt", INT4OID);
	a->started_at = pgcb_rows_column(rel, "started_at", TIMESTAMPTZOID);
	a->latency_ms = pgcb_rows_column(rel, "latency_ms", FLOAT8OID);
	a->status_code = pgcb_rows_column(rel, "status_code", INT4OID);
	a->error = pgcb_rows_column(rel, "error", TEXTOID);
	a->response_body = pgcb_rows_column(rel, "response_body", TEXTOID);
	a->outcome = pgcb_rows_column(rel, "outcome", InvalidOid);
}

static Oid
status_oid(Oid typid, const char *label)
{
	return DatumGetObjectId(DirectFunctionCall2(enum_in, CStringGetDatum(label),
												ObjectIdGetDatum(typid)));
}

static Oid
verdict_oid(const StatusOids *s, const char *verdict)
{
	if (strcmp(verdict, "delivered") == 0)
		return s->delivered;
	if (strcmp(verdict, "dead") == 0)
		return s->dead;
	if (strcmp(verdict, "pending") == 0)
		return s->pending;
	elog(ERROR, "pg_callback: unknown outcome \"%s\"", verdict);
	return InvalidOid;			/* keep the compiler quiet */
}

static RollupRow *
rollup_row(Rollup *r, TimestampTz started_at, int32 endpoint_id, const char *event_type)
{
	TimestampTz minute;

	/* date_trunc('minute') as the statement did, once per minute seen */
	if (!r->have_minute || started_at < r->minute_start ||
		started_at >= r->minute_start + 60 * USECS_PER_SEC)
	{
		r->minute_start = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_trunc,
																  CStringGetTextDatum("minute"),
																  TimestampTzGetDatum(started_at)));
		r->have_minute = true;
	}
	minute = r->minute_start;
	for (int i = r->n - 1; i >= 0; i--)
	{
		RollupRow  *row = &r->rows[i];

		if (row->minute == minute && row->endpoint_id == endpoint_id &&
			strcmp(row->event_type, event_type) == 0)
			return row;
	}
	if (r->n == r->cap)
	{
		r->cap = Max(8, r->cap * 2);
		r->rows = r->rows == NULL ? palloc(sizeof(RollupRow) * r->cap) :
			repalloc(r->rows, sizeof(RollupRow) * r->cap);
	}
	memset(&r->rows[r->n], 0, sizeof(RollupRow));
	r->rows[r->n].minute = minute;
	r->rows[r->n].endpoint_id = endpoint_id;
	r->rows[r->n].event_type = pstrdup(event_type);
	return &r->rows[r->n++];
}

static void
rollup_add(Rollup *r, const PgcbOutcome *o, int32 endpoint_id, const char *event_type,
		   bool delivered, bool dead)
{
	RollupRow  *row;

	if (isnan(o->latency_ms) || isinf(o->latency_ms) || o->latency_ms < 0.0)
		elog(ERROR, "pg_callback: latency %g ms is not a finite number of milliseconds, 0 or more",
			 o->latency_ms);
	row = rollup_row(r, o->started_at, endpoint_id, event_type);
	row->attempts++;
	if (delivered)
		row->delivered++;
	else
		row->failed++;
	if (dead)
		row->dead++;
	row->latency_sum_ms += o->latency_ms;
	if (row->attempts == 1 || o->latency_ms > row->latency_max_ms)
		row->latency_max_ms = o->latency_ms;
	row->hist[pgcb_hist_bucket(o->latency_ms)]++;
	if (o->error != NULL && (row->last_error == NULL || o->started_at > row->last_error_at))
	{
		row->last_error = pstrdup(o->error);
		row->last_error_at = o->started_at;
	}
}

static void
append_float(StringInfo buf, double v)
{
	appendStringInfoString(buf, float8out_internal(v));
}

/* The rollup as a jsonb array of callback_stats rows (jsonb_agg's shape). */
static char *
rollup_json(const Rollup *r, MemoryContext cxt)
{
	StringInfoData buf;
	MemoryContext old = MemoryContextSwitchTo(cxt);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < r->n; i++)
	{
		const RollupRow *row = &r->rows[i];
		char		ts[MAXDATELEN + 1];

		if (i > 0)
			appendStringInfoString(&buf, ", ");
		JsonEncodeDateTime(ts, TimestampTzGetDatum(row->minute), TIMESTAMPTZOID, NULL);
		appendStringInfo(&buf, "{\"minute\": \"%s\", \"endpoint_id\": %d, \"event_type\": ",
						 ts, row->endpoint_id);
		escape_json(&buf, row->event_type);
		appendStringInfo(&buf, ", \"attempts\": " INT64_FORMAT ", \"delivered\": " INT64_FORMAT
						 ", \"failed\": " INT64_FORMAT ", \"dead\": " INT64_FORMAT ", \"latency_sum_ms\": ",
						 row->attempts, row->delivered, row->failed, row->dead);
		append_float(&buf, row->latency_sum_ms);
		appendStringInfoString(&buf, ", \"latency_max_ms\": ");
		append_float(&buf, row->latency_max_ms);
		appendStringInfoString(&buf, ", \"latency_hist\": [");
		for (int b = 0; b < PGCB_HIST_BUCKETS; b++)
			appendStringInfo(&buf, b == 0 ? INT64_FORMAT : ", " INT64_FORMAT, row->hist[b]);
		appendStringInfoString(&buf, "], \"last_error\": ");
		if (row->last_error == NULL)
			appendStringInfoString(&buf, "null");
		else
			escape_json(&buf, row->last_error);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	MemoryContextSwitchTo(old);
	return buf.data;
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = s == NULL;
	return s == NULL ? (Datum) 0 : CStringGetTextDatum(s);
}

/* The columns the two statements write: for UPDATE OF triggers. */
static void
written_columns(const QueueAtts *qa, const AttemptAtts *aa, List **q, List **a)
{
	*q = list_make4_int(qa->status, qa->attempts, qa->next_attempt_at, qa->last_attempt_at);
	*q = lappend_int(*q, qa->last_status_code);
	*q = lappend_int(*q, qa->last_error);
	*q = lappend_int(*q, qa->lease_expires_at);
	*q = lappend_int(*q, qa->claimed_by);
	*q = lappend_int(*q, qa->finished_at);
	*a = list_make4_int(aa->delivery_id, aa->event_id, aa->endpoint_id, aa->event_type);
	*a = lappend_int(*a, aa->attempt);
	*a = lappend_int(*a, aa->started_at);
	*a = lappend_int(*a, aa->latency_ms);
	*a = lappend_int(*a, aa->status_code);
	*a = lappend_int(*a, aa->error);
	*a = lappend_int(*a, aa->response_body);
	*a = lappend_int(*a, aa->outcome);
}

/*
 * The new version of a locked queue row for outcome o, into new_slot.
 * False: the row is not the delivery claimed, or no longer open.
 */
static bool
form_update(const QueueAtts *qa, const StatusOids *st, TupleTableSlot *row_slot,
			TupleTableSlot *new_slot, const PgcbOutcome *o, TimestampTz now)
{
	Datum	   *v;
	bool	   *nul;
	Oid			status;
	Oid			outcome;
	int32		attempt;

	slot_getallattrs(row_slot);
	if (row_slot->tts_isnull[qa->event_id - 1] ||
		memcmp(DatumGetUUIDP(row_slot->tts_values[qa->event_id - 1]), &o->event_id,
			   sizeof(pg_uuid_t)) != 0)
		return false;
	status = DatumGetObjectId(row_slot->tts_values[qa->status - 1]);
	if (!(status == st->sending ||
		  (status == st->pending && row_slot->tts_isnull[qa->claimed_by - 1])))
		return false;

	outcome = verdict_oid(st, o->verdict);
	attempt = DatumGetInt32(row_slot->tts_values[qa->attempts - 1]);
	if (pg_add_s32_overflow(attempt, 1, &attempt))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("delivery " INT64_FORMAT " has too many attempts", o->delivery_id)));
	ExecClearTuple(new_slot);
	v = new_slot->tts_values;
	nul = new_slot->tts_isnull;
	memcpy(v, row_slot->tts_values, sizeof(Datum) * row_slot->tts_nvalid);
	memcpy(nul, row_slot->tts_isnull, sizeof(bool) * row_slot->tts_nvalid);
	v[qa->status - 1] = ObjectIdGetDatum(outcome);
	v[qa->attempts - 1] = Int32GetDatum(attempt);
	if (o->next_attempt_at != 0)
	{
		v[qa->next_attempt_at - 1] = TimestampTzGetDatum(o->next_attempt_at);
		nul[qa->next_attempt_at - 1] = false;
	}
	v[qa->last_attempt_at - 1] = TimestampTzGetDatum(o->started_at);
	nul[qa->last_attempt_at - 1] = false;
	v[qa->last_status_code - 1] = Int32GetDatum(o->status_code);
	nul[qa->last_status_code - 1] = o->status_code == 0;
	v[qa->last_error - 1] = text_or_null(o->error, &nul[qa->last_error - 1]);
	nul[qa->lease_expires_at - 1] = true;
	nul[qa->claimed_by - 1] = true;
	v[qa->finished_at - 1] = TimestampTzGetDatum(now);
	nul[qa->finished_at - 1] = outcome == st->pending;
	ExecStoreVirtualTuple(new_slot);
	return true;
}

/* The attempt row of an outcome whose queue row was written as written. */
static void
form_attempt(const QueueAtts *qa, const AttemptAtts *aa, TupleTableSlot *written,
			 TupleTableSlot *attempt_slot, const PgcbOutcome *o)
{
	Datum	   *v;
	bool	   *nul;

	slot_getallattrs(written);
	ExecClearTuple(attempt_slot);
	v = attempt_slot->tts_values;
	nul = attempt_slot->tts_isnull;
	memset(nul, true, sizeof(bool) * attempt_slot->tts_tupleDescriptor->natts);
	v[aa->started_at - 1] = TimestampTzGetDatum(o->started_at);
	v[aa->latency_ms - 1] = Float8GetDatum(o->latency_ms);
	nul[aa->started_at - 1] = nul[aa->latency_ms - 1] = false;
	/* as RETURNING gives them: a BEFORE trigger may have changed them */
	v[aa->delivery_id - 1] = written->tts_values[qa->id - 1];
	nul[aa->delivery_id - 1] = written->tts_isnull[qa->id - 1];
	v[aa->event_id - 1] = written->tts_values[qa->event_id - 1];
	nul[aa->event_id - 1] = written->tts_isnull[qa->event_id - 1];
	v[aa->endpoint_id - 1] = written->tts_values[qa->endpoint_id - 1];
	nul[aa->endpoint_id - 1] = written->tts_isnull[qa->endpoint_id - 1];
	v[aa->event_type - 1] = written->tts_values[qa->event_type - 1];
	nul[aa->event_type - 1] = written->tts_isnull[qa->event_type - 1];
	v[aa->attempt - 1] = written->tts_values[qa->attempts - 1];
	nul[aa->attempt - 1] = written->tts_isnull[qa->attempts - 1];
	v[aa->outcome - 1] = written->tts_values[qa->status - 1];
	nul[aa->outcome - 1] = written->tts_isnull[qa->status - 1];
	v[aa->status_code - 1] = Int32GetDatum(o->status_code);
	nul[aa->status_code - 1] = o->status_code == 0;
	v[aa->error - 1] = text_or_null(o->error, &nul[aa->error - 1]);
	v[aa->response_body - 1] = text_or_null(o->response_body, &nul[aa->response_body - 1]);
	ExecStoreVirtualTuple(attempt_slot);
}

/* How the step finds rows: the queue, its primary key (opened on first use). */
typedef struct RowFinder
{
	Relation	rel;
	Snapshot	snapshot;
	AttrNumber	att_id;
	AttrNumber	att_event_id;
	BlockNumber nblocks;		/* InvalidBlockNumber: not read yet */
	Relation	pk;
	IndexScanDesc scan;
	ScanKeyData key;
} RowFinder;

/*
 * Whether the version at the claim's TID is the outcome's row as the
 * snapshot sees it, in slot if so.  Never trusted alone: the page may
 * have been pruned or vacuumed since, and the line pointer reused.
 */
static bool
fetch_claimed(RowFinder *f, const PgcbOutcome *o, TupleTableSlot *slot)
{
	ItemPointerData tid = o->tid;
	bool		isnull;
	Datum		d;

	if (!ItemPointerIsValid(&tid))
		return false;
	/* a truncated table: heap_fetch reads the block, out of range an error */
	if (f->nblocks == InvalidBlockNumber)
		f->nblocks = RelationGetNumberOfBlocks(f->rel);
	if (ItemPointerGetBlockNumber(&tid) >= f->nblocks)
		return false;
	/* an unused, dead or redirected line pointer, or an invisible version: false */
	if (!table_tuple_fetch_row_version(f->rel, &tid, f->snapshot, slot))
		return false;
	d = slot_getattr(slot, f->att_id, &isnull);
	if (isnull || DatumGetInt64(d) != o->delivery_id)
		return false;
	d = slot_getattr(slot, f->att_event_id, &isnull);
	return !isnull && memcmp(DatumGetUUIDP(d), &o->event_id, sizeof(pg_uuid_t)) == 0;
}

/*
 * The outcome's row as the snapshot sees it, in slot: the claim's version
 * if it still is that, else by primary key.  Under a unique key only one
 * version of a row id is visible, so both ways find the same one.
 */
static bool
find_row(RowFinder *f, const PgcbOutcome *o, TupleTableSlot *slot)
{
	if (fetch_claimed(f, o, slot))
		return true;
	ExecClearTuple(slot);
	if (f->scan == NULL)
	{
		f->pk = index_open(RelationGetPrimaryKeyIndex(f->rel), AccessShareLock);
		f->scan = index_beginscan(f->rel, f->pk, f->snapshot, 1, 0);
	}
	ScanKeyInit(&f->key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(o->delivery_id));
	index_rescan(f->scan, &f->key, 1, NULL, 0);
	return index_getnext_slot(f->scan, ForwardScanDirection, slot);
}

/* The step: every outcome of the batch, in one subtransaction (queue.c). */
static void
write_back_step(void *arg)
{
	WriteBack  *wb = (WriteBack *) arg;
	LockWaitPolicy wait = pgcb_queue_skip_locked() ? LockWaitSkip : LockWaitBlock;
	PgcbSession session;
	Relation	rels[2];
	CmdType		cmds[2] = {CMD_UPDATE, CMD_INSERT};
	List	   *cols[2];
	PgcbRowsStatement stmt;
	QueueAtts	qa;
	AttemptAtts aa;
	StatusOids	st;
	Oid			status_type;
	TupleTableSlot *row_slot;
	TupleTableSlot *new_slot;
	TupleTableSlot *attempt_slot;
	RowFinder	finder = {0};
	Snapshot	snapshot;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Rollup		rollup = {0};
	MemoryContext rowcxt;
	MemoryContext old;

	pgcb_session_enter(&session);
	/* the locks first, then the snapshot, as a statement takes them */
	rels[0] = table_open(pgcb_session_relid("callback_queue"), RowExclusiveLock);
	rels[1] = table_open(pgcb_session_relid("callback_attempts"), RowExclusiveLock);
	pgcb_rows_check(rels[0], CMD_UPDATE, "write-back");
	pgcb_rows_check(rels[1], CMD_INSERT, "write-back");
	if (!OidIsValid(RelationGetPrimaryKeyIndex(rels[0])))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.callback_queue has no primary key"),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));
	/* our own earlier steps (a claim in this transaction) must be seen */
	PushActiveSnapshot(GetTransactionSnapshot());
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();

	queue_atts(rels[0], &qa);
	attempt_atts(rels[1], &aa);
	status_type = TupleDescAttr(RelationGetDescr(rels[0]), qa.status - 1)->atttypid;
	/* an attempt's outcome is a queue status, as the OIDs written say */
	if (TupleDescAttr(RelationGetDescr(rels[1]), aa.outcome - 1)->atttypid != status_type)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.callback_attempts.outcome is not of the type of callback.callback_queue.status"),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));
	st.pending = status_oid(status_type, "pending");
	st.sending = status_oid(status_type, "sending");
	st.delivered = status_oid(status_type, "delivered");
	st.dead = status_oid(status_type, "dead");
	written_columns(&qa, &aa, &cols[0], &cols[1]);
	pgcb_rows_begin(&stmt, snapshot, 2, rels, cmds, cols);

	row_slot = table_slot_create(rels[0], NULL);
	new_slot = MakeSingleTupleTableSlot(RelationGetDescr(rels[0]), &TTSOpsVirtual);
	attempt_slot = MakeSingleTupleTableSlot(RelationGetDescr(rels[1]), &TTSOpsVirtual);
	finder.rel = rels[0];
	finder.snapshot = snapshot;
	finder.att_id = qa.id;
	finder.att_event_id = qa.event_id;
	finder.nblocks = InvalidBlockNumber;
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback write-back row",
								   ALLOCSET_DEFAULT_SIZES);

	for (int i = 0; i < wb->n; i++)
	{
		const PgcbOutcome *o = &wb->o[i];
		bool		held = false;
		bool		found;
		bool		isnull;
		bool		attempted_before;
		bool		written;
		Oid			outcome;
		int32		attempt;
		int32		endpoint_id;
		char	   *event_type;

		CHECK_FOR_INTERRUPTS();
		/* the scan's own memory (btree's killed items) must outlive the row */
		found = find_row(&finder, o, row_slot);
		old = MemoryContextSwitchTo(rowcxt);
		if (!found || !pgcb_rows_lock(&stmt, 0, &row_slot->tts_tid, row_slot, wait, &held))
		{
			/* gone: the outcome goes with it; held (SKIP LOCKED): written later */
			if (held)
			{
				wb->kept[i] = true;
				wb->n_kept++;
			}
			goto next;
		}
		if (!form_update(&qa, &st, row_slot, new_slot, o, now))
			goto next;
		attempted_before = !row_slot->tts_isnull[qa.last_attempt_at - 1];
		/* a BEFORE trigger may skip it, as RETURNING would then leave it out */
		if (!pgcb_rows_update(&stmt, 0, row_slot, new_slot))
			goto next;
		outcome = DatumGetObjectId(slot_getattr(new_slot, qa.status, &isnull));
		attempt = DatumGetInt32(slot_getattr(new_slot, qa.attempts, &isnull));
		written = pgcb_attempt_history_keeps(outcome == st.delivered, attempt, attempted_before, o->error);
		if (written)
		{
			form_attempt(&qa, &aa, new_slot, attempt_slot, o);
			(void) pgcb_rows_insert(&stmt, 1, attempt_slot);
		}

		endpoint_id = DatumGetInt32(slot_getattr(new_slot, qa.endpoint_id, &isnull));
		event_type = TextDatumGetCString(slot_getattr(new_slot, qa.event_type, &isnull));
		if (outcome != st.pending)
		{
			wb->final[i].attempt = attempt;
			wb->final[i].row_written = written;
		}
		/* the rollup outlives the row's memory */
		MemoryContextSwitchTo(old);
		rollup_add(&rollup, o, endpoint_id, event_type, outcome == st.delivered, outcome == st.dead);
next:
		MemoryContextSwitchTo(old);
		ExecClearTuple(row_slot);
		ExecClearTuple(new_slot);
		ExecClearTuple(attempt_slot);
		ResetPerTupleExprContext(stmt.estate);
		MemoryContextReset(rowcxt);
	}

	if (rollup.n > 0)
		wb->stats = rollup_json(&rollup, wb->cxt);

	if (finder.scan != NULL)
	{
		index_endscan(finder.scan);
		index_close(finder.pk, AccessShareLock);
	}
	ExecDropSingleTupleTableSlot(row_slot);
	ExecDropSingleTupleTableSlot(new_slot);
	ExecDropSingleTupleTableSlot(attempt_slot);
	pgcb_rows_end(&stmt);
	/* the locks stay to the end of the transaction, as a statement's do */
	table_close(rels[1], NoLock);
	table_close(rels[0], NoLock);
	MemoryContextDelete(rowcxt);
	PopActiveSnapshot();
	pgcb_session_leave(&session);
}

int
pgcb_queue_write_back(const PgcbOutcome *o, int n, bool *kept, PgcbFinalAttempt *final,
					  char **stats, MemoryContext cxt)
{
	WriteBack	wb;

	wb.o = o;
	wb.n = n;
	wb.kept = kept;
	wb.n_kept = 0;
	wb.final = final;
	wb.stats = NULL;
	wb.cxt = cxt;
	memset(kept, 0, sizeof(bool) * n);
	memset(final, 0, sizeof(PgcbFinalAttempt) * n);
	*stats = NULL;
	if (!pgcb_queue_run_step(write_back_step, &wb))
	{
		/* a lock timed out: nothing was written, all is kept */
		memset(final, 0, sizeof(PgcbFinalAttempt) * n);
		for (int i = 0; i < n; i++)
			kept[i] = true;
		return n;
	}
	*stats = wb.stats;
	return wb.n_kept;
}
