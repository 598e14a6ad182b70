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
 * name is the prefix.  An argument 'key=col1,col2' (after the prefix, or
 * alone) names the columns of the ordering key, for ordered endpoints
 * (trigger_key.c; the default is the primary key).  Fired FOR EACH STATEMENT with transition tables it
 * queues the same events, one per row (trigger_stmt.c).
 *
 * Who may choose event types: PostgreSQL checks EXECUTE on callback.trigger()
 * (granted to callback_producer) only at CREATE TRIGGER.  An explicit prefix
 * is fixed then.  Without one, whoever owns the table picks the prefix at any
 * time by renaming the table, so that form fires only while the table's
 * owner holds callback_producer: a REVOKE or an ALTER TABLE ... OWNER TO a
 * non-producer makes its writes fail rather than let a non-producer name
 * event types.  The answer is cached per backend (one owner) and dropped on
 * any change to roles or memberships, so a row pays one comparison.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "event.h"
#include "pg_callback.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(callback_trigger);

#define PGCB_PRODUCER_ROLE "callback_producer"

/* Is owner_cached a producer?  Valid until a role or membership changes. */
static bool producer_cache_valid = false;
static bool producer_callbacks_registered = false;
static Oid	owner_cached = InvalidOid;
static bool owner_is_producer = false;

static void
producer_cache_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	producer_cache_valid = false;
}

/*
 * The no-argument form lets the table's owner name the event type (by
 * renaming the table): refuse unless that owner is a producer now.
 */
static void
check_owner_is_producer(Relation rel)
{
	Oid			owner = rel->rd_rel->relowner;

	if (!producer_cache_valid || owner != owner_cached)
	{
		Oid			producer;

		if (!producer_callbacks_registered)
		{
			/* GRANT/REVOKE of a role; a role renamed, dropped, made superuser */
			CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, producer_cache_invalidate, (Datum) 0);
			CacheRegisterSyscacheCallback(AUTHOID, producer_cache_invalidate, (Datum) 0);
			producer_callbacks_registered = true;
		}
		/* valid first: an invalidation read while we look wins */
		producer_cache_valid = true;
		owner_cached = owner;
		producer = get_role_oid(PGCB_PRODUCER_ROLE, true);
		owner_is_producer = OidIsValid(producer) && has_privs_of_role(owner, producer);
	}
	if (!owner_is_producer)
	{
		const char *owner_name = GetUserNameFromId(owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("callback.trigger() without a prefix fires only when the owner of table \"%s\" holds %s",
						RelationGetRelationName(rel), PGCB_PRODUCER_ROLE),
				 errdetail("Without an argument the event type prefix is the table's name, which its owner can change by renaming the table; role \"%s\" is not a producer.",
						   owner_name ? owner_name : "?"),
				 errhint("GRANT %s to the table's owner, or recreate the trigger with a fixed prefix: EXECUTE FUNCTION callback.trigger('%s').",
						 PGCB_PRODUCER_ROLE, RelationGetRelationName(rel))));
	}
}

/*
 * The prefix seen last, found valid, and the event types made from it: a
 * table's rows, and a session's writes through one trigger, pay a string
 * comparison instead of a check and a format per row.  Keyed by the
 * prefix's text, so a table renamed (the no-argument form) or a trigger
 * replaced with another prefix is a miss, and a new type.
 */
#define PGCB_OP_INSERT 0
#define PGCB_OP_UPDATE 1
#define PGCB_OP_DELETE 2
static struct
{
	char		prefix[PGCB_EVENT_TYPE_MAX + 1];	/* "": none yet */
	int			type_len[3];	/* per op; 0: not made yet */
	char		type[3][PGCB_EVENT_TYPE_MAX + 1];
}			last_types;

static void
check_prefix(const char *prefix)
{
	/* "" is no prefix: never valid, never a hit */
	if (last_types.prefix[0] != '\0' && strcmp(prefix, last_types.prefix) == 0)
		return;
	/* room for ".insert", ".update" or ".delete" (7 bytes each) */
	if (strlen(prefix) > PGCB_EVENT_TYPE_MAX - 7 || !pgcb_event_type_is_valid(prefix, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event type prefix \"%s\"", pgcb_event_clip_for_message(prefix)),
				 errhint("Use 1 to %d of the characters A-Z a-z 0-9 _ . -, such as 'order'; "
						 "the event type is the prefix and .insert, .update or .delete.",
						 PGCB_EVENT_TYPE_MAX - 7)));
	strlcpy(last_types.prefix, prefix, sizeof(last_types.prefix));
	memset(last_types.type_len, 0, sizeof(last_types.type_len));
}

/*
 * prefix.op_lower into event_type (PGCB_EVENT_TYPE_MAX + 1 bytes), for a
 * prefix check_prefix() has just passed.  Copied out: a trigger fired
 * while this one builds its body may change the cache.
 */
static void
make_event_type(char *event_type, const char *prefix, int op, const char *op_lower)
{
	if (last_types.type_len[op] == 0)
	{
		snprintf(last_types.type[op], sizeof(last_types.type[op]), "%s.%s", prefix, op_lower);
		pgcb_event_check_type(last_types.type[op], false, "event type");
		last_types.type_len[op] = strlen(last_types.type[op]);
	}
	memcpy(event_type, last_types.type[op], last_types.type_len[op] + 1);
}

Datum
callback_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	const char *prefix;
	const char *op;
	const char *op_lower;
	int			op_index;
	const char *key_option = NULL;
	int			nargs;
	HeapTuple	new_tuple = NULL;
	HeapTuple	old_tuple = NULL;
	char		event_type[PGCB_EVENT_TYPE_MAX + 1];

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
	/* [prefix] ['key=col,...']: no prefix holds '=' */
	nargs = trigger->tgnargs;
	if (nargs > 0 && pgcb_trigger_key_is_option(trigger->tgargs[nargs - 1]))
		key_option = trigger->tgargs[--nargs];
	if (nargs > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("callback.trigger() takes at most an event type prefix and a key option"),
				 errhint("Give a prefix and, for ordered endpoints, the key columns: callback.trigger('order', 'key=customer_id'); or none to use the table's name and primary key.")));
	if (nargs == 0)
		check_owner_is_producer(rel);
	prefix = nargs == 1 ? trigger->tgargs[0] : RelationGetRelationName(rel);
	check_prefix(prefix);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = "INSERT";
		op_lower = "insert";
		op_index = PGCB_OP_INSERT;
		new_tuple = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = "UPDATE";
		op_lower = "update";
		op_index = PGCB_OP_UPDATE;
		old_tuple = trigdata->tg_trigtuple;
		new_tuple = trigdata->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = "DELETE";
		op_lower = "delete";
		op_index = PGCB_OP_DELETE;
		old_tuple = trigdata->tg_trigtuple;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback.trigger() handles INSERT, UPDATE and DELETE only"),
				 errhint("Fire it AFTER INSERT, UPDATE or DELETE, not on TRUNCATE.")));

	make_event_type(event_type, prefix, op_index, op_lower);

	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		pgcb_trigger_row_event(rel, event_type, op, new_tuple, old_tuple, key_option, NULL);
	else
		pgcb_trigger_stmt_fire(trigdata, event_type, op, key_option);

	return PointerGetDatum(NULL);
}
