/*
 * prepared_exprs.c
 *		The check constraints and partial-index predicates of the tables the
 *		engine writes (queue_rows.c), planned once per backend instead of
 *		once per statement.  The executor plans them in each statement
 *		(ExecRelCheck, ExecInsertIndexTuples: stringToNode and
 *		expression_planner, then ExecInitExpr), about 38k instructions per
 *		statement for callback_queue's one constraint by callgrind, paid by
 *		each claim, write-back and stats statement of every cycle.
 *
 * Only the planned trees are kept.  Each statement still makes its own
 * ExprStates from a copy, in its own memory, as the executor does: an
 * ExprState keeps what its first evaluation found in the statement's
 * memory (a whole-row reference's descriptor), the constraints of a domain
 * as they were, a SQL function's plans, and it checks EXECUTE only when it
 * is made.
 *
 * A tree is used again only for the same text (a constraint's ccbin, an
 * index's predicate) and the same user (planning inlines SQL functions the
 * user may execute).  Any change of a function, of a type (planning
 * drops a coercion to a domain that has no constraint), of a role or of
 * role membership drops them all, as the plan cache would drop its plans.
 */
#include "postgres.h"

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

typedef struct PlannedKey
{
	Oid			relid;			/* a table (its checks) or an index (its predicate) */
	Oid			userid;			/* who planned them */
} PlannedKey;

typedef struct PlannedEntry
{
	PlannedKey	key;
	MemoryContext cxt;			/* everything below */
	int			n;				/* a table's checks; 1 for an index */
	char	  **ccbin;			/* a table's: each check's text */
	List	   *pred;			/* an index's: its predicate as the relcache gives it */
	Node	  **planned;		/* n planned trees (an index's: an implicit-AND list) */
} PlannedEntry;

static MemoryContext planned_cxt = NULL;
static HTAB *planned = NULL;
static bool planned_stale = false;

static void
drop_all_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	planned_stale = true;
}

static HTAB *
planned_table(void)
{
	HASHCTL		ctl;

	if (planned_cxt == NULL)
	{
		CacheRegisterSyscacheCallback(PROCOID, drop_all_callback, (Datum) 0);
		/* a domain given constraints: planning drops a coercion to one without */
		CacheRegisterSyscacheCallback(TYPEOID, drop_all_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, drop_all_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, drop_all_callback, (Datum) 0);
		planned_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback planned expressions",
											ALLOCSET_SMALL_SIZES);
	}
	/* nothing outside holds a pointer into it: each statement copies */
	if (planned_stale)
	{
		MemoryContextReset(planned_cxt);
		planned = NULL;
		planned_stale = false;
	}
	if (planned == NULL)
	{
		ctl.keysize = sizeof(PlannedKey);
		ctl.entrysize = sizeof(PlannedEntry);
		ctl.hcxt = planned_cxt;
		planned = hash_create("pg_callback planned expressions", 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return planned;
}

/* The entry of relid for this user, found or made empty (n = 0). */
static PlannedEntry *
entry_for(Oid relid)
{
	PlannedKey	key;
	PlannedEntry *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.userid = GetUserId();
	e = hash_search(planned_table(), &key, HASH_ENTER, &found);
	if (!found)
	{
		e->cxt = NULL;
		e->n = 0;
	}
	return e;
}

/* Forget what e held, before it is filled again. */
static void
entry_reset(PlannedEntry *e)
{
	if (e->cxt != NULL)
		MemoryContextDelete(e->cxt);
	e->cxt = AllocSetContextCreate(planned_cxt, "pg_callback planned expression", ALLOCSET_SMALL_SIZES);
	e->n = 0;
	e->ccbin = NULL;
	e->pred = NIL;
	e->planned = NULL;
}

static bool
checks_match(PlannedEntry *e, TupleConstr *constr)
{
	if (e->n != constr->num_check || e->ccbin == NULL)
		return false;
	for (int i = 0; i < e->n; i++)
		if (strcmp(e->ccbin[i], constr->check[i].ccbin) != 0)
			return false;
	return true;
}

void
pgcb_prepared_checks(ResultRelInfo *rri, EState *estate)
{
	Relation	rel = rri->ri_RelationDesc;
	TupleConstr *constr = rel->rd_att->constr;
	int			n = constr != NULL ? constr->num_check : 0;
	MemoryContext old;
	PlannedEntry *e;
	Node	  **trees;

	if (n == 0 || rri->ri_ConstraintExprs != NULL)
		return;
	/* planned in the statement's memory: an error there leaves nothing behind */
	old = MemoryContextSwitchTo(estate->es_query_cxt);
	e = entry_for(RelationGetRelid(rel));
	if (checks_match(e, constr))
		trees = e->planned;
	else
	{
		/* as ExecRelCheck plans them (ExecPrepareExpr) */
		trees = palloc(sizeof(Node *) * n);
		for (int i = 0; i < n; i++)
			trees[i] = (Node *) expression_planner((Expr *) stringToNode(constr->check[i].ccbin));
		/* our copies, once all are planned (planning reads catalogs: any entry may be gone) */
		e = entry_for(RelationGetRelid(rel));
		entry_reset(e);
		MemoryContextSwitchTo(e->cxt);
		e->ccbin = palloc(sizeof(char *) * n);
		e->planned = palloc(sizeof(Node *) * n);
		for (int i = 0; i < n; i++)
		{
			e->ccbin[i] = pstrdup(constr->check[i].ccbin);
			e->planned[i] = copyObject(trees[i]);
		}
		e->n = n;
		MemoryContextSwitchTo(estate->es_query_cxt);
	}
	/* the statement's own ExprStates, as ExecRelCheck makes them */
	rri->ri_ConstraintExprs = palloc(sizeof(ExprState *) * n);
	for (int i = 0; i < n; i++)
		rri->ri_ConstraintExprs[i] = ExecInitExpr((Expr *) copyObject(trees[i]), NULL);
	MemoryContextSwitchTo(old);
}

void
pgcb_prepared_predicates(ResultRelInfo *rri, EState *estate)
{
	MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);

	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
		Oid			indexoid = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		PlannedEntry *e;
		List	   *tree;

		if (ii->ii_Predicate == NIL || ii->ii_PredicateState != NULL)
			continue;
		e = entry_for(indexoid);
		if (e->n == 1 && equal(e->pred, ii->ii_Predicate))
			tree = (List *) e->planned[0];
		else
		{
			/* as ExecInsertIndexTuples plans it (ExecPrepareQual) */
			tree = (List *) expression_planner((Expr *) copyObject(ii->ii_Predicate));
			e = entry_for(indexoid);
			entry_reset(e);
			MemoryContextSwitchTo(e->cxt);
			e->pred = copyObject(ii->ii_Predicate);
			e->planned = palloc(sizeof(Node *));
			e->planned[0] = (Node *) copyObject(tree);
			e->n = 1;
			MemoryContextSwitchTo(estate->es_query_cxt);
		}
		ii->ii_PredicateState = ExecInitQual((List *) copyObject(tree), NULL);
	}
	MemoryContextSwitchTo(old);
}
