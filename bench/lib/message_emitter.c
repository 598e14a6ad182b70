/*
 * message_emitter.c
 *		Events as transactional logical messages, written in C: what that
 *		lever of issue 10 would cost a business write (bench parts 2 and 9).
 *		A bench module, not part of pg_callback (README, "Events as logical
 *		messages").
 *
 * bench_message_trigger('prefix') is an AFTER ... FOR EACH ROW trigger for
 * INSERT that does what callback.trigger('prefix') does for one row up to
 * the point where the event is stored, with pg_callback's own functions:
 * the routes from the route cache (no endpoint matching: nothing at all),
 * the body, the event id, the session's trace context.  Then, instead of a
 * row in callback_queue or callback_inbox, it writes one transactional
 * logical message (prefix "pg_callback") holding what a worker would need
 * to queue the deliveries: the event id, the time, the endpoints' ids, the
 * event type and the body.  Nothing reads the messages here: a real design
 * would decode them through a replication slot, the way the inbox's rows
 * are moved, and that reader's cost is not measured.
 *
 * It calls pg_callback's functions by name: PostgreSQL loads modules with
 * RTLD_GLOBAL, and the bench preloads pg_callback (shared_preload_libraries)
 * before any session loads this one.
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "replication/message.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "event_id.h"
#include "route_cache.h"
#include "tracecontext.h"
#include "trigger.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_message_trigger);

/* the message's fixed head; the endpoints' ids, the type, the trace context and the body follow */
typedef struct EventMessageHead
{
	pg_uuid_t	event_id;
	TimestampTz created_at;
	int32		n_endpoints;
	int32		type_len;
	int32		body_len;
} EventMessageHead;

static StringInfoData msg;		/* kept for the backend: no palloc per event */

Datum
bench_message_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	char		event_type[NAMEDATALEN + 16];
	PgcbRoutes	routes;
	EventMessageHead head;
	const char *traceparent;
	const char *tracestate;
	int			body_at;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "bench_message_trigger('prefix') is an AFTER INSERT ... FOR EACH ROW trigger");
	snprintf(event_type, sizeof(event_type), "%s.insert", trigdata->tg_trigger->tgargs[0]);

	if (!pgcb_trigger_routed(event_type, &routes))
		return PointerGetDatum(NULL);
	if (msg.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&msg);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(&msg);
	memset(&head, 0, sizeof(head));	/* its padding goes into the WAL too */
	pgcb_event_id_new(&head.event_id, NULL);
	head.created_at = GetCurrentTransactionStartTimestamp();
	head.n_endpoints = routes.n;
	head.type_len = strlen(event_type);
	appendBinaryStringInfo(&msg, (char *) &head, sizeof(head));
	appendBinaryStringInfo(&msg, (char *) routes.ids, routes.n * sizeof(int32));
	appendBinaryStringInfo(&msg, event_type, head.type_len);
	/* the trace context, each NUL-terminated (empty: none) */
	pgcb_trace_for_event(NULL, NULL, &traceparent, &tracestate);
	appendStringInfoString(&msg, traceparent ? traceparent : "");
	appendStringInfoChar(&msg, '\0');
	appendStringInfoString(&msg, tracestate ? tracestate : "");
	appendStringInfoChar(&msg, '\0');
	body_at = msg.len;
	pgcb_trigger_row_body(&msg, trigdata->tg_relation, event_type, "INSERT",
						  trigdata->tg_trigtuple, NULL);
	((EventMessageHead *) msg.data)->body_len = msg.len - body_at;
	(void) LogLogicalMessage("pg_callback", msg.data, msg.len, true);
	return PointerGetDatum(NULL);
}
