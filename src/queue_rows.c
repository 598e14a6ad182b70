/*
 * queue_rows.c
 *		Row writes to the extension's tables made as one SQL statement would
 *		make them, without SPI, planner or executor start-up per row: each
 *		row as ExecSimpleRelationUpdate / ExecSimpleRelationInsert write it
 *		(logical replication's apply), with the statement's transition
 *		tables, which those do not capture; the statement's triggers and
 *		after-trigger queue around the rows.  An
 *		operator's trigger on the queue (an audit trigger, test_faults.py)
 *		fires as it did when the engine's writes were SQL statements.
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/nodeModifyTable.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"

#include "queue_rows.h"

AttrNumber
pgcb_rows_column(Relation rel, const char *name, Oid typid)
{
	AttrNumber	attnum = attnameAttNum(rel, name, false);
	Oid			has = attnum > 0 ? TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid : InvalidOid;

	/* the Datums written and read here are of these types: nothing else will do */
	if (attnum <= 0 || (OidIsValid(typid) ? has != typid : get_typtype(has) != TYPTYPE_ENUM))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.%s has no column \"%s\" of type %s", RelationGetRelationName(rel), name,
						OidIsValid(typid) ? format_type_be(typid) : "callback.delivery_status"),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));
	return attnum;
}

static void
unsupported(Relation rel, const char *what, const char *who)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("callback.%s has %s, which pg_callback's %s does not support",
					RelationGetRelationName(rel), what, who),
			 errhint("Remove it: the table is the extension's own.")));
}

void
pgcb_rows_check(Relation rel, CmdType cmd, const char *who)
{
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		unsupported(rel, "a kind other than a plain table", who);
	/* its partition constraint would not be checked */
	if (rel->rd_rel->relispartition)
		unsupported(rel, "been attached as a partition", who);
	(void) cmd;
	/* row security applying to the owner: forced, and the owner no superuser */
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED)
		unsupported(rel, "row level security that applies to its owner", who);
}

void
pgcb_rows_begin(PgcbRowsStatement *st, Snapshot snapshot, int nrels,
				const Relation *rels, const CmdType *cmds, List *const *cols)
{
	List	   *rtable = NIL;

	Assert(nrels <= PGCB_ROWS_MAX_RELS);
	st->nrels = nrels;
	st->estate = CreateExecutorState();
	st->estate->es_snapshot = snapshot;
	st->estate->es_output_cid = GetCurrentCommandId(true);
	for (int i = 0; i < nrels; i++)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);
		Bitmapset  *written = NULL;
		ListCell   *lc;

		foreach(lc, cols[i])
			written = bms_add_member(written, lfirst_int(lc) - FirstLowInvalidHeapAttributeNumber);
		rte->rtekind = RTE_RELATION;
		rte->relid = RelationGetRelid(rels[i]);
		rte->relkind = rels[i]->rd_rel->relkind;
		rte->rellockmode = RowExclusiveLock;
		rte->requiredPerms = cmds[i] == CMD_UPDATE ? ACL_UPDATE : ACL_INSERT;
		if (cmds[i] == CMD_UPDATE)
			rte->updatedCols = written;
		else
			rte->insertedCols = written;
		rtable = lappend(rtable, rte);
	}
	ExecInitRangeTable(st->estate, rtable);
	for (int i = 0; i < nrels; i++)
	{
		st->cmd[i] = cmds[i];
		st->rri[i] = makeNode(ResultRelInfo);
		InitResultRelInfo(st->rri[i], rels[i], i + 1, NULL, 0);
		CheckCmdReplicaIdentity(rels[i], cmds[i]);
		/* where the after-trigger queue looks for it; closed with its indexes */
		st->estate->es_opened_result_relations =
			lappend(st->estate->es_opened_result_relations, st->rri[i]);
		ExecOpenIndices(st->rri[i], false);
	}
	/* GetTupleForTrigger wants one, though our rows are locked at their last version */
	EvalPlanQualInit(&st->epq, st->estate, NULL, NIL, -1);
	AfterTriggerBeginQuery();
	for (int i = 0; i < nrels; i++)
	{
		/* after the query began: its transition tables are the query's */
		st->capture[i] = MakeTransitionCaptureState(st->rri[i]->ri_TrigDesc,
													RelationGetRelid(rels[i]), cmds[i]);
		if (cmds[i] == CMD_UPDATE)
			ExecBSUpdateTriggers(st->estate, st->rri[i]);
		else
			ExecBSInsertTriggers(st->estate, st->rri[i]);
	}
}

void
pgcb_rows_end(PgcbRowsStatement *st)
{
	for (int i = 0; i < st->nrels; i++)
	{
		if (st->cmd[i] == CMD_UPDATE)
			ExecASUpdateTriggers(st->estate, st->rri[i], st->capture[i]);
		else
			ExecASInsertTriggers(st->estate, st->rri[i], st->capture[i]);
	}
	AfterTriggerEndQuery(st->estate);
	EvalPlanQualEnd(&st->epq);
	/* the triggers' slots and relations too, as the executor's end does */
	ExecResetTupleTable(st->estate->es_tupleTable, false);
	ExecCloseResultRelations(st->estate);
	ExecCloseRangeTableRelations(st->estate);
	FreeExecutorState(st->estate);
	st->estate = NULL;
}

bool
pgcb_rows_update(PgcbRowsStatement *st, int i, TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	ResultRelInfo *rri = st->rri[i];
	Relation	rel = rri->ri_RelationDesc;
	ItemPointerData tid = oldslot->tts_tid;
	List	   *recheck = NIL;
	bool		update_indexes;

	if (rri->ri_TrigDesc != NULL && rri->ri_TrigDesc->trig_update_before_row &&
		!ExecBRUpdateTriggers(st->estate, &st->epq, rri, &tid, NULL, newslot, NULL))
		return false;
	if (rel->rd_att->constr != NULL && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, st->estate, newslot, CMD_UPDATE);
	if (rel->rd_att->constr != NULL)
		ExecConstraints(rri, newslot, st->estate);
	simple_table_tuple_update(rel, &tid, newslot, st->estate->es_snapshot, &update_indexes);
	if (rri->ri_NumIndices > 0 && update_indexes)
		recheck = ExecInsertIndexTuples(rri, newslot, st->estate, true, false, NULL, NIL);
	ExecARUpdateTriggers(st->estate, rri, NULL, NULL, &tid, NULL, newslot, recheck,
						 st->capture[i], false);
	list_free(recheck);
	return true;
}

bool
pgcb_rows_insert(PgcbRowsStatement *st, int i, TupleTableSlot *slot)
{
	ResultRelInfo *rri = st->rri[i];
	Relation	rel = rri->ri_RelationDesc;
	List	   *recheck = NIL;

	if (rri->ri_TrigDesc != NULL && rri->ri_TrigDesc->trig_insert_before_row &&
		!ExecBRInsertTriggers(st->estate, rri, slot))
		return false;
	if (rel->rd_att->constr != NULL && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, st->estate, slot, CMD_INSERT);
	if (rel->rd_att->constr != NULL)
		ExecConstraints(rri, slot, st->estate);
	simple_table_tuple_insert(rel, slot);
	if (rri->ri_NumIndices > 0)
		recheck = ExecInsertIndexTuples(rri, slot, st->estate, false, false, NULL, NIL);
	ExecARInsertTriggers(st->estate, rri, slot, recheck, st->capture[i]);
	list_free(recheck);
	return true;
}

bool
pgcb_rows_lock(PgcbRowsStatement *st, int i, ItemPointer tid, TupleTableSlot *slot,
			   LockWaitPolicy wait, bool *held)
{
	Relation	rel = st->rri[i]->ri_RelationDesc;
	ItemPointerData at = *tid;
	TM_FailureData tmfd;
	TM_Result	res;
	uint8		flags = TUPLE_LOCK_FLAG_LOCK_UPDATE_IN_PROGRESS;

	*held = false;
	/* READ COMMITTED follows an update to the last version; see below */
	if (!IsolationUsesXactSnapshot())
		flags |= TUPLE_LOCK_FLAG_FIND_LAST_VERSION;
	/* the statement's command id, as nodeLockRows.c: a trigger's SQL moves the counter */
	res = table_tuple_lock(rel, &at, st->estate->es_snapshot, slot, st->estate->es_output_cid,
						   LockTupleExclusive, wait, flags, &tmfd);
	switch (res)
	{
		case TM_Ok:
			return true;
		case TM_WouldBlock:
			*held = true;
			return false;
		case TM_SelfModified:
			/* changed by this transaction since the snapshot: as deleted */
			return false;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update")));
			if (res == TM_Deleted)
				return false;
			/* FIND_LAST_VERSION follows updates: not reached */
			elog(ERROR, "pg_callback: unexpected table_tuple_lock result %d", (int) res);
			break;
		case TM_Invisible:
			elog(ERROR, "pg_callback: attempted to lock an invisible row of callback.%s",
				 RelationGetRelationName(rel));
			break;
		default:
			elog(ERROR, "pg_callback: unrecognized table_tuple_lock result %d", (int) res);
			break;
	}
	return false;
}
