/*
 * queue_insert.c
 *		Insert deliveries into callback.callback_queue: the tuple formed
 *		here, written through the table AM and the queue's indexes, with no
 *		SPI, planner or executor start-up per row.  This file is the only
 *		one that knows how a delivery is stored; a new queue layout changes
 *		it alone.
 *
 * What each row gets, and why it is the same as INSERT INTO callback_queue
 * (event_id, endpoint_id, event_type, body) would give:
 *	- the four given columns;
 *	- every other column its default expression as the catalog has it
 *	  (build_column_default, the rewriter's own: the identity's nextval,
 *	  'pending', 0, now()), prepared once per backend and evaluated per row;
 *	  no default means NULL.
 *	- NOT NULL and CHECK constraints by ExecConstraints; the indexes,
 *	  partial ones' predicates included, as ExecInsertIndexTuples does
 *	  (insert_index_entries); TOAST,
 *	  WAL and visibility by the table AM.
 * What an INSERT would do and this does not is refused when the queue has
 * it (a trigger, forced row security, a generated column, another relkind):
 * an error, not a silent difference.  1.1 has none of them.
 *
 * Lifetimes:
 *	- per backend: the queue's OID, the prepared defaults, the list of its
 *	  indexes and the partial ones' predicates and expressions, and what the
 *	  executor needs to check and index a row (an EState whose per-tuple
 *	  context is reset per row, a ResultRelInfo, a virtual slot over a copy
 *	  of the descriptor, which pins nothing), dropped by a relcache
 *	  invalidation of the queue (ALTER TABLE, CREATE or DROP INDEX, DROP
 *	  EXTENSION): all of it follows from the table's definition, and making
 *	  it per transaction cost a single-row transaction about 2k instructions;
 *	- per top-level transaction: the open relation (its pointer set into
 *	  the ResultRelInfo), and each index once a row needs it (an index that is not ready for
 *	  inserts then stays skipped for the transaction: CREATE INDEX
 *	  CONCURRENTLY waits for our lock before it makes an index ready).
 *	  They are opened under TopTransactionResourceOwner, so a
 *	  savepoint rolled back does not release them under our feet (the
 *	  RowExclusiveLock is then held to the end of the top-level transaction,
 *	  not of the savepoint: harmless for that lock mode), and closed at
 *	  pre-commit / pre-prepare; at abort the resource owner releases them
 *	  and we only forget the pointers.  A relcache invalidation of the queue
 *	  within the transaction makes the next insert reopen them.
 * Invalidation callbacks only set flags: they can run in the middle of an
 * insert (any lock taken may read the invalidation queue), so nothing is
 * freed until the next call starts.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "guc.h"
#include "inbox.h"
#include "inbox_pack.h"
#include "pg_callback.h"
#include "session.h"
#include "queue_bulk.h"
#include "queue_insert.h"

/* Per backend: what the catalog says about the queue's columns. */
typedef struct QueueShape
{
	MemoryContext cxt;
	Oid			relid;
	bool		inbox;			/* relid is callback_inbox */
	int			natts;
	AttrNumber	att_event_id;
	AttrNumber	att_endpoint_id;
	AttrNumber	att_event_type;
	AttrNumber	att_body;
	AttrNumber	att_ordering_key;	/* the event's optional attributes */
	AttrNumber	att_traceparent;
	AttrNumber	att_tracestate;
	AttrNumber	att_created_at;	/* set from the inbox row by a move */
	AttrNumber	att_events;		/* the inbox's pack columns (inbox_pack.c) */
	AttrNumber	att_more;
	ExprState **defaults;		/* [natts]; NULL: given, dropped or no default */
	ExprContext *econtext;		/* evaluates the defaults; reset per row */
	TupleDesc	desc;			/* a copy (pins nothing): the slots' */
	bool		check_constraints;
	EState	   *estate;			/* constraints, index entries; reset per row */
	ResultRelInfo *rri;			/* ri_RelationDesc set at each open */
	TupleTableSlot *slot;		/* the single-row path's row ... */
	TupleTableSlot *heap_slot;	/* ... and its tuple, formed once */
	int			nindexes;
	Oid		   *index_oid;		/* [nindexes]: the queue's indexes ... */
	ExprState **index_pred;		/* ... and partial ones' predicates, ready to run */
	List	  **index_exprs;	/* ... and expressions' states (NIL: none) */
	Relation   *index_rel;		/* [nindexes]: the open transaction's, see QueueOpen */
	IndexInfo **index_info;
	bool	   *index_skip;
	PgcbBulk   *bulk;			/* multi-insert buffer, made when first needed */
} QueueShape;

/*
 * Per top-level transaction: the open queue.  The per-index arrays are the
 * shape's, cleared at each open: only the relations and IndexInfos in them
 * are the transaction's.
 */
typedef struct QueueOpen
{
	Relation	rel;
	bool		inbox;			/* rel is callback_inbox */
	EState	   *estate;			/* the shape's */
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	bool		check_constraints;
	int			nindexes;		/* shape's, when opened */
	Relation   *index_rel;		/* [nindexes]: NULL until a row needs it */
	IndexInfo **index_info;
	bool	   *index_skip;		/* not ready for inserts (CREATE INDEX CONCURRENTLY) */
} QueueOpen;

static QueueShape *shape = NULL;
static bool shape_stale = false;

/*
 * Invalidations that may concern the shape, counted: one that arrives
 * while build_shape runs (any lock it takes reads them) finds no shape to
 * mark, so the build compares the count before and after instead.
 */
static uint64 shape_invals = 0;
static QueueOpen open_storage;	/* no palloc per transaction */
static QueueOpen *xact_open = NULL;
static bool xact_open_stale = false;
static bool callbacks_registered = false;

/*
 * The subtransaction whose rows the buffer holds (one at a time): its
 * rollback forgets them.  The buffer outlives transactions; its rows never
 * do (written before the trigger call returns, forgotten at an abort).
 */
static SubTransactionId bulk_subid = InvalidSubTransactionId;

/*
 * The batch of pgcb_queue_batch_begin .. _end: where its rows are buffered.
 * Only inserts made in the batch's own subtransaction and trigger depth are
 * buffered; anything nested (a type's output function running SQL while a
 * body is built) inserts at once, so that its own savepoint or statement
 * sees exactly what it would without the batch.
 */
static bool batch_active = false;
static SubTransactionId batch_subid;
static int32 batch_trigger_depth;

/*
 * While a row is formed as the queue's owner (become_owner) or the shape is
 * built: the subtransaction doing it.  Nested queueing is refused meanwhile
 * (refuse_nested).
 */
static SubTransactionId forming_subid = InvalidSubTransactionId;

static void
queue_relcache_callback(Datum arg, Oid relid)
{
	shape_invals++;
	if (shape == NULL)
		return;
	if (relid == InvalidOid || relid == shape->relid)
	{
		shape_stale = true;
		xact_open_stale = true;
	}
}

/*
 * A function replaced or dropped: the shape's prepared defaults, index
 * expressions and predicates and the executor state's CHECK expressions
 * may have inlined or folded it (as a cached plan may: plancache.c listens
 * to the same cache).  Rare enough to rebuild for any.
 */
static void
queue_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	shape_invals++;
	if (shape == NULL)
		return;
	shape_stale = true;
	xact_open_stale = true;
}

/*
 * A default, a constraint or an index expression of the queue that queues
 * an event, run while a row is formed or written (become_owner) or while
 * the shape is built (build_shape, which may fold an immutable default):
 * refused before anything is opened, closed or rebuilt, since the outer
 * row is formed in the slot, buffer and shape an inner one would reuse.
 */
static void
refuse_nested(void)
{
	if (forming_subid != InvalidSubTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot queue an event while a row of the queue is being formed"),
				 errdetail("A column default, a check constraint or an index expression of the queue's table queued an event."),
				 errhint("Queue the event from the producer's own code, not from the queue's definition.")));
}

static int
bulk_pending(void)
{
	return (shape != NULL && shape->bulk != NULL) ? pgcb_bulk_pending(shape->bulk) : 0;
}

static void
close_open(void)
{
	QueueOpen  *q = xact_open;
	ResourceOwner save = CurrentResourceOwner;

	/* a batch is flushed before its trigger call returns: never here */
	if (bulk_pending() > 0 || pgcb_pack_any_open())
		elog(ERROR, "pg_callback: queue rows buffered and not written at the end of a transaction");
	xact_open = NULL;
	xact_open_stale = false;
	/* released by the owner that holds them */
	CurrentResourceOwner = TopTransactionResourceOwner;
	/* the locks stay to the end of the transaction, as an INSERT's do */
	for (int i = 0; i < q->nindexes; i++)
		if (q->index_rel[i] != NULL)
			index_close(q->index_rel[i], NoLock);
	table_close(q->rel, NoLock);
	CurrentResourceOwner = save;
	/* the slot, EState and arrays are the shape's: they stay */
	ExecClearTuple(q->slot);
}

static void
queue_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		forming_subid = InvalidSubTransactionId;
		batch_active = false;
		pgcb_pack_discard();
		if (bulk_pending() > 0)
			pgcb_bulk_discard(shape->bulk);
	}
	if (xact_open == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			close_open();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PREPARE:
			/* the resource owner and TopTransactionContext take care of it */
			xact_open = NULL;
			xact_open_stale = false;
			break;
		default:
			break;
	}
}

static void flush_as_owner(QueueOpen *q);
static void close_packs_as_owner(QueueOpen *q);

/*
 * A subtransaction rolled back takes its buffered rows with it (they were
 * never written), and its batch.
 */
static void
queue_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	if (mySubid == forming_subid)
		forming_subid = InvalidSubTransactionId;
	if (batch_active && mySubid == batch_subid)
	{
		batch_active = false;
		/* packs are opened only in the batch's own subtransaction */
		pgcb_pack_discard();
	}
	if (bulk_pending() > 0 && bulk_subid == mySubid)
		pgcb_bulk_discard(shape->bulk);
}

static void
register_callbacks(void)
{
	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(queue_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, queue_proc_callback, (Datum) 0);
		RegisterXactCallback(queue_xact_callback, NULL);
		RegisterSubXactCallback(queue_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

/*
 * A move from the inbox (pgcb_queue_insert_moved) under way: rows go into
 * the queue whatever callback.inbox says, with the inbox row's created_at.
 */
static bool moving = false;
static TimestampTz moving_created_at;

/* Whether new rows go into the inbox now (callback.inbox), not the queue. */
static bool
target_is_inbox(void)
{
	return pgcb_inbox && !moving;
}

/*
 * The inbox, or the queue.  A database whose pg_callback predates the inbox
 * (1.0, awaiting ALTER EXTENSION UPDATE) while callback.inbox is on for the
 * whole server: its writes go into the queue, as they did, and the log says
 * so once per session.
 */
static pg_noinline Oid
lookup_target_relid(void)
{
	static bool fallback_logged = false;
	Oid			relid;

	if (!target_is_inbox())
		return pgcb_session_relid("callback_queue");
	relid = pgcb_inbox_relid_if_any();
	if (OidIsValid(relid))
		return relid;
	if (!fallback_logged)
	{
		ereport(LOG,
				(errmsg("pg_callback: callback.inbox is on, but this database's pg_callback has no callback_inbox; events go into callback_queue"),
				 errhint("Run ALTER EXTENSION pg_callback UPDATE in this database.")));
		fallback_logged = true;
	}
	return pgcb_session_relid("callback_queue");
}

static AttrNumber
given_attnum(Relation rel, const char *name)
{
	AttrNumber	attnum = attnameAttNum(rel, name, false);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.%s has no column \"%s\"", RelationGetRelationName(rel), name),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));
	return attnum;
}

static void
unsupported(Relation rel, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("callback.%s has %s, which pg_callback's queue insert does not support",
					RelationGetRelationName(rel), what),
			 errhint("Remove it: the table is the extension's own.")));
}

/* The queue must be what this file knows how to insert into. */
static void
check_queue(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trig = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		unsupported(rel, "a kind other than a plain table");
	if (trig != NULL &&
		(trig->trig_insert_before_row || trig->trig_insert_after_row ||
		 trig->trig_insert_instead_row || trig->trig_insert_before_statement ||
		 trig->trig_insert_after_statement || trig->trig_insert_new_table))
		unsupported(rel, "an INSERT trigger");
	/* the owner bypasses row security unless it is forced */
	if (rel->rd_rel->relrowsecurity && rel->rd_rel->relforcerowsecurity)
		unsupported(rel, "forced row level security");
	if (desc->constr && desc->constr->has_generated_stored)
		unsupported(rel, "a generated column");
}

static QueueShape *fill_shape(Relation rel, bool inbox, MemoryContext cxt);

static void
build_shape(Relation rel, bool inbox)
{
	MemoryContext cxt;
	MemoryContext old = CurrentMemoryContext;
	uint64		invals_before = shape_invals;

	if (shape != NULL)
	{
		/* never while a transaction has it open: see open_queue */
		Assert(xact_open == NULL);
		FreeExecutorState(shape->estate);
		MemoryContextDelete(shape->cxt);
		shape = NULL;
	}
	cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback queue shape",
								ALLOCSET_SMALL_SIZES);
	/* planning a default may run it (an immutable one is folded) */
	forming_subid = GetCurrentSubTransactionId();
	PG_TRY();
	{
		MemoryContextSwitchTo(cxt);
		shape = fill_shape(rel, inbox, cxt);
	}
	PG_CATCH();
	{
		/* nothing in it is held by a resource owner: the memory is all */
		forming_subid = InvalidSubTransactionId;
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	forming_subid = InvalidSubTransactionId;
	MemoryContextSwitchTo(old);
	/* an invalidation read while building: good for now, rebuilt next time */
	shape_stale = (shape_invals != invals_before);
}

/*
 * The shape of the table rel, in the current memory context cxt: column
 * numbers, prepared defaults and index expressions, the executor state.
 */
static QueueShape *
fill_shape(Relation rel, bool inbox, MemoryContext cxt)
{
	QueueShape *s;
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			save_userid;
	int			save_sec_context;

	s = palloc0(sizeof(QueueShape));
	s->cxt = cxt;
	s->relid = RelationGetRelid(rel);
	s->inbox = inbox;
	s->natts = desc->natts;
	s->att_event_id = given_attnum(rel, "event_id");
	s->att_endpoint_id = given_attnum(rel, "endpoint_id");
	s->att_event_type = given_attnum(rel, "event_type");
	s->att_body = given_attnum(rel, "body");
	/* 1.1's: absent while a 1.0 schema awaits ALTER EXTENSION UPDATE */
	s->att_ordering_key = attnameAttNum(rel, "ordering_key", false);
	s->att_traceparent = attnameAttNum(rel, "traceparent", false);
	s->att_tracestate = attnameAttNum(rel, "tracestate", false);
	s->att_created_at = attnameAttNum(rel, "created_at", false);
	s->att_events = inbox ? attnameAttNum(rel, "events", false) : InvalidAttrNumber;
	s->att_more = inbox ? attnameAttNum(rel, "more", false) : InvalidAttrNumber;
	s->defaults = palloc0(sizeof(ExprState *) * desc->natts);

	/*
	 * As the owner: preparing an expression checks EXECUTE on its functions
	 * (callback._inbox_seq() is the owner's alone), and the rows are the
	 * owner's inserts, whoever's write prepares them first.  An error here
	 * needs no cleanup (see become_owner).
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	for (int i = 0; i < desc->natts; i++)
	{
		AttrNumber	attnum = i + 1;
		Node	   *expr;

		if (TupleDescAttr(desc, i)->attisdropped ||
			attnum == s->att_event_id || attnum == s->att_endpoint_id ||
			attnum == s->att_event_type || attnum == s->att_body)
			continue;
		expr = build_column_default(rel, attnum);
		if (expr != NULL)
			s->defaults[i] = ExecInitExpr(expression_planner((Expr *) expr), NULL);
	}
	s->econtext = CreateStandaloneExprContext();

	/*
	 * The indexes, and the partial ones' predicates prepared as
	 * ExecInsertIndexTuples() would prepare them in each transaction
	 * (ExecPrepareQual).  A new or dropped index invalidates the table's
	 * relcache entry, and with it this shape.
	 */
	{
		List	   *indexes = RelationGetIndexList(rel);
		ListCell   *lc;
		ListCell   *lce;

		int			n = Max(list_length(indexes), 1);

		s->index_oid = palloc0(sizeof(Oid) * n);
		s->index_pred = palloc0(sizeof(ExprState *) * n);
		s->index_exprs = palloc0(sizeof(List *) * n);
		s->index_rel = palloc0(sizeof(Relation) * n);
		s->index_info = palloc0(sizeof(IndexInfo *) * n);
		s->index_skip = palloc0(sizeof(bool) * n);
		foreach(lc, indexes)
		{
			Oid			indexoid = lfirst_oid(lc);
			Relation	irel = index_open(indexoid, AccessShareLock);
			List	   *pred = RelationGetIndexPredicate(irel);
			List	   *exprs = RelationGetIndexExpressions(irel);

			/* what index_insert() alone does not do */
			if (irel->rd_index->indisexclusion)
				unsupported(rel, "an exclusion constraint");
			if (irel->rd_index->indisunique && !irel->rd_index->indimmediate)
				unsupported(rel, "a deferrable unique constraint");
			s->index_oid[s->nindexes] = indexoid;
			if (pred != NIL)
			{
				Expr	   *planned = expression_planner((Expr *) make_ands_explicit(pred));

				s->index_pred[s->nindexes] = ExecInitQual(make_ands_implicit(planned), NULL);
			}

			/*
			 * FormIndexDatum would prepare them in the EState's memory, once
			 * per IndexInfo, which is per transaction: here instead, as
			 * ExecPrepareExpr would, once per shape.
			 */
			foreach(lce, exprs)
				s->index_exprs[s->nindexes] =
					lappend(s->index_exprs[s->nindexes],
							ExecInitExpr(expression_planner((Expr *) lfirst(lce)), NULL));
			s->nindexes++;
			index_close(irel, AccessShareLock);
		}
	}
	SetUserIdAndSecContext(save_userid, save_sec_context);

	/* the executor's part, for as long as the definition holds */
	s->desc = CreateTupleDescCopy(desc);
	s->check_constraints = desc->constr != NULL;
	s->estate = CreateExecutorState();
	s->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(s->rri, rel, 0, NULL, 0);
	s->slot = MakeSingleTupleTableSlot(s->desc, &TTSOpsVirtual);
	s->heap_slot = MakeSingleTupleTableSlot(s->desc, &TTSOpsHeapTuple);
	return s;
}

static QueueOpen *
open_queue(void)
{
	ResourceOwner save_owner = CurrentResourceOwner;
	MemoryContext old;
	QueueOpen  *q;
	Oid			relid;

	/* before anything the outer row uses is closed or rebuilt */
	refuse_nested();
	/* callback.inbox changed in the transaction (SET LOCAL): the other table */
	if (xact_open != NULL && xact_open->inbox != target_is_inbox())
		xact_open_stale = true;
	if (xact_open != NULL && !xact_open_stale)
		return xact_open;
	if (xact_open != NULL)
	{
		/*
		 * A batch's rows and packs are written by their own subtransaction;
		 * a nested insert in another one (user code run while a body is
		 * built: a cast to json) keeps the stale relation (and shape) for
		 * now, else its rollback would take them along.
		 */
		if (bulk_pending() > 0 && bulk_subid != GetCurrentSubTransactionId())
			return xact_open;
		if (pgcb_pack_any_open() && batch_subid != GetCurrentSubTransactionId())
			return xact_open;

		/*
		 * Rows buffered go in as they were formed, through the indexes of
		 * their time: our lock keeps any index made since (CONCURRENTLY)
		 * from being ready for inserts before we commit.  Open packs first
		 * become rows, while the shape is still the inbox's.
		 */
		close_packs_as_owner(xact_open);
		flush_as_owner(xact_open);
		close_open();
	}
	register_callbacks();

	relid = (shape != NULL && !shape_stale && shape->inbox == target_is_inbox()) ?
		shape->relid : lookup_target_relid();
	old = MemoryContextSwitchTo(TopTransactionContext);
	q = &open_storage;
	memset(q, 0, sizeof(QueueOpen));
	CurrentResourceOwner = TopTransactionResourceOwner;
	PG_TRY();
	{
		q->rel = table_open(relid, RowExclusiveLock);
		q->inbox = target_is_inbox();
		check_queue(q->rel);

		/*
		 * Opening took the lock, which read any pending invalidation.  The
		 * shape is built under the caller's owner: what it opens to build
		 * is then released by the (sub)transaction that fails, if it does.
		 */
		CurrentResourceOwner = save_owner;
		if (shape == NULL || shape_stale || shape->relid != relid)
			build_shape(q->rel, q->inbox);
	}
	PG_CATCH();
	{
		/*
		 * Held by the top-level transaction's owner: a savepoint that
		 * catches this error would not release it, and its commit would
		 * warn of a leaked reference.
		 */
		CurrentResourceOwner = TopTransactionResourceOwner;
		if (q->rel != NULL)
			table_close(q->rel, NoLock);
		CurrentResourceOwner = save_owner;
		MemoryContextSwitchTo(old);
		PG_RE_THROW();
	}
	PG_END_TRY();
	CurrentResourceOwner = save_owner;
	MemoryContextSwitchTo(old);
	q->estate = shape->estate;
	q->rri = shape->rri;
	/* the same relcache entry while the shape holds; set in case it moved */
	q->rri->ri_RelationDesc = q->rel;
	q->slot = shape->slot;
	q->check_constraints = shape->check_constraints;
	q->nindexes = shape->nindexes;
	q->index_rel = shape->index_rel;
	q->index_info = shape->index_info;
	q->index_skip = shape->index_skip;
	if (q->nindexes > 0)
	{
		memset(q->index_rel, 0, sizeof(Relation) * q->nindexes);
		memset(q->index_info, 0, sizeof(IndexInfo *) * q->nindexes);
		memset(q->index_skip, 0, sizeof(bool) * q->nindexes);
	}
	xact_open = q;
	/* invalidated while it was built: this insert uses it, the next reopens */
	xact_open_stale = shape_stale;
	return q;
}

/*
 * The row's entries in the queue's indexes, as ExecInsertIndexTuples()
 * makes them (partial indexes only where the predicate holds, indexes not
 * yet ready for inserts skipped, UNIQUE_CHECK_YES for unique ones; the
 * shape refused exclusion and deferrable constraints).  An index is opened
 * and locked the first time a row needs it in the transaction: a new
 * delivery is 'pending', so the partial indexes of leased and dead
 * deliveries are never opened by producers.
 */
static void
insert_index_entries(QueueOpen *q, QueueShape *s, TupleTableSlot *slot)
{
	ExprContext *econtext;
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];

	/* the inbox has none */
	if (q->nindexes == 0)
		return;
	econtext = GetPerTupleExprContext(q->estate);
	econtext->ecxt_scantuple = slot;
	for (int i = 0; i < q->nindexes; i++)
	{
		Relation	irel;

		if (q->index_skip[i])
			continue;
		if (s->index_pred[i] != NULL && !ExecQual(s->index_pred[i], econtext))
			continue;
		if (q->index_rel[i] == NULL)
		{
			ResourceOwner save_owner = CurrentResourceOwner;
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

			/* held with the table, to the end of the top-level transaction */
			CurrentResourceOwner = TopTransactionResourceOwner;
			PG_TRY();
			{
				q->index_rel[i] = index_open(s->index_oid[i], RowExclusiveLock);
				q->index_info[i] = BuildIndexInfo(q->index_rel[i]);
				/* prepared with the shape (see build_shape) */
				q->index_info[i]->ii_ExpressionsState = s->index_exprs[i];
			}
			PG_FINALLY();
			{
				CurrentResourceOwner = save_owner;
				MemoryContextSwitchTo(old);
			}
			PG_END_TRY();
			if (!q->index_info[i]->ii_ReadyForInserts)
			{
				q->index_skip[i] = true;
				continue;
			}
		}
		irel = q->index_rel[i];
		FormIndexDatum(q->index_info[i], slot, q->estate, values, isnull);
		(void) index_insert(irel, values, isnull, &slot->tts_tid, q->rel,
							irel->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
							false, q->index_info[i]);
	}
}

/* A text datum, or 0 for an absent attribute. */
static Datum
optional_text(const char *s)
{
	return s == NULL ? (Datum) 0 : PointerGetDatum(cstring_to_text(s));
}

static void
set_optional(Datum *values, bool *isnull, AttrNumber attnum, Datum d)
{
	if (attnum == InvalidAttrNumber)
	{
		if (d != (Datum) 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the extension's schema is older than its library"),
					 errhint("Run ALTER EXTENSION pg_callback UPDATE.")));
		return;
	}
	values[attnum - 1] = d;
	isnull[attnum - 1] = (d == (Datum) 0);
}

/* The datums one event gives each of its deliveries. */
typedef struct EventDatums
{
	Datum		type;
	Datum		body;
	Datum		key;
	Datum		traceparent;
	Datum		tracestate;
	int32		events;			/* a pack's (inbox_pack.c); 0: one event */
	Datum		more;
} EventDatums;

/*
 * One delivery's row in slot: the defaults evaluated (the identity's
 * nextval among them, so ids follow the order rows are formed in), the
 * event's columns, the constraints checked.
 */
static void
form_row(QueueOpen *q, QueueShape *s, TupleTableSlot *slot, const PgcbEventRow *ev,
		 const EventDatums *d, int32 endpoint_id, bool ordered)
{
	Datum	   *values;
	bool	   *isnull;

	ExecClearTuple(slot);
	ResetExprContext(s->econtext);
	values = slot->tts_values;
	isnull = slot->tts_isnull;
	for (int i = 0; i < s->natts; i++)
	{
		if (s->defaults[i] != NULL)
			values[i] = ExecEvalExprSwitchContext(s->defaults[i], s->econtext, &isnull[i]);
		else
		{
			values[i] = (Datum) 0;
			isnull[i] = true;
		}
	}
	values[s->att_event_id - 1] = UUIDPGetDatum(&ev->event_id);
	isnull[s->att_event_id - 1] = false;
	values[s->att_endpoint_id - 1] = Int32GetDatum(endpoint_id);
	isnull[s->att_endpoint_id - 1] = false;
	values[s->att_event_type - 1] = d->type;
	isnull[s->att_event_type - 1] = false;
	values[s->att_body - 1] = d->body;
	isnull[s->att_body - 1] = false;
	/* ordering: a key only where it orders (the partial index stays small) */
	set_optional(values, isnull, s->att_ordering_key, ordered ? d->key : (Datum) 0);
	set_optional(values, isnull, s->att_traceparent, d->traceparent);
	set_optional(values, isnull, s->att_tracestate, d->tracestate);
	if (d->events > 0)
	{
		/* a pack: only the inbox has the columns (emit_pack checked) */
		values[s->att_events - 1] = Int32GetDatum(d->events);
		isnull[s->att_events - 1] = false;
		values[s->att_more - 1] = d->more;
		isnull[s->att_more - 1] = (d->more == (Datum) 0);
	}
	if (moving && s->att_created_at != InvalidAttrNumber)
	{
		values[s->att_created_at - 1] = TimestampTzGetDatum(moving_created_at);
		isnull[s->att_created_at - 1] = false;
	}
	ExecStoreVirtualTuple(slot);

	if (q->check_constraints)
		ExecConstraints(q->rri, slot, q->estate);
}

/*
 * Run as the queue's owner, in a security-restricted operation: whatever
 * the defaults, the index predicates or the constraints call runs as it
 * would under the owner's own INSERT, never with the producer's rights (or
 * the producer's code with the owner's).  Names are resolved already:
 * search_path plays no part.  An error in between needs no cleanup: the
 * (sub)transaction's abort restores the user.
 */
static void
become_owner(QueueOpen *q, Oid *save_userid, int *save_sec_context)
{
	refuse_nested();
	forming_subid = GetCurrentSubTransactionId();
	GetUserIdAndSecContext(save_userid, save_sec_context);
	SetUserIdAndSecContext(q->rel->rd_rel->relowner,
						   *save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* The producer again, once the rows are formed (or written). */
static void
become_producer(Oid save_userid, int save_sec_context)
{
	SetUserIdAndSecContext(save_userid, save_sec_context);
	forming_subid = InvalidSubTransactionId;
}

/*
 * The row formed in q->slot into the table, then its index entries.  The
 * tuple is formed here, once, in a heap slot that the table AM takes as it
 * is: given the virtual slot, it would first copy the row's values into
 * the slot's memory and then form the tuple from the copy.  The index
 * entries read the values from the virtual slot, where the heap slot would
 * deform the tuple again.  The tuple lives in the slot's memory and goes
 * with the next clear or store, also after an error.
 */
static void
insert_formed(QueueOpen *q, QueueShape *s, CommandId cid)
{
	TupleTableSlot *row = q->slot;
	MemoryContext old = MemoryContextSwitchTo(s->heap_slot->tts_mcxt);
	HeapTuple	tuple = heap_form_tuple(row->tts_tupleDescriptor, row->tts_values, row->tts_isnull);

	MemoryContextSwitchTo(old);
	ExecStoreHeapTuple(tuple, s->heap_slot, true);
	table_tuple_insert(q->rel, s->heap_slot, cid, 0, NULL);
	row->tts_tid = s->heap_slot->tts_tid;
	ExecClearTuple(s->heap_slot);
	insert_index_entries(q, s, row);
}

/* After a buffered row's heap insert: its index entries. */
static void
after_bulk_insert(TupleTableSlot *slot, void *arg)
{
	QueueOpen  *q = (QueueOpen *) arg;

	insert_index_entries(q, shape, slot);
	ResetPerTupleExprContext(q->estate);
}

/* Where q's buffered rows go. */
static void
bulk_target(QueueOpen *q, CommandId cid, PgcbBulkTarget *t)
{
	t->rel = q->rel;
	t->cid = cid;
	t->after_insert = after_bulk_insert;
	t->arg = q;
}

/* The shape's buffer, made when first needed, for the life of the shape. */
static PgcbBulk *
shape_bulk(QueueOpen *q)
{
	if (shape->bulk == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(shape->cxt);

		/*
		 * The shape's copy: slots over it pin nothing, so they outlive
		 * transactions.  Formed tuples where no index entry reads the values.
		 */
		shape->bulk = pgcb_bulk_create(shape->desc, shape->nindexes == 0);
		MemoryContextSwitchTo(old);
	}
	return shape->bulk;
}

/* Write the buffered rows, if any, through q. */
static void
flush_as_owner(QueueOpen *q)
{
	Oid			save_userid;
	int			save_sec_context;
	PgcbBulkTarget target;

	if (bulk_pending() == 0)
		return;
	bulk_target(q, GetCurrentCommandId(true), &target);
	become_owner(q, &save_userid, &save_sec_context);
	pgcb_bulk_flush(shape->bulk, &target);
	become_producer(save_userid, save_sec_context);
}

/* Where a closed pack's row goes: q's buffer, through target. */
typedef struct PackSink
{
	QueueOpen  *q;
	PgcbBulkTarget *target;
} PackSink;

/*
 * A closed pack (inbox_pack.c) as one inbox row in the batch's buffer,
 * formed as its first event's row with events and more set.  Runs as the
 * queue's owner, as every row is formed.
 */
static void
emit_pack(const PgcbPackRow *p, void *arg)
{
	PackSink   *sink = (PackSink *) arg;
	QueueOpen  *q = sink->q;
	PgcbEventRow ev;
	EventDatums d;

	if (!shape->inbox || shape->att_events == InvalidAttrNumber ||
		shape->att_more == InvalidAttrNumber)
		elog(ERROR, "pg_callback: an inbox pack is due while the target is not a callback_inbox with events and more");
	memset(&ev, 0, sizeof(ev));
	ev.event_id = p->event_id;
	memset(&d, 0, sizeof(d));
	d.type = PointerGetDatum(cstring_to_text(p->event_type));
	d.body = PointerGetDatum(p->body);
	d.traceparent = optional_text(p->traceparent);
	d.tracestate = optional_text(p->tracestate);
	d.events = p->events;
	d.more = PointerGetDatum(p->more);
	bulk_subid = GetCurrentSubTransactionId();
	form_row(q, shape, q->slot, &ev, &d, p->endpoint_id, false);
	/* copied into the buffer: the pack's memory is reused after this */
	pgcb_bulk_add(shape_bulk(q), sink->target, q->slot, p->bytes);
	ResetPerTupleExprContext(q->estate);
	ExecClearTuple(q->slot);
	pfree(DatumGetPointer(d.type));
	if (d.traceparent != (Datum) 0)
		pfree(DatumGetPointer(d.traceparent));
	if (d.tracestate != (Datum) 0)
		pfree(DatumGetPointer(d.tracestate));
}

/* The batch's open packs, as rows into q's buffer (not written yet). */
static void
close_packs_as_owner(QueueOpen *q)
{
	Oid			save_userid;
	int			save_sec_context;
	PgcbBulkTarget target;
	PackSink	sink = {q, &target};

	if (!pgcb_pack_any_open())
		return;
	bulk_target(q, GetCurrentCommandId(true), &target);
	become_owner(q, &save_userid, &save_sec_context);
	pgcb_pack_close_all(emit_pack, &sink);
	become_producer(save_userid, save_sec_context);
}

/* Whether an insert made now belongs to the open batch. */
static bool
in_batch(void)
{
	return batch_active &&
		GetCurrentSubTransactionId() == batch_subid &&
		DatumGetInt32(DirectFunctionCall1(pg_trigger_depth, (Datum) 0)) == batch_trigger_depth;
}

bool
pgcb_queue_batch_begin(void)
{
	if (batch_active)
		return false;
	register_callbacks();
	batch_subid = GetCurrentSubTransactionId();
	batch_trigger_depth = DatumGetInt32(DirectFunctionCall1(pg_trigger_depth, (Datum) 0));
	batch_active = true;
	return true;
}

bool
pgcb_queue_batch_packs(void)
{
	QueueOpen  *q;

	if (!in_batch())
		return false;
	/* as pgcb_queue_insert decides it: a 1.0 database's queue has no more */
	q = open_queue();
	return q->inbox && shape->att_more != InvalidAttrNumber;
}

bool
pgcb_queue_busy(void)
{
	return batch_active || bulk_pending() > 0 || pgcb_pack_any_open() ||
		forming_subid != InvalidSubTransactionId;
}

void
pgcb_queue_batch_end(void)
{
	batch_active = false;
	if (xact_open != NULL)
	{
		close_packs_as_owner(xact_open);
		flush_as_owner(xact_open);
	}
}

void
pgcb_queue_insert(const PgcbEventRow *ev,
				  const int32 *endpoint_ids, const bool *ordered, int n_endpoints)
{
	QueueOpen  *q;
	QueueShape *s;
	EventDatums d;
	Oid			save_userid;
	int			save_sec_context;
	CommandId	cid;
	bool		batched;
	bool		buffered;
	bool		packing;
	PgcbBulkTarget target;
	PackSink	sink;
	size_t		type_len = strlen(ev->event_type);
	union
	{
		int32		align;		/* a varlena's header is an int32 */
		char		data[VARHDRSZ + PGCB_EVENT_TYPE_MAX];
	}			type_buf;

	/*
	 * What the executor checks before any INSERT (ExecCheckXactReadOnly),
	 * whether or not it inserts a row.
	 */
	PreventCommandIfReadOnly("INSERT");
	PreventCommandIfParallelMode("INSERT");
	if (n_endpoints <= 0)
		return;
	q = open_queue();
	s = shape;
	/*
	 * The texts the rows are formed from: the type on the stack, the body
	 * as the producer made it when it can (no palloc and copy per event);
	 * the rows are formed and copied before this returns.
	 */
	if (type_len <= PGCB_EVENT_TYPE_MAX)
	{
		SET_VARSIZE(type_buf.data, VARHDRSZ + type_len);
		memcpy(type_buf.data + VARHDRSZ, ev->event_type, type_len);
		d.type = PointerGetDatum(type_buf.data);
	}
	else
		d.type = PointerGetDatum(cstring_to_text_with_len(ev->event_type, type_len));
	d.body = ev->body_text != NULL ? PointerGetDatum(ev->body_text) :
		PointerGetDatum(cstring_to_text_with_len(ev->body, ev->body_len));
	d.key = optional_text(ev->ordering_key);
	d.traceparent = optional_text(ev->traceparent);
	d.tracestate = optional_text(ev->tracestate);
	d.events = 0;				/* one event per row here; packs: emit_pack */
	d.more = (Datum) 0;
	cid = GetCurrentCommandId(true);

	/*
	 * One row alone goes straight in; an event's fan-out, and every row of
	 * a batch, through the multi-insert buffer (flushed here unless the
	 * batch's end will).  The buffer holds one subtransaction's rows at a
	 * time: a fan-out nested in a batch (SQL run while a body is built)
	 * finding the batch's rows there goes straight in.
	 */
	batched = in_batch();
	buffered = batched || (n_endpoints > 1 && bulk_pending() == 0);
	if (buffered)
		bulk_target(q, cid, &target);
	/* a statement's events into the inbox: packed where they can be */
	packing = batched && q->inbox && s->att_more != InvalidAttrNumber;
	sink.q = q;
	sink.target = &target;

	become_owner(q, &save_userid, &save_sec_context);
	for (int e = 0; e < n_endpoints; e++)
	{
		bool		key_here = ordered != NULL && ordered[e];

		CHECK_FOR_INTERRUPTS();
		if (packing && !(key_here && d.key != (Datum) 0) &&
			pgcb_pack_add(ev, endpoint_ids[e], emit_pack, &sink))
			continue;
		if (buffered)
		{
			PgcbBulk   *b = shape_bulk(q);

			bulk_subid = GetCurrentSubTransactionId();

			form_row(q, s, q->slot, ev, &d, endpoint_ids[e], key_here);
			pgcb_bulk_add(b, &target, q->slot, ev->body_len);
		}
		else
		{
			form_row(q, s, q->slot, ev, &d, endpoint_ids[e], key_here);
			insert_formed(q, s, cid);
		}
		ResetPerTupleExprContext(q->estate);
	}
	if (buffered && !batched)
		pgcb_bulk_flush(shape->bulk, &target);
	become_producer(save_userid, save_sec_context);

	ExecClearTuple(q->slot);
	if (DatumGetPointer(d.type) != type_buf.data)
		pfree(DatumGetPointer(d.type));
	if (DatumGetPointer(d.body) != (Pointer) ev->body_text)
		pfree(DatumGetPointer(d.body));
	if (d.key != (Datum) 0)
		pfree(DatumGetPointer(d.key));
	if (d.traceparent != (Datum) 0)
		pfree(DatumGetPointer(d.traceparent));
	if (d.tracestate != (Datum) 0)
		pfree(DatumGetPointer(d.tracestate));
}

void
pgcb_queue_insert_moved(const PgcbEventRow *ev, int32 endpoint_id, bool ordered,
						TimestampTz created_at)
{
	moving = true;
	moving_created_at = created_at;
	PG_TRY();
	{
		pgcb_queue_insert(ev, &endpoint_id, &ordered, 1);
	}
	PG_FINALLY();
	{
		moving = false;
	}
	PG_END_TRY();
}
