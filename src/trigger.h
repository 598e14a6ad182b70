/*
 * trigger.h
 *		callback.trigger()'s two firing paths, per row (trigger.c) and per
 *		statement over transition tables (trigger_stmt.c), share one body.
 */
#ifndef PGCB_TRIGGER_H
#define PGCB_TRIGGER_H

#include "access/htup.h"
#include "commands/trigger.h"
#include "lib/stringinfo.h"
#include "utils/rel.h"

#include "event_id.h"

/*
 * Queue the event of one changed row of rel: event type, op ("INSERT",
 * "UPDATE", "DELETE") and the row before and/or after (NULL when absent).
 * key_option: the trigger's 'key=...' argument, or NULL (primary key).
 * id_run: where its id comes from (event_id.h), or NULL: a random id.
 */
extern void pgcb_trigger_row_event(Relation rel, const char *event_type, const char *op,
								   HeapTuple new_tuple, HeapTuple old_tuple,
								   const char *key_option, PgcbIdRun *id_run);

/*
 * Append to body the event of that row change, as pgcb_trigger_row_event
 * queues it (backfill.c builds its events here too).
 */
extern void pgcb_trigger_row_body(StringInfo body, Relation rel, const char *event_type,
								  const char *op, HeapTuple new_tuple, HeapTuple old_tuple);

/*
 * Whether an enabled endpoint's patterns match event_type: if none does,
 * the trigger builds nothing (no body, no event id) and queues nothing.
 * The routes found go into *routes, for the event's queue rows.
 */
struct PgcbRoutes;
extern bool pgcb_trigger_routed(const char *event_type, struct PgcbRoutes *routes);

/* FOR EACH STATEMENT: one event per row of the transition tables. */
extern void pgcb_trigger_stmt_fire(TriggerData *trigdata, const char *event_type,
								   const char *op, const char *key_option);

/* ordering (trigger_key.c): where a row's ordering key comes from. */
typedef struct PgcbKeySource
{
	Relation	rel;
	HeapTuple	tuple;			/* the new row, or the old one of a DELETE */
	const char *option;			/* 'key=col,...', or NULL: the primary key */
} PgcbKeySource;

/* Whether a trigger argument is the key option ('key=...'). */
extern bool pgcb_trigger_key_is_option(const char *arg);

/* The ordering key of a PgcbKeySource (palloc'd), or NULL: none. */
extern char *pgcb_trigger_key(void *arg);

#endif							/* PGCB_TRIGGER_H */
