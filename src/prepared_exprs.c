/*
 * prepared_exprs.c
 *		The check constraints and partial-index predicates of the tables the
 *		engine writes (queue_rows.c), prepared once per backend instead of
 *		once per statement.  The executor prepares them in each statement's
 *		EState (ExecRelCheck, ExecInsertIndexTuples): stringToNode,
 *		expression_planner and ExecInitExpr, about 38k instructions per
 *		statement for callback_queue's one constraint by callgrind, paid by
 *		each claim, write-back and stats statement of every cycle.
 *		queue_insert.c keeps the producers' own the same way.
 *
 * They are prepared exactly as the executor prepares them, with no parent
 * plan, as the user who runs the statement (the extension's owner): an
 * entry is that user's.  Kept until an invalidation of a relation they
 * belong to (a constraint or index changed, the relation rebuilt, a cache
 * reset) or of any function; then the next statement prepares them again.
 * A statement still under way when that happens (one run inside another's
 * trigger) keeps using what it holds, freed with the transaction.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "optimizer/optimizer.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "prepared_exprs.h"

typedef struct PreparedKey
{
	Oid			relid;			/* a table (its checks) or an index (its predicate) */
	Oid			userid;			/* who prepared them: ExecInitExpr checks EXECUTE */
} PreparedKey;

typedef struct PreparedEntry
{
	PreparedKey key;
	int			n;				/* how many: a table's checks; 1 for an index */
	ExprState **exprs;
} PreparedEntry;

static MemoryContext prepared_cxt = NULL;
static HTAB *prepared = NULL;
static bool prepared_stale = false;
static bool callbacks_registered = false;

static void
relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	PreparedEntry *e;

	if (prepared == NULL || prepared_stale)
		return;
	if (!OidIsValid(relid))
	{
		prepared_stale = true;
		return;
	}
	hash_seq_init(&seq, prepared);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.relid == relid)
		{
			prepared_stale = true;
			hash_seq_term(&seq);
			return;
		}
	}
}

/* A function replaced or dropped: an expression may call it. */
static void
proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (prepared != NULL)
		prepared_stale = true;
}

/* The entries, made anew after an invalidation. */
static HTAB *
prepared_table(void)
{
	HASHCTL		ctl;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, proc_callback, (Datum) 0);
		callbacks_registered = true;
	}
	if (prepared_stale && prepared_cxt != NULL)
	{
		/* a statement under way may hold them: they go with the transaction */
		MemoryContextSetParent(prepared_cxt, TopTransactionContext);
		prepared_cxt = NULL;
		prepared = NULL;
	}
	prepared_stale = false;
	if (prepared == NULL)
	{
		prepared_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback prepared expressions",
											 ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(PreparedKey);
		ctl.entrysize = sizeof(PreparedEntry);
		ctl.hcxt = prepared_cxt;
		prepared = hash_create("pg_callback prepared expressions", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return prepared;
}

static PreparedEntry *
lookup(Oid relid, int n)
{
	PreparedKey key;
	PreparedEntry *e;

	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.userid = GetUserId();
	e = hash_search(prepared_table(), &key, HASH_FIND, NULL);
	return (e != NULL && e->n == n) ? e : NULL;
}

/* Entered only once exprs is whole: an error while preparing leaves no entry. */
static void
remember(Oid relid, int n, ExprState **exprs)
{
	PreparedKey key;
	PreparedEntry *e;

	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.userid = GetUserId();
	e = hash_search(prepared, &key, HASH_ENTER, NULL);
	e->n = n;
	e->exprs = exprs;
}

void
pgcb_prepared_checks(ResultRelInfo *rri)
{
	Relation	rel = rri->ri_RelationDesc;
	TupleConstr *constr = rel->rd_att->constr;
	PreparedEntry *e;

	if (constr == NULL || constr->num_check == 0 || rri->ri_ConstraintExprs != NULL)
		return;
	e = lookup(RelationGetRelid(rel), constr->num_check);
	if (e == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(prepared_cxt);
		ExprState **exprs = palloc(sizeof(ExprState *) * constr->num_check);

		/* as ExecRelCheck: ExecPrepareExpr of each constraint's tree */
		for (int i = 0; i < constr->num_check; i++)
			exprs[i] = ExecInitExpr(expression_planner((Expr *) stringToNode(constr->check[i].ccbin)),
									NULL);
		MemoryContextSwitchTo(old);
		remember(RelationGetRelid(rel), constr->num_check, exprs);
		rri->ri_ConstraintExprs = exprs;
		return;
	}
	rri->ri_ConstraintExprs = e->exprs;
}

void
pgcb_prepared_predicates(ResultRelInfo *rri)
{
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
		Oid			indexoid = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		PreparedEntry *e;

		if (ii->ii_Predicate == NIL || ii->ii_PredicateState != NULL)
			continue;
		e = lookup(indexoid, 1);
		if (e == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(prepared_cxt);
			ExprState **exprs = palloc(sizeof(ExprState *));
			List	   *pred = copyObject(ii->ii_Predicate);

			/* as ExecInsertIndexTuples: ExecPrepareQual of the predicate */
			exprs[0] = ExecInitQual((List *) expression_planner((Expr *) pred), NULL);
			MemoryContextSwitchTo(old);
			remember(indexoid, 1, exprs);
			ii->ii_PredicateState = exprs[0];
			continue;
		}
		ii->ii_PredicateState = e->exprs[0];
	}
}
