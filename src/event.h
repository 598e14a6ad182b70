/*
 * event.h
 *		Turning an event into queue rows: the body on the wire, routing to
 *		endpoints, and the wake-up of the worker at commit.
 */
#ifndef PGCB_EVENT_H
#define PGCB_EVENT_H

#include "lib/stringinfo.h"
#include "utils/uuid.h"

#include "event_id.h"

struct PgcbRoutes;

/* Start a body: {"type":"...","timestamp":"...","data":  (the caller appends data) */
extern void pgcb_event_body_begin(StringInfo buf, const char *event_type);
/* Close the body begun by pgcb_event_body_begin. */
extern void pgcb_event_body_end(StringInfo buf);

/*
 * One event on its way into the queue.  The caller fills everything but
 * event_id; the optional attributes are NULL when absent.
 */
typedef struct PgcbEventRow
{
	pg_uuid_t	event_id;		/* set by pgcb_event_enqueue */
	const char *event_type;
	const char *body;			/* the exact bytes to send */
	int			body_len;
	/* or NULL: the same bytes as a text, kept until enqueued (saves a copy) */
	const struct varlena *body_text;
	const char *ordering_key;	/* ordered endpoints: one event per key at a time */
	/* or, when NULL, made by this only if an ordered endpoint gets the event */
	char	   *(*ordering_key_fn) (void *arg);
	void	   *ordering_key_arg;
	const char *traceparent;	/* W3C trace context sent with every attempt */
	const char *tracestate;
	PgcbIdRun  *id_run;			/* or NULL; its next id if the event is packed */
	/* or NULL: where the event goes, looked up when it happened (route_cache.h) */
	const struct PgcbRoutes *routes;
} PgcbEventRow;

/*
 * Insert one queue row per enabled endpoint whose patterns match the
 * event's type, and arrange for the worker to be woken when the
 * transaction commits.  Fills ev->event_id.  Returns the number of
 * deliveries queued.
 */
extern uint64 pgcb_event_enqueue(PgcbEventRow *ev);

/* Longest ordering key, in bytes (a btree index holds it). */
#define PGCB_ORDERING_KEY_MAX 1024

/* ordering: key, if it is a valid ordering key; else an error. */
extern const char *pgcb_event_check_key(const char *key);
/*
 * Insert one queue row for endpoint_id alone (no routing), as
 * pgcb_event_enqueue does for each endpoint it routes to.
 */
extern void pgcb_event_enqueue_to(PgcbEventRow *ev, int32 endpoint_id);

/* Install the hook that wakes the worker at COMMIT PREPARED (preload only). */
extern void pgcb_event_init(void);

/* ereport(ERROR) unless type is a valid event type (or pattern). */
extern void pgcb_event_check_type(const char *type, bool pattern, const char *what);

/* s, or its start and "..." when longer than an event type may be: for messages. */
extern const char *pgcb_event_clip_for_message(const char *s);

#endif							/* PGCB_EVENT_H */
