/*
 * queue_stats.c
 *		The per-minute stats rollup added in C to the callback_stats rows
 *		that are already there: the common case.  A minute's row of an
 *		(endpoint, event type) is inserted once, by PLAN_STATS, and every
 *		later cycle of that minute adds to it.  That statement costs more
 *		than the rest of a cycle's SQL together (perf: 4 % of the worker's
 *		time while draining); a lookup in the primary key and a HOT update do
 *		the same here.
 *
 * What it takes: the rollup documents the write-back made (jsonb arrays of
 * callback_stats rows), merged per key as PLAN_STATS merges them (sums,
 * the greatest maximum, bucket-wise histograms, the last error of the
 * latest document that has one).  It writes only when every key can be
 * written: the row is there, visible, its endpoint still exists, and it
 * could be locked (SKIP LOCKED in the worker, waiting in
 * process_callbacks(), as PLAN_STATS locks).  Otherwise, or when the
 * table has INSERT or UPDATE triggers (PLAN_STATS's INSERT ... ON
 * CONFLICT would fire them), or a document is not what the write-back
 * writes, it writes nothing and returns false: PLAN_STATS then adds the
 * whole rollup, unchanged.  Rows it locked stay locked by the
 * transaction, which PLAN_STATS's own FOR UPDATE then takes as its own.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "metrics.h"
#include "queue.h"
#include "queue_rows.h"
#include "queue_stats.h"
#include "session.h"

/* One key of the rollup, merged over the documents. */
typedef PgcbStatsRow StatsKey;

typedef struct StatsAtts
{
	AttrNumber	minute;
	AttrNumber	endpoint_id;
	AttrNumber	event_type;
	AttrNumber	attempts;
	AttrNumber	delivered;
	AttrNumber	failed;
	AttrNumber	dead;
	AttrNumber	latency_sum_ms;
	AttrNumber	latency_max_ms;
	AttrNumber	latency_hist;
	AttrNumber	last_error;
} StatsAtts;

typedef struct StatsFast
{
	char	   *const *docs;
	int			n;
	bool		written;
} StatsFast;

/* A field of a rollup row; NULL when it is missing. */
static JsonbValue *
field(JsonbContainer *row, const char *name, JsonbValue *buf)
{
	return getKeyJsonValueFromContainer(row, name, strlen(name), buf);
}

/* A number field; NULL when it is missing or not a number. */
static Numeric
field_numeric(JsonbContainer *row, const char *name)
{
	JsonbValue	buf;
	JsonbValue *v = field(row, name, &buf);

	return v == NULL || v->type != jbvNumeric ? NULL : v->val.numeric;
}

static bool
field_int64(JsonbContainer *row, const char *name, int64 *out)
{
	Numeric		n = field_numeric(row, name);

	if (n != NULL)
		*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(n)));
	return n != NULL;
}

static bool
field_float8(JsonbContainer *row, const char *name, double *out)
{
	Numeric		n = field_numeric(row, name);

	if (n != NULL)
		*out = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(n)));
	return n != NULL;
}

/* A string field; *out NULL for a JSON null.  False when missing or another type. */
static bool
field_text(JsonbContainer *row, const char *name, char **out)
{
	JsonbValue	buf;
	JsonbValue *v = field(row, name, &buf);

	if (v == NULL)
		return false;
	if (v->type == jbvNull)
	{
		*out = NULL;
		return true;
	}
	if (v->type != jbvString)
		return false;
	*out = pnstrdup(v->val.string.val, v->val.string.len);
	return true;
}

static bool
field_hist(JsonbContainer *row, int64 *hist)
{
	JsonbValue	buf;
	JsonbValue *v = field(row, "latency_hist", &buf);
	JsonbContainer *arr;

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		return false;
	arr = v->val.binary.data;
	if (JsonContainerSize(arr) != PGCB_HIST_BUCKETS)
		return false;
	for (int b = 0; b < PGCB_HIST_BUCKETS; b++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(arr, b);

		if (e == NULL || e->type != jbvNumeric)
			return false;
		hist[b] = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(e->val.numeric)));
	}
	return true;
}

static int64
add_int64(int64 a, int64 b)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	return r;
}

/* The keys merged so far. */
typedef struct StatsKeys
{
	StatsKey   *k;
	ItemPointerData *tid;		/* of each key's row, once locked */
	int			n;
	int			cap;
} StatsKeys;

/* One rollup row into keys, merged with its key's earlier rows. */
static bool
merge_row(JsonbContainer *row, StatsKeys *keys)
{
	StatsKey	k;
	char	   *minute;
	StatsKey   *into = NULL;

	memset(&k, 0, sizeof(k));
	if (!field_text(row, "minute", &minute) || minute == NULL ||
		!field_text(row, "event_type", &k.event_type) || k.event_type == NULL)
		return false;
	{
		int64		id;

		if (!field_int64(row, "endpoint_id", &id) || id < PG_INT32_MIN || id > PG_INT32_MAX)
			return false;
		k.endpoint_id = (int32) id;
	}
	k.minute = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(minute),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	if (!field_int64(row, "attempts", &k.attempts) || !field_int64(row, "delivered", &k.delivered) ||
		!field_int64(row, "failed", &k.failed) || !field_int64(row, "dead", &k.dead) ||
		!field_float8(row, "latency_sum_ms", &k.latency_sum_ms) ||
		!field_float8(row, "latency_max_ms", &k.latency_max_ms) ||
		!field_hist(row, k.hist) || !field_text(row, "last_error", &k.last_error))
		return false;

	for (int i = 0; i < keys->n; i++)
		if (keys->k[i].endpoint_id == k.endpoint_id && keys->k[i].minute == k.minute &&
			strcmp(keys->k[i].event_type, k.event_type) == 0)
			into = &keys->k[i];
	if (into == NULL)
	{
		if (keys->n == keys->cap)
		{
			keys->cap *= 2;
			keys->k = repalloc(keys->k, sizeof(StatsKey) * keys->cap);
		}
		keys->k[keys->n++] = k;
		return true;
	}
	into->attempts = add_int64(into->attempts, k.attempts);
	into->delivered = add_int64(into->delivered, k.delivered);
	into->failed = add_int64(into->failed, k.failed);
	into->dead = add_int64(into->dead, k.dead);
	into->latency_sum_ms = float8_pl(into->latency_sum_ms, k.latency_sum_ms);
	into->latency_max_ms = Max(into->latency_max_ms, k.latency_max_ms);
	for (int b = 0; b < PGCB_HIST_BUCKETS; b++)
		into->hist[b] = add_int64(into->hist[b], k.hist[b]);
	/* the latest document's error wins, as PLAN_STATS's ORDER BY n DESC */
	if (k.last_error != NULL)
		into->last_error = k.last_error;
	return true;
}

/* The documents merged per key; false when one is not a rollup. */
static bool
merge_docs(char *const *docs, int n, StatsKeys *keys)
{
	keys->n = 0;
	keys->cap = 8;
	keys->k = palloc(sizeof(StatsKey) * keys->cap);
	keys->tid = NULL;
	for (int d = 0; d < n; d++)
	{
		Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(docs[d])));
		int			rows;

		if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
			return false;
		rows = JB_ROOT_COUNT(jb);
		for (int r = 0; r < rows; r++)
		{
			JsonbValue *row = getIthJsonbValueFromContainer(&jb->root, r);

			CHECK_FOR_INTERRUPTS();
			if (row == NULL || row->type != jbvBinary || !JsonContainerIsObject(row->val.binary.data) ||
				!merge_row(row->val.binary.data, keys))
				return false;
		}
	}
	return true;
}

/* Whether endpoint id is in callback_endpoints, in the snapshot. */
static bool
endpoint_exists(Relation endpoints, Snapshot snapshot, int32 id)
{
	Oid			pk = RelationGetPrimaryKeyIndex(endpoints);
	Relation	idx;
	IndexScanDesc scan;
	ScanKeyData key;
	TupleTableSlot *slot;
	bool		found;

	if (!OidIsValid(pk))
		return false;
	idx = index_open(pk, AccessShareLock);
	slot = table_slot_create(endpoints, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(id));
	scan = index_beginscan(endpoints, idx, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	return found;
}

/*
 * Find and lock key's row: false when it is not there, not visible, held
 * by someone else, changed by this transaction since the snapshot, or
 * (the lock follows updates) no longer of that key, byte for byte.
 */
static bool
lock_key(PgcbRowsStatement *stmt, Relation pk, Snapshot snapshot, const StatsAtts *sa,
		 const StatsKey *k, TupleTableSlot *slot, LockWaitPolicy wait, ItemPointer locked)
{
	bool		isnull;
	Datum		d;
	char	   *event_type;
	IndexScanDesc scan;
	ScanKeyData keys[3];
	bool		found;
	bool		held = false;
	ItemPointerData tid;
	Oid			coll = pk->rd_indcollation[1];

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(k->endpoint_id));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, coll, F_TEXTEQ,
						   CStringGetTextDatum(k->event_type));
	ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_TIMESTAMPTZ_EQ, TimestampTzGetDatum(k->minute));
	scan = index_beginscan(stmt->rri[0]->ri_RelationDesc, pk, snapshot, 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
		tid = slot->tts_tid;
	index_endscan(scan);
	if (!found)
		return false;
	ExecClearTuple(slot);
	if (!pgcb_rows_lock(stmt, 0, &tid, slot, wait, &held))
		return false;
	/* as FOR UPDATE rechecks its WHERE on the version it locked */
	d = slot_getattr(slot, sa->endpoint_id, &isnull);
	if (isnull || DatumGetInt32(d) != k->endpoint_id)
		return false;
	d = slot_getattr(slot, sa->minute, &isnull);
	if (isnull || DatumGetTimestampTz(d) != k->minute)
		return false;
	d = slot_getattr(slot, sa->event_type, &isnull);
	if (isnull)
		return false;
	event_type = TextDatumGetCString(d);
	if (strcmp(event_type, k->event_type) != 0)
		return false;
	*locked = slot->tts_tid;
	return true;
}

/* The locked row in slot plus key k, into newslot. */
static void
form_sum(const StatsAtts *sa, TupleTableSlot *slot, TupleTableSlot *newslot, const StatsKey *k)
{
	Datum	   *v;
	bool	   *nul;
	Datum		hist[PGCB_HIST_BUCKETS];

	slot_getallattrs(slot);
	ExecClearTuple(newslot);
	v = newslot->tts_values;
	nul = newslot->tts_isnull;
	memcpy(v, slot->tts_values, sizeof(Datum) * slot->tts_tupleDescriptor->natts);
	memcpy(nul, slot->tts_isnull, sizeof(bool) * slot->tts_tupleDescriptor->natts);
#define ADD_INT64(att, x) \
	v[(att) - 1] = Int64GetDatum(add_int64(nul[(att) - 1] ? 0 : DatumGetInt64(v[(att) - 1]), (x))), \
	nul[(att) - 1] = false
	ADD_INT64(sa->attempts, k->attempts);
	ADD_INT64(sa->delivered, k->delivered);
	ADD_INT64(sa->failed, k->failed);
	ADD_INT64(sa->dead, k->dead);
#undef ADD_INT64
	v[sa->latency_sum_ms - 1] =
		Float8GetDatum(float8_pl(nul[sa->latency_sum_ms - 1] ? 0 : DatumGetFloat8(v[sa->latency_sum_ms - 1]),
								 k->latency_sum_ms));
	nul[sa->latency_sum_ms - 1] = false;
	/* greatest(): a NULL maximum is ignored */
	if (nul[sa->latency_max_ms - 1] || DatumGetFloat8(v[sa->latency_max_ms - 1]) < k->latency_max_ms)
		v[sa->latency_max_ms - 1] = Float8GetDatum(k->latency_max_ms);
	nul[sa->latency_max_ms - 1] = false;
	for (int b = 0; b < PGCB_HIST_BUCKETS; b++)
		hist[b] = Int64GetDatum(k->hist[b]);
	v[sa->latency_hist - 1] =
		DirectFunctionCall2(histogram_add, v[sa->latency_hist - 1],
							PointerGetDatum(construct_array(hist, PGCB_HIST_BUCKETS, INT8OID, 8,
															FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)));
	/* coalesce(new, old) */
	if (k->last_error != NULL)
	{
		v[sa->last_error - 1] = CStringGetTextDatum(k->last_error);
		nul[sa->last_error - 1] = false;
	}
	ExecStoreVirtualTuple(newslot);
}

static bool
has_write_triggers(Relation rel)
{
	TriggerDesc *t = rel->trigdesc;

	return t != NULL &&
		(t->trig_insert_before_row || t->trig_insert_after_row || t->trig_insert_instead_row ||
		 t->trig_insert_before_statement || t->trig_insert_after_statement ||
		 t->trig_update_before_row || t->trig_update_after_row || t->trig_update_instead_row ||
		 t->trig_update_before_statement || t->trig_update_after_statement);
}

/* The step: in one subtransaction of the cycle (queue.c). */
static void
stats_fast_step(void *arg)
{
	StatsFast  *sf = (StatsFast *) arg;
	LockWaitPolicy wait = pgcb_queue_skip_locked() ? LockWaitSkip : LockWaitBlock;
	PgcbSession session;
	Relation	rel;
	Relation	endpoints;
	Relation	pk;
	CmdType		cmd = CMD_UPDATE;
	List	   *cols;
	PgcbRowsStatement stmt;
	StatsAtts	sa;
	StatsKeys	keys;
	TupleTableSlot *slot;
	TupleTableSlot *newslot;
	Snapshot	snapshot;
	bool		all = true;

	/* the keys of this cycle: few, one per (endpoint, event type, minute) */
	if (!merge_docs(sf->docs, sf->n, &keys) || keys.n == 0)
		return;

	pgcb_session_enter(&session);
	rel = table_open(pgcb_session_relid("callback_stats"), RowExclusiveLock);
	endpoints = table_open(pgcb_session_relid("callback_endpoints"), AccessShareLock);
	if (has_write_triggers(rel) || !OidIsValid(RelationGetPrimaryKeyIndex(rel)))
	{
		table_close(endpoints, AccessShareLock);
		table_close(rel, RowExclusiveLock);
		pgcb_session_leave(&session);
		return;
	}
	pgcb_rows_check(rel, CMD_UPDATE, "stats");
	sa.minute = pgcb_rows_column(rel, "minute", TIMESTAMPTZOID);
	sa.endpoint_id = pgcb_rows_column(rel, "endpoint_id", INT4OID);
	sa.event_type = pgcb_rows_column(rel, "event_type", TEXTOID);
	sa.attempts = pgcb_rows_column(rel, "attempts", INT8OID);
	sa.delivered = pgcb_rows_column(rel, "delivered", INT8OID);
	sa.failed = pgcb_rows_column(rel, "failed", INT8OID);
	sa.dead = pgcb_rows_column(rel, "dead", INT8OID);
	sa.latency_sum_ms = pgcb_rows_column(rel, "latency_sum_ms", FLOAT8OID);
	sa.latency_max_ms = pgcb_rows_column(rel, "latency_max_ms", FLOAT8OID);
	sa.latency_hist = pgcb_rows_column(rel, "latency_hist", INT8ARRAYOID);
	sa.last_error = pgcb_rows_column(rel, "last_error", TEXTOID);
	cols = list_make4_int(sa.attempts, sa.delivered, sa.failed, sa.dead);
	cols = lappend_int(cols, sa.latency_sum_ms);
	cols = lappend_int(cols, sa.latency_max_ms);
	cols = lappend_int(cols, sa.latency_hist);
	cols = lappend_int(cols, sa.last_error);

	/* our own earlier steps (this cycle's write-back) must be seen */
	PushActiveSnapshot(GetTransactionSnapshot());
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	pgcb_rows_begin(&stmt, snapshot, 1, &rel, &cmd, &cols);
	pk = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	slot = table_slot_create(rel, NULL);
	newslot = table_slot_create(rel, NULL);

	/* every key first: all or nothing */
	keys.tid = palloc0(sizeof(ItemPointerData) * keys.n);
	for (int i = 0; i < keys.n && all; i++)
	{
		CHECK_FOR_INTERRUPTS();
		all = endpoint_exists(endpoints, snapshot, keys.k[i].endpoint_id) &&
			lock_key(&stmt, pk, snapshot, &sa, &keys.k[i], slot, wait, &keys.tid[i]);
		ExecClearTuple(slot);
		/* two keys of one row (a collation that is not byte-wise): the SQL */
		for (int j = 0; j < i && all; j++)
			all = !ItemPointerEquals(&keys.tid[j], &keys.tid[i]);
	}
	if (all)
	{
		for (int i = 0; i < keys.n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			/* locked by us above: its latest version, read back */
			if (!table_tuple_fetch_row_version(rel, &keys.tid[i], SnapshotAny, slot))
				elog(ERROR, "pg_callback: a stats row locked by this transaction is gone");
			form_sum(&sa, slot, newslot, &keys.k[i]);
			(void) pgcb_rows_update(&stmt, 0, slot, newslot);
			ExecClearTuple(slot);
			ExecClearTuple(newslot);
			ResetPerTupleExprContext(stmt.estate);
		}
		sf->written = true;
	}

	ExecDropSingleTupleTableSlot(slot);
	ExecDropSingleTupleTableSlot(newslot);
	index_close(pk, AccessShareLock);
	pgcb_rows_end(&stmt);
	table_close(endpoints, NoLock);
	table_close(rel, NoLock);
	PopActiveSnapshot();
	pgcb_session_leave(&session);
}

bool
pgcb_stats_add_in_place(char *const *docs, int n)
{
	StatsFast	sf;

	sf.docs = docs;
	sf.n = n;
	sf.written = false;
	if (n <= 0)
		return false;
	/* a lock timeout: nothing written, PLAN_STATS decides */
	if (!pgcb_queue_run_step(stats_fast_step, &sf))
		return false;
	return sf.written;
}
