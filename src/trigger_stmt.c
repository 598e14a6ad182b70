/*
 * trigger_stmt.c
 *		callback.trigger() fired FOR EACH STATEMENT: one event per row of
 *		the statement's transition tables, with the same body as the row
 *		trigger would queue, for bulk writes (INSERT ... SELECT, COPY,
 *		UPDATE or DELETE of many rows).
 *
 *	  AFTER INSERT ON t REFERENCING NEW TABLE AS n FOR EACH STATEMENT ...
 *	  AFTER UPDATE ON t REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT ...
 *	  AFTER DELETE ON t REFERENCING OLD TABLE AS o FOR EACH STATEMENT ...
 *
 * PostgreSQL allows transition tables on a trigger for one event only, so
 * these are three triggers.  For UPDATE, the old and the new table hold the
 * rows in the same order: AfterTriggerSaveEvent() (commands/trigger.c)
 * appends a row's old and new versions to the two tuplestores in the same
 * call, a row moved across partitions its old version at the delete and
 * its new one at the insert that immediately follows.  So row i of one
 * pairs with row i of the other.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "pg_callback.h"
#include "queue_insert.h"
#include "route_cache.h"
#include "trigger.h"

static void
missing_table(TriggerData *trigdata, const char *op, const char *needed)
{
	ereport(ERROR,
			(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
			 errmsg("callback.trigger() fired FOR EACH STATEMENT on %s needs %s",
					op, needed),
			 errdetail("Trigger \"%s\" on \"%s\" declares no such transition table.",
					   trigdata->tg_trigger->tgname,
					   RelationGetRelationName(trigdata->tg_relation)),
			 errhint("CREATE TRIGGER ... AFTER INSERT ON t REFERENCING NEW TABLE AS n FOR EACH STATEMENT, "
					 "AFTER UPDATE ... REFERENCING OLD TABLE AS o NEW TABLE AS n, or "
					 "AFTER DELETE ... REFERENCING OLD TABLE AS o; or use FOR EACH ROW.")));
}

/* The next row of ts in slot, as a heap tuple; NULL at the end. */
static HeapTuple
next_row(Tuplestorestate *ts, TupleTableSlot *slot, bool *should_free)
{
	*should_free = false;
	if (ts == NULL || !tuplestore_gettupleslot(ts, true, false, slot))
		return NULL;
	return ExecFetchSlotHeapTuple(slot, false, should_free);
}

void
pgcb_trigger_stmt_fire(TriggerData *trigdata, const char *event_type, const char *op,
					   const char *key_option)
{
	Relation	rel = trigdata->tg_relation;
	Trigger    *trigger = trigdata->tg_trigger;
	bool		want_old = false;
	bool		want_new = false;
	Tuplestorestate *old_ts;
	Tuplestorestate *new_ts;
	Tuplestorestate *rows_ts;
	TupleTableSlot *old_slot;
	TupleTableSlot *new_slot;
	MemoryContext row_cxt;
	MemoryContext old_cxt;
	bool		batch;
	PgcbIdRun	run = {0};
	PgcbIdRun  *id_run;
	PgcbRoutes	routes;

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		want_new = true;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		want_old = want_new = true;
	else
		want_old = true;
	if (want_old && want_new && (trigger->tgoldtable == NULL || trigger->tgnewtable == NULL))
		missing_table(trigdata, op, "REFERENCING OLD TABLE AS ... NEW TABLE AS ...");
	if (want_new && trigger->tgnewtable == NULL)
		missing_table(trigdata, op, "REFERENCING NEW TABLE AS ...");
	if (want_old && trigger->tgoldtable == NULL)
		missing_table(trigdata, op, "REFERENCING OLD TABLE AS ...");

	/*
	 * No endpoint wants these events: the rows need not be read.  routes
	 * serve only this test: each row's event looks its own up, so that a
	 * change seen while the rows are read reaches the next row's event.
	 */
	if (!pgcb_trigger_routed(event_type, &routes))
		return;

	/* a statement that changed no row may leave a tuplestore unmade */
	old_ts = want_old ? trigdata->tg_oldtable : NULL;
	new_ts = want_new ? trigdata->tg_newtable : NULL;
	if (old_ts)
		tuplestore_rescan(old_ts);
	if (new_ts)
		tuplestore_rescan(new_ts);
	old_slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
	new_slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
	/* what one row's event allocates (its JSON, its body) goes with it */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback statement row",
									ALLOCSET_DEFAULT_SIZES);
	old_cxt = MemoryContextSwitchTo(row_cxt);
	/*
	 * The statement's queue rows written together, before we return; a
	 * single row's written as the row trigger writes it (a batch and its
	 * packs would only cost more).
	 */
	rows_ts = new_ts ? new_ts : old_ts;
	batch = rows_ts != NULL && tuplestore_tuple_count(rows_ts) > 1 && pgcb_queue_batch_begin();

	/*
	 * The statement's events that are packed into the inbox get consecutive
	 * ids, so that a pack stores its first only (event_id.c).  event.c
	 * asks for each event, as callback.inbox may change meanwhile.
	 */
	id_run = batch ? &run : NULL;

	for (;;)
	{
		bool		free_old = false;
		bool		free_new = false;
		HeapTuple	old_tuple;
		HeapTuple	new_tuple;

		CHECK_FOR_INTERRUPTS();

		/*
		 * A tuplestore spilled to disk hands over tuples it read into
		 * row_cxt, owned by the slot: free them before the context.
		 */
		ExecClearTuple(old_slot);
		ExecClearTuple(new_slot);
		MemoryContextReset(row_cxt);
		old_tuple = want_old ? next_row(old_ts, old_slot, &free_old) : NULL;
		new_tuple = want_new ? next_row(new_ts, new_slot, &free_new) : NULL;
		if (want_old && want_new && (old_tuple == NULL) != (new_tuple == NULL))
			elog(ERROR, "transition tables of an UPDATE differ in length");
		if (old_tuple == NULL && new_tuple == NULL)
			break;
		pgcb_trigger_row_event(rel, event_type, op, new_tuple, old_tuple, key_option, id_run);
	}
	if (batch)
		pgcb_queue_batch_end();

	ExecClearTuple(old_slot);
	ExecClearTuple(new_slot);
	MemoryContextSwitchTo(old_cxt);
	MemoryContextDelete(row_cxt);
	ExecDropSingleTupleTableSlot(old_slot);
	ExecDropSingleTupleTableSlot(new_slot);
}
