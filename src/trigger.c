/*
 * trigger.c
 *		callback.trigger(): the C row trigger that turns a committed row
 *		change into an event.  Because the queue insert happens inside the
 *		business transaction, a rollback sends nothing.
 *
 *	  AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW
 *	  EXECUTE FUNCTION callback.trigger('order')
 *
 * queues "order.insert" / "order.update" / "order.delete" events whose data
 * is {"op","schema","table","new","old"}.  Without an argument the table
 * name is the prefix.  Fired FOR EACH STATEMENT with transition tables it
 * queues the same events, one per row (trigger_stmt.c).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "event.h"
#include "pg_callback.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(callback_trigger);

Datum
callback_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	const char *prefix;
	const char *op;
	const char *op_lower;
	HeapTuple	new_tuple = NULL;
	HeapTuple	old_tuple = NULL;
	char		event_type[PGCB_EVENT_TYPE_MAX + 16];

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback.trigger() was not called by the trigger manager"),
				 errhint("Use it in CREATE TRIGGER ... AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION callback.trigger('prefix').")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback.trigger() must be fired AFTER ... FOR EACH ROW or AFTER ... FOR EACH STATEMENT"),
				 errhint("CREATE TRIGGER ... AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION callback.trigger('prefix').")));

	trigger = trigdata->tg_trigger;
	rel = trigdata->tg_relation;
	if (trigger->tgnargs > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("callback.trigger() takes at most one argument, the event type prefix"),
				 errhint("Give one prefix, such as callback.trigger('order'), or none to use the table's name.")));
	prefix = trigger->tgnargs == 1 ? trigger->tgargs[0] : RelationGetRelationName(rel);
	/* room for ".insert", ".update" or ".delete" (7 bytes each) */
	if (strlen(prefix) > PGCB_EVENT_TYPE_MAX - 7 || !pgcb_event_type_is_valid(prefix, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event type prefix \"%s\"", pgcb_event_clip_for_message(prefix)),
				 errhint("Use 1 to %d of the characters A-Z a-z 0-9 _ . -, such as 'order'; "
						 "the event type is the prefix and .insert, .update or .delete.",
						 PGCB_EVENT_TYPE_MAX - 7)));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = "INSERT";
		op_lower = "insert";
		new_tuple = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = "UPDATE";
		op_lower = "update";
		old_tuple = trigdata->tg_trigtuple;
		new_tuple = trigdata->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = "DELETE";
		op_lower = "delete";
		old_tuple = trigdata->tg_trigtuple;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback.trigger() handles INSERT, UPDATE and DELETE only"),
				 errhint("Fire it AFTER INSERT, UPDATE or DELETE, not on TRUNCATE.")));

	snprintf(event_type, sizeof(event_type), "%s.%s", prefix, op_lower);
	pgcb_event_check_type(event_type, false, "event type");

	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		pgcb_trigger_row_event(rel, event_type, op, new_tuple, old_tuple);
	else
		pgcb_trigger_stmt_fire(trigdata, event_type, op);

	return PointerGetDatum(NULL);
}
