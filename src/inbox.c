/*
 * inbox.c
 *		callback_inbox (sql/upgrade-1.1/58-inbox.sql): with callback.inbox
 *		on, queue_insert.c writes new deliveries there, where they cost a
 *		heap tuple and no index entry; the worker, at the start of each
 *		cycle, moves them into callback_queue (move_inbox below).
 *
 * This file holds what is not queue_insert.c's: the counter that orders
 * one backend's inbox rows, and the move, callback._move_inbox(), which the
 * worker calls at the start of each cycle.
 *
 * The move is C rather than one INSERT ... SELECT FROM (DELETE ...
 * RETURNING) ORDER BY: the statement cost 40k instructions per row, half of
 * it the executor's projections, the CTE and a sort of whole rows with
 * their bodies.  Here a scan keeps the keys of the oldest rows (a bounded
 * heap), sorts them, and each row is deleted from the inbox and written into
 * the queue through queue_insert.c's multi-insert.
 *
 * Order: rows move in the order they were written (written_at, then the
 * transaction and the backend's counter for rows of the same microsecond):
 * the order nextval gives queue ids on the direct path.  A prefix of that
 * order, moved now, never leaves behind a row that must come first: such a
 * row was written before the other's transaction committed, so it is older
 * and had committed before our snapshot was taken.
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "common/hashfn.h"
#include "lib/binaryheap.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "inbox.h"
#include "inbox_pack.h"
#include "pg_callback.h"
#include "queue.h"
#include "queue_insert.h"
#include "session.h"

PG_FUNCTION_INFO_V1(inbox_seq);
PG_FUNCTION_INFO_V1(move_inbox);

/*
 * One mover at a time: SHARE UPDATE EXCLUSIVE on the inbox, taken without
 * waiting and let go when the move ends.  It conflicts with itself (and
 * VACUUM, ANALYZE), not with the producers' inserts.  Not an advisory
 * lock: any role may take one of those and stop every move; LOCK TABLE in
 * this mode needs more than SELECT on the inbox, which only its owner has
 * (a database owner's ANALYZE takes it too, while it runs).
 */
#define MOVER_LOCK ShareUpdateExclusiveLock

/*
 * Most rows one call looks at, whatever waits: the keys kept while
 * scanning (40 bytes each) stay within 40 MB.  A larger backlog moves in
 * more calls, each reading what is left.  The limits a caller gives count
 * events (a pack, inbox_pack.c, carries up to a few dozen); this one rows,
 * as it bounds the keys' memory.
 */
#define MOVE_CAP 1000000

/* The order of this backend's inbox rows; with xact, of all of them. */
static int64 next_seq = 0;

Datum
inbox_seq(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(++next_seq);
}

Oid
pgcb_inbox_relid_if_any(void)
{
	Oid			nsp = get_namespace_oid(PGCB_SCHEMA_NAME, true);

	return OidIsValid(nsp) ? get_relname_relid("callback_inbox", nsp) : InvalidOid;
}

Oid
pgcb_inbox_relid(void)
{
	Oid			relid = pgcb_inbox_relid_if_any();

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.inbox is on, but this database's pg_callback has no callback_inbox"),
				 errhint("Run ALTER EXTENSION pg_callback UPDATE, or turn callback.inbox off.")));
	return relid;
}

/* The last time a failed move was logged: at most once a minute. */
static TimestampTz last_failure_logged = 0;

typedef struct MoveStep
{
	Oid			fn;
	int			max;
	uint64		n;
} MoveStep;

/* As the extension's owner (session.c), whoever runs the cycle. */
static void
move_step(void *arg)
{
	MoveStep   *ms = (MoveStep *) arg;
	PgcbSession sess;

	pgcb_session_enter(&sess);
	ms->n = (uint64) DatumGetInt64(OidFunctionCall1(ms->fn, Int32GetDatum(ms->max)));
	pgcb_session_leave(&sess);
}

/*
 * Whether the inbox has no page at all (never written, or truncated by
 * vacuum): then there is nothing to move, and a database that does not use
 * the inbox pays no subtransaction for it per cycle.  A lock we cannot have
 * at once (TRUNCATE under way) also means: not now.
 */
bool
pgcb_inbox_surely_empty(Oid relid)
{
	Relation	rel;
	bool		empty;

	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return true;
	rel = relation_open(relid, NoLock);
	empty = RelationGetNumberOfBlocks(rel) == 0;
	relation_close(rel, AccessShareLock);
	return empty;
}

/*
 * A failure of the move (any error but a lock timeout, a cancel or a
 * shutdown) is the move's alone: it is logged, once a minute while it lasts
 * (the inbox's backlog in callback_health tells how long), and the cycle
 * goes on to deliver what the queue holds, rather than ending the worker,
 * which would meet the same error after each restart.
 */
uint64
pgcb_inbox_move(int max)
{
	Oid			argtypes[1] = {INT4OID};
	Oid			relid = pgcb_inbox_relid_if_any();
	MoveStep	ms;
	ErrorData  *edata;
	TimestampTz now;

	/* absent below 1.1, or empty: nothing to move */
	if (!OidIsValid(relid) || pgcb_inbox_surely_empty(relid))
		return 0;
	/* called while this backend queues events (process_callbacks() from a cast): later */
	if (pgcb_queue_busy())
		return 0;
	/* by name and schema, not search_path */
	ms.fn = LookupFuncName(list_make2(makeString(PGCB_SCHEMA_NAME), makeString("_move_inbox")),
						   1, argtypes, true);
	if (!OidIsValid(ms.fn))
		return 0;
	ms.max = max;
	ms.n = 0;
	if (pgcb_queue_try_step(move_step, &ms, &edata))
		return ms.n;
	if (edata == NULL)
		return 0;				/* a lock timeout: the next cycle moves */
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(last_failure_logged, now, 60 * 1000))
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("pg_callback: moving callback_inbox into callback_queue failed: %s",
						edata->message),
				 errdetail("The inbox's rows wait (callback_health counts them); deliveries already in the queue go on."),
				 errhint("Fix the cause; the worker tries again at each cycle and logs this once a minute while it fails.")));
		last_failure_logged = now;
	}
	FreeErrorData(edata);
	return 0;
}

/* An inbox row's place in the order, and where it is. */
typedef struct MoveKey
{
	TimestampTz written_at;
	int64		xact;
	int64		seq;
	ItemPointerData tid;
	int32		events;			/* what the row carries (at least 1 counted) */
} MoveKey;

static int
key_cmp(const MoveKey *a, const MoveKey *b)
{
	if (a->written_at != b->written_at)
		return a->written_at < b->written_at ? -1 : 1;
	if (a->xact != b->xact)
		return a->xact < b->xact ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return ItemPointerCompare((ItemPointer) &a->tid, (ItemPointer) &b->tid);
}

static int
key_qsort_cmp(const void *a, const void *b)
{
	return key_cmp((const MoveKey *) a, (const MoveKey *) b);
}

/* binaryheap keeps the largest on top: the youngest of the oldest kept */
static int
key_heap_cmp(Datum a, Datum b, void *arg)
{
	return key_cmp((const MoveKey *) DatumGetPointer(a), (const MoveKey *) DatumGetPointer(b));
}

/* The inbox's columns, by name: the table is the extension's own. */
typedef struct InboxAtts
{
	AttrNumber	xact;
	AttrNumber	seq;
	AttrNumber	event_id;
	AttrNumber	endpoint_id;
	AttrNumber	event_type;
	AttrNumber	body;
	AttrNumber	ordering_key;
	AttrNumber	traceparent;
	AttrNumber	tracestate;
	AttrNumber	created_at;
	AttrNumber	written_at;
	AttrNumber	events;
	AttrNumber	more;
} InboxAtts;

static AttrNumber
inbox_att(Relation rel, const char *name)
{
	AttrNumber	attnum = attnameAttNum(rel, name, false);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.callback_inbox has no column \"%s\"", name),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));
	return attnum;
}

static void
inbox_atts(Relation rel, InboxAtts *a)
{
	a->xact = inbox_att(rel, "xact");
	a->seq = inbox_att(rel, "seq");
	a->event_id = inbox_att(rel, "event_id");
	a->endpoint_id = inbox_att(rel, "endpoint_id");
	a->event_type = inbox_att(rel, "event_type");
	a->body = inbox_att(rel, "body");
	a->ordering_key = inbox_att(rel, "ordering_key");
	a->traceparent = inbox_att(rel, "traceparent");
	a->tracestate = inbox_att(rel, "tracestate");
	a->created_at = inbox_att(rel, "created_at");
	a->written_at = inbox_att(rel, "written_at");
	a->events = inbox_att(rel, "events");
	a->more = inbox_att(rel, "more");
}

/* A NOT NULL column of the slot's row (the table says so; checked anyway). */
static Datum
required(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	if (isnull)
		elog(ERROR, "callback.callback_inbox: column %d is NULL", attnum);
	return d;
}

static char *
optional_cstring(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * Scan the inbox: the keys of the oldest rows visible to snapshot, at most
 * cap of them, into *keys (palloc'd, grown as rows come: a cycle that finds
 * a few rows allocates for a few); returns how many events the visible
 * rows carry, and in *nkept how many keys were kept.  Past cap rows, a
 * bounded heap keeps the cap oldest seen so far.
 */
static int64
scan_oldest(Relation rel, Snapshot snapshot, const InboxAtts *a, MoveKey **keys, int cap,
			int *nkept)
{
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
	binaryheap *heap = NULL;
	int64		visible = 0;
	int			n = 0;
	int			size = Min(cap, 1024);

	*keys = palloc(sizeof(MoveKey) * size);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		MoveKey		k;

		CHECK_FOR_INTERRUPTS();
		k.written_at = DatumGetTimestampTz(required(slot, a->written_at));
		k.xact = DatumGetInt64(required(slot, a->xact));
		k.seq = DatumGetInt64(required(slot, a->seq));
		k.tid = slot->tts_tid;
		/*
		 * A wrong count is the move's to report (row_more); here it weighs
		 * what a pack can carry at most, so that a count edited by hand
		 * cannot make one call take the whole inbox (and fail on it).
		 */
		k.events = DatumGetInt32(required(slot, a->events));
		k.events = Min(Max(k.events, 1), PGCB_PACK_MAX_EVENTS);
		visible += k.events;
		if (n < cap)
		{
			if (n == size)
			{
				size = (size > cap / 2) ? cap : size * 2;
				*keys = repalloc(*keys, sizeof(MoveKey) * size);
			}
			(*keys)[n++] = k;
			continue;
		}
		if (heap == NULL)
		{
			/* cap rows kept: from now on, only a row older than the youngest kept */
			heap = binaryheap_allocate(cap, key_heap_cmp, NULL);
			for (int i = 0; i < n; i++)
				binaryheap_add_unordered(heap, PointerGetDatum(&(*keys)[i]));
			binaryheap_build(heap);
		}
		{
			MoveKey    *top = (MoveKey *) DatumGetPointer(binaryheap_first(heap));

			if (key_cmp(&k, top) < 0)
			{
				*top = k;
				binaryheap_replace_first(heap, PointerGetDatum(top));
			}
		}
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	if (heap != NULL)
		binaryheap_free(heap);
	*nkept = n;
	return visible;
}

/*
 * Keys (endpoint, ordering key) held back in this call: one of their rows
 * could not be deleted (see move_one), so their later rows wait too, and
 * their order stays.  Rows with no key have no order to keep.
 */
typedef struct HeldKey
{
	int32		endpoint_id;
	uint32		key_hash;		/* two keys of one hash: both held, which only delays */
} HeldKey;

static HeldKey
held_key(int32 endpoint_id, const char *key)
{
	HeldKey		h;

	memset(&h, 0, sizeof(h));
	h.endpoint_id = endpoint_id;
	h.key_hash = DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key)));
	return h;
}

static bool
is_held(HTAB *held, int32 endpoint_id, const char *key)
{
	HeldKey		h;

	if (key == NULL || held == NULL)
		return false;
	h = held_key(endpoint_id, key);
	return hash_search(held, &h, HASH_FIND, NULL) != NULL;
}

static void
hold(HTAB **held, MemoryContext cxt, int32 endpoint_id, const char *key)
{
	HeldKey		h;

	if (key == NULL)
		return;
	if (*held == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(HeldKey);
		ctl.entrysize = sizeof(HeldKey);
		ctl.hcxt = cxt;
		*held = hash_create("pg_callback keys held back", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	h = held_key(endpoint_id, key);
	(void) hash_search(*held, &h, HASH_ENTER, NULL);
}

/*
 * A pack's more (inbox_pack.c), checked against its events before anything
 * moves: a row whose entries do not add up is an error naming it, and the
 * move's subtransaction keeps every row where it was.
 */
static const struct varlena *
row_more(TupleTableSlot *slot, const InboxAtts *a, int32 events)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, a->more, &isnull);
	const struct varlena *more = isnull ? NULL : (const struct varlena *) PG_DETOAST_DATUM_PACKED(d);
	const char *problem;

	if (events < 1 || (events == 1) != (more == NULL))
		problem = psprintf("events is %d and more is %s", events, more ? "not NULL" : "NULL");
	else
		problem = more ? pgcb_pack_check(more, events - 1) : NULL;
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("callback.callback_inbox row %s (event_id %s) holds a corrupt pack: %s",
						DatumGetCString(DirectFunctionCall1(tidout, PointerGetDatum(&slot->tts_tid))),
						DatumGetCString(DirectFunctionCall1(uuid_out, required(slot, a->event_id))),
						problem),
				 errdetail("Nothing was moved; the row and the rest of the inbox wait."),
				 errhint("Fix or delete that row of callback.callback_inbox by hand (its events are lost with it).")));
	return more;
}

/*
 * Delete the row at key->tid and write it into the queue; the events it
 * carried, 0 if not moved.
 * A row we could not delete is not moved, and neither are the later rows of
 * its key in this call (*held, in held_cxt): one locked by a transaction
 * still open is not waited for; one deleted since our snapshot may have
 * been moved by another mover whose queue row our snapshot does not see
 * (a REPEATABLE READ caller of process_callbacks()), and our claim would
 * then take the key's next row for its head; one updated by hand moves, as
 * its new version, at a later call, ahead of its key's later rows.
 */
static int32
move_one(Relation rel, Snapshot snapshot, const InboxAtts *a, const MoveKey *key,
		 TupleTableSlot *slot, HTAB **held, MemoryContext held_cxt)
{
	ItemPointerData tid = key->tid;
	TM_FailureData tmfd;
	TM_Result	res;
	PgcbEventRow ev;
	text	   *body;
	int32		endpoint_id;
	int32		events;
	const struct varlena *more;
	TimestampTz created_at;

	if (!table_tuple_fetch_row_version(rel, &tid, snapshot, slot))
		return 0;
	endpoint_id = DatumGetInt32(required(slot, a->endpoint_id));
	memset(&ev, 0, sizeof(ev));
	ev.ordering_key = optional_cstring(slot, a->ordering_key);
	if (is_held(*held, endpoint_id, ev.ordering_key))
		return 0;
	events = DatumGetInt32(required(slot, a->events));
	more = row_more(slot, a, events);
	res = table_tuple_delete(rel, &tid, GetCurrentCommandId(true), snapshot, InvalidSnapshot,
							 false, &tmfd, false);
	if (res != TM_Ok)
	{
		hold(held, held_cxt, endpoint_id, ev.ordering_key);
		return 0;
	}

	memcpy(&ev.event_id, DatumGetUUIDP(required(slot, a->event_id)), sizeof(pg_uuid_t));
	ev.event_type = TextDatumGetCString(required(slot, a->event_type));
	body = DatumGetTextPP(required(slot, a->body));
	ev.body = VARDATA_ANY(body);
	ev.body_len = VARSIZE_ANY_EXHDR(body);
	ev.body_text = (const struct varlena *) body;	/* stored as it is */
	ev.traceparent = optional_cstring(slot, a->traceparent);
	ev.tracestate = optional_cstring(slot, a->tracestate);
	created_at = DatumGetTimestampTz(required(slot, a->created_at));
	pgcb_queue_insert_moved(&ev, endpoint_id, ev.ordering_key != NULL, created_at);
	if (more != NULL)
	{
		/* a pack: its other events, in order, each its own queue row */
		const char *pos = VARDATA_ANY(more);
		StringInfoData text_buf;

		initStringInfo(&text_buf);
		for (int32 i = 1; i < events; i++)
		{
			CHECK_FOR_INTERRUPTS();
			pgcb_pack_next(&pos, &ev.event_id, &ev.body, &ev.body_len);
			/* as a text, in one buffer reused per event */
			resetStringInfo(&text_buf);
			appendStringInfoSpaces(&text_buf, VARHDRSZ);
			appendBinaryStringInfoNT(&text_buf, ev.body, ev.body_len);
			SET_VARSIZE(text_buf.data, text_buf.len);
			ev.body_text = (const struct varlena *) text_buf.data;
			pgcb_queue_insert_moved(&ev, endpoint_id, false, created_at);
		}
	}
	return events;
}

/*
 * callback._move_inbox(max_events integer) returns bigint: move committed
 * inbox rows into callback_queue as pending deliveries, in the order they
 * were written; returns how many events moved (a pack, one inbox row,
 * becomes as many queue rows as it carries events, in order).  Its limits
 * count events, so that a move's transaction stays as large as asked
 * however many events a row carries:
 *	- up to max_events waiting: all of them;
 *	- more (a backlog, after the worker was away): the oldest rows that
 *	  carry half of them, max_events at least (up to the pack that crosses
 *	  it; MOVE_CAP rows at most).  A call that leaves rows behind has moved
 *	  max_events at least, which tells the worker to go on, and a backlog
 *	  of N moves in about log2 N calls, each reading what is left once.
 * One mover at a time in a database (the others return 0 at once), so that
 * queue ids follow that order.  An endpoint dropped meanwhile leaves rows
 * that the orphan sweep makes dead letters ("endpoint dropped"), as it does
 * for the trigger's own rows.
 */
Datum
move_inbox(PG_FUNCTION_ARGS)
{
	int32		max_events;
	Oid			relid;
	int			cap;
	Relation	rel;
	InboxAtts	atts;
	Snapshot	snapshot;
	MemoryContext cxt;
	MemoryContext old;
	MoveKey    *keys;
	int			nkept;
	int64		visible;
	int64		want;
	int64		taken = 0;
	int64		moved = 0;
	bool		batch;
	TupleTableSlot *slot;
	MemoryContext row_cxt;
	HTAB	   *held = NULL;

	if (PG_ARGISNULL(0) || PG_GETARG_INT32(0) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be at least 1, not %s",
						PG_ARGISNULL(0) ? "NULL" : psprintf("%d", PG_GETARG_INT32(0))),
				 errhint("Give how many waiting events may move at once, such as 2000.")));
	max_events = PG_GETARG_INT32(0);
	if (pgcb_queue_busy())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot move callback_inbox while this session is queueing events"),
				 errdetail("callback._move_inbox() was called from SQL run while events were being queued, such as a cast called to build an event's body."),
				 errhint("Move the inbox in a statement of its own, as the worker does.")));
	relid = pgcb_inbox_relid();
	if (!ConditionalLockRelationOid(relid, MOVER_LOCK))
		PG_RETURN_INT64(0);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback inbox move",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	rel = table_open(relid, RowExclusiveLock);
	inbox_atts(rel, &atts);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());

	cap = Max(max_events, MOVE_CAP);
	cap = Min(cap, (int) (MaxAllocSize / sizeof(MoveKey)));
	visible = scan_oldest(rel, snapshot, &atts, &keys, cap, &nkept);
	want = visible <= max_events ? visible : Max(max_events, visible / 2);
	qsort(keys, nkept, sizeof(MoveKey), key_qsort_cmp);

	/*
	 * One heap multi-insert per 1,000 rows or 64 kB (queue_insert.c's
	 * batch, which copies each row it buffers); a row's own strings go with
	 * row_cxt.
	 */
	slot = table_slot_create(rel, NULL);
	row_cxt = AllocSetContextCreate(cxt, "pg_callback inbox row", ALLOCSET_DEFAULT_SIZES);
	batch = pgcb_queue_batch_begin();
	/* the oldest rows until they carry want events, the last one whole */
	for (int i = 0; i < nkept && taken < want; i++)
	{
		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(row_cxt);
		taken += keys[i].events;
		moved += move_one(rel, snapshot, &atts, &keys[i], slot, &held, cxt);
		ExecClearTuple(slot);
		MemoryContextSwitchTo(cxt);
		MemoryContextReset(row_cxt);
	}
	if (batch)
		pgcb_queue_batch_end();
	ExecDropSingleTupleTableSlot(slot);

	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);

	/*
	 * Let the next mover in now, not at our commit: a caller that stays in
	 * its transaction (process_callbacks() waiting for answers) must not
	 * stop the worker's moves, nor hold off VACUUM.  The order holds: a
	 * mover that starts before we commit finds the rows we moved deleted by
	 * a transaction in progress, and holds their keys back (move_one).
	 */
	UnlockRelationOid(relid, MOVER_LOCK);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	PG_RETURN_INT64(moved);
}
