/*
 * trigger_body.c
 *		The event callback.trigger() queues for one changed row, the same
 *		from the row and the statement path: {"type","timestamp","data":
 *		{"op","schema","table","new","old"}}.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "event.h"
#include "pg_callback.h"
#include "route_cache.h"
#include "row_json.h"
#include "tracecontext.h"
#include "trigger.h"

/*
 * Schema names by namespace OID, for the "schema" of every body: one
 * syscache look-up and copy per schema and backend instead of per row.
 * Dropped at any change of pg_namespace (ALTER SCHEMA ... RENAME).
 */
typedef struct NspName
{
	Oid			nspid;			/* hash key */
	char		name[NAMEDATALEN];
} NspName;

static HTAB *nsp_names = NULL;

/* bumped by every change of pg_namespace: the head below is stale then */
static uint64 nsp_generation = 0;

/*
 * The body's head up to the new row, {"op":"INSERT","schema":"s","table":
 * "t","new":, for the last relation and op seen: a statement's rows, and
 * a session's run of single-row writes to one table, escape nothing again.
 * A table renamed has another name; a schema renamed bumps the generation.
 */
static struct
{
	Oid			relid;
	Oid			nspid;
	uint64		nsp_generation;
	NameData	relname;
	char		op[16];
	char	   *text;
	int			len;
}			head = {InvalidOid};

static void
nsp_names_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS seq;
	NspName    *e;

	nsp_generation++;
	if (nsp_names == NULL)
		return;
	hash_seq_init(&seq, nsp_names);
	while ((e = hash_seq_search(&seq)) != NULL)
		(void) hash_search(nsp_names, &e->nspid, HASH_REMOVE, NULL);
}

static const char *
schema_name(Oid nspid)
{
	NspName    *e;
	bool		found;

	if (nsp_names == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(NspName);
		ctl.hcxt = CacheMemoryContext;
		nsp_names = hash_create("pg_callback schema names", 16, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterSyscacheCallback(NAMESPACEOID, nsp_names_callback, (Datum) 0);
	}
	e = hash_search(nsp_names, &nspid, HASH_FIND, NULL);
	if (e == NULL)
	{
		char	   *name = get_namespace_name(nspid);

		if (name == NULL)
			elog(ERROR, "cache lookup failed for namespace %u", nspid);
		e = hash_search(nsp_names, &nspid, HASH_ENTER, &found);
		strlcpy(e->name, name, NAMEDATALEN);
		pfree(name);
	}
	return e->name;
}

static void
append_head(StringInfo body, Relation rel, const char *op)
{
	if (head.text == NULL || head.relid != RelationGetRelid(rel) ||
		head.nspid != RelationGetNamespace(rel) ||
		head.nsp_generation != nsp_generation ||
		strcmp(head.op, op) != 0 ||
		strcmp(NameStr(head.relname), RelationGetRelationName(rel)) != 0)
	{
		StringInfoData s;
		uint64		generation = nsp_generation;	/* before any look-up */
		const char *schema = schema_name(RelationGetNamespace(rel));
		MemoryContext old;

		if (strlen(op) >= sizeof(head.op))
			elog(ERROR, "operation name \"%s\" too long", op);
		if (head.text)
			pfree(head.text);
		head.text = NULL;
		old = MemoryContextSwitchTo(CacheMemoryContext);
		initStringInfo(&s);
		appendStringInfo(&s, "{\"op\":\"%s\",\"schema\":", op);
		escape_json(&s, schema);
		appendStringInfoString(&s, ",\"table\":");
		escape_json(&s, RelationGetRelationName(rel));
		appendStringInfoString(&s, ",\"new\":");
		MemoryContextSwitchTo(old);
		head.relid = RelationGetRelid(rel);
		head.nspid = RelationGetNamespace(rel);
		head.nsp_generation = generation;
		strlcpy(NameStr(head.relname), RelationGetRelationName(rel), NAMEDATALEN);
		strlcpy(head.op, op, sizeof(head.op));
		head.text = s.data;
		head.len = s.len;
	}
	appendBinaryStringInfo(body, head.text, head.len);
}

void
pgcb_trigger_row_body(StringInfo body, Relation rel, const char *event_type, const char *op,
					  HeapTuple new_tuple, HeapTuple old_tuple)
{
	pgcb_event_body_begin(body, event_type);
	append_head(body, rel, op);
	pgcb_row_json_append(body, rel, new_tuple);
	appendBinaryStringInfo(body, ",\"old\":", 7);
	pgcb_row_json_append(body, rel, old_tuple);
	appendStringInfoChar(body, '}');
	pgcb_event_body_end(body);
}

/*
 * The body buffer, kept for the transaction's next event: a statement's
 * rows grow it once instead of each from 1 kB, with no palloc per row.  It
 * is taken while in use (an event queued from inside another's enqueue
 * gets a buffer of its own); one that an error leaves taken is freed with
 * the transaction's memory, as is the spare itself: a callback on that
 * memory forgets the spare when it goes.  The queue keeps no pointer to a
 * body (queue_insert.c copies it into the tuple).
 */
static char *spare_data = NULL;
static int	spare_maxlen;
static bool spare_watched = false;	/* the callback is on this transaction's memory */

static void
forget_spare(void *arg)
{
	spare_data = NULL;
	spare_watched = false;
}

static void
take_body_buffer(StringInfo body)
{
	if (!spare_watched)
	{
		MemoryContextCallback *cb = MemoryContextAlloc(TopTransactionContext, sizeof(*cb));

		cb->func = forget_spare;
		cb->arg = NULL;
		MemoryContextRegisterResetCallback(TopTransactionContext, cb);
		spare_watched = true;
		spare_data = NULL;
	}
	if (spare_data != NULL)
	{
		body->data = spare_data;
		body->maxlen = spare_maxlen;
	}
	else
	{
		body->maxlen = 1024;
		body->data = MemoryContextAlloc(TopTransactionContext, body->maxlen);
	}
	spare_data = NULL;
	resetStringInfo(body);
}

static void
give_body_buffer(StringInfo body)
{
	/* a huge one is not held for the rest of the transaction */
	if (body->maxlen > 1024 * 1024)
	{
		pfree(body->data);
		return;
	}
	spare_data = body->data;
	spare_maxlen = body->maxlen;
}

bool
pgcb_trigger_routed(const char *event_type, PgcbRoutes *routes)
{
	/* as queue_insert.c refuses, routed or not: the outcome must not depend on routes */
	PreventCommandIfReadOnly("INSERT");
	PreventCommandIfParallelMode("INSERT");
	pgcb_route_cache_lookup(event_type, routes);
	return routes->n > 0;
}

void
pgcb_trigger_row_event(Relation rel, const char *event_type, const char *op,
					   HeapTuple new_tuple, HeapTuple old_tuple, const char *key_option,
					   PgcbIdRun *id_run)
{
	StringInfoData body;
	PgcbEventRow ev = {0};
	PgcbKeySource key = {rel, new_tuple ? new_tuple : old_tuple, key_option};
	PgcbRoutes	routes;

	/* no endpoint wants the event: no body to build (routes are kept, route_cache.c) */
	if (!pgcb_trigger_routed(event_type, &routes))
		return;
	take_body_buffer(&body);
	/* a text's header in front (it has room): the queue stores it as is */
	body.len = VARHDRSZ;
	pgcb_trigger_row_body(&body, rel, event_type, op, new_tuple, old_tuple);
	SET_VARSIZE(body.data, body.len);
	ev.event_type = event_type;
	ev.body = body.data + VARHDRSZ;
	ev.body_len = body.len - VARHDRSZ;
	ev.body_text = (const struct varlena *) body.data;
	/* the writing transaction's SET LOCAL callback.traceparent, if any */
	pgcb_trace_for_event(NULL, NULL, &ev.traceparent, &ev.tracestate);
	/* ordering: made only if an ordered endpoint gets the event */
	ev.ordering_key_fn = pgcb_trigger_key;
	ev.ordering_key_arg = &key;
	ev.id_run = id_run;
	/* where it goes was decided when it happened, above */
	ev.routes = &routes;
	pgcb_event_enqueue(&ev);
	give_body_buffer(&body);
}
