/*
 * queue_rows.c
 *		Row writes to the extension's tables made as one SQL statement would
 *		make them, without SPI, planner or executor start-up per row: the
 *		rows through ExecSimpleRelationUpdate / ExecSimpleRelationInsert
 *		(constraints, the table AM, index entries with partial predicates,
 *		row triggers), as logical replication's apply writes a change; the
 *		statement's triggers and after-trigger queue around them.  An
 *		operator's trigger on the queue (an audit trigger, test_faults.py)
 *		fires as it did when the engine's writes were SQL statements.
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"

#include "queue_rows.h"

AttrNumber
pgcb_rows_column(Relation rel, const char *name)
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
	TriggerDesc *trig = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		unsupported(rel, "a kind other than a plain table", who);
	/* the simple-relation helpers capture no transition tables */
	if (trig != NULL && cmd == CMD_UPDATE &&
		(trig->trig_update_old_table || trig->trig_update_new_table))
		unsupported(rel, "an UPDATE trigger with transition tables", who);
	if (trig != NULL && cmd == CMD_INSERT && trig->trig_insert_new_table)
		unsupported(rel, "an INSERT trigger with a transition table", who);
	/* the owner bypasses row security unless it is forced */
	if (rel->rd_rel->relrowsecurity && rel->rd_rel->relforcerowsecurity)
		unsupported(rel, "forced row level security", who);
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
		/* where the after-trigger queue looks for it; closed with its indexes */
		st->estate->es_opened_result_relations =
			lappend(st->estate->es_opened_result_relations, st->rri[i]);
		ExecOpenIndices(st->rri[i], false);
	}
	AfterTriggerBeginQuery();
	for (int i = 0; i < nrels; i++)
	{
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
			ExecASUpdateTriggers(st->estate, st->rri[i], NULL);
		else
			ExecASInsertTriggers(st->estate, st->rri[i], NULL);
	}
	AfterTriggerEndQuery(st->estate);
	/* the triggers' slots and relations too, as the executor's end does */
	ExecResetTupleTable(st->estate->es_tupleTable, false);
	ExecCloseResultRelations(st->estate);
	ExecCloseRangeTableRelations(st->estate);
	FreeExecutorState(st->estate);
	st->estate = NULL;
}

bool
pgcb_rows_lock(Relation rel, ItemPointer tid, Snapshot snapshot, TupleTableSlot *slot,
			   LockWaitPolicy wait, bool *held)
{
	ItemPointerData at = *tid;
	TM_FailureData tmfd;
	TM_Result	res;
	uint8		flags = TUPLE_LOCK_FLAG_LOCK_UPDATE_IN_PROGRESS;

	*held = false;
	/* READ COMMITTED follows an update to the last version; see below */
	if (!IsolationUsesXactSnapshot())
		flags |= TUPLE_LOCK_FLAG_FIND_LAST_VERSION;
	res = table_tuple_lock(rel, &at, snapshot, slot, GetCurrentCommandId(false),
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
