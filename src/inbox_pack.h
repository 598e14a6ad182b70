/*
 * inbox_pack.h
 *		Packs: several events of one statement, for one endpoint, carried by
 *		one callback_inbox row (its events and more columns).
 */
#ifndef PGCB_INBOX_PACK_H
#define PGCB_INBOX_PACK_H

#include "event.h"

/*
 * Most bytes a pack row may take as stored, roughly as heap_form_tuple
 * will: below TOAST_TUPLE_THRESHOLD (2,032 with 8 kB pages), so that the
 * heap insert neither compresses nor toasts it.  An event whose row alone
 * is past it is written alone.
 */
#define PGCB_PACK_MAX_ROW 1900

/*
 * Most bytes a pack collects before it closes when its more is compressed
 * (lz4): how far it goes towards this depends on how well the statement's
 * bodies have compressed so far (inbox_pack.c).
 */
#define PGCB_PACK_MAX_RAW 8192

/*
 * One entry of more: its body's length, then the body.  Its event id is
 * the one before it stepped by 1 (event_id.h), the first being the row's.
 */
#define PGCB_PACK_ENTRY_HEAD 4

/* Most events a pack can carry: entries of one byte of body at least. */
#define PGCB_PACK_MAX_EVENTS (PGCB_PACK_MAX_RAW / (PGCB_PACK_ENTRY_HEAD + 1) + 1)

/* A closed pack, to be written as one inbox row. */
typedef struct PgcbPackRow
{
	int32		endpoint_id;
	pg_uuid_t	event_id;		/* the first event's */
	const char *event_type;
	const char *traceparent;	/* NULL: absent */
	const char *tracestate;
	const struct varlena *body; /* the first event's, a text */
	int32		events;
	const struct varlena *more; /* a bytea of events 2..n; NULL when events = 1 */
	Size		bytes;			/* the row's variable data, about */
} PgcbPackRow;

/* Writes a closed pack as a row; the pack's memory is reused after it returns. */
typedef void (*PgcbPackEmit) (const PgcbPackRow *row, void *arg);

/*
 * Append ev's delivery to endpoint_id's open pack (one with ev's type and
 * trace context, whose last event's id stepped by 1 is ev's), emitting
 * packs that close on the way.  False when the event cannot be packed
 * because its row alone would be past the bound:
 * the endpoint's pack is emitted first, so the caller writing the event
 * now keeps the endpoint's order.  An event with an ordering key for the
 * endpoint is the caller's to write alone: packs carry no key.
 */
extern bool pgcb_pack_add(const PgcbEventRow *ev, int32 endpoint_id,
						  PgcbPackEmit emit, void *arg);

/* Emit every open pack, oldest first. */
extern void pgcb_pack_close_all(PgcbPackEmit emit, void *arg);

/* Forget the open packs, unwritten (their subtransaction is rolling back). */
extern void pgcb_pack_discard(void);

/* Whether any pack is open. */
extern bool pgcb_pack_any_open(void);

/*
 * Reading more.  pgcb_pack_check: NULL if more holds exactly n entries that
 * end where it ends, else what is wrong (for a message).  pgcb_pack_next:
 * the entry at *pos (checked), and *pos moved past it; *event_id, the id of
 * the event before it on the way in (the row's for the first), is its id
 * on the way out.
 */
extern const char *pgcb_pack_check(const struct varlena *more, int32 n);
extern void pgcb_pack_next(const char **pos, pg_uuid_t *event_id, const char **body,
						   int32 *body_len);

#endif							/* PGCB_INBOX_PACK_H */
