/*
 * inbox_pack.c
 *		Packs of a statement's events for callback_inbox: while a batch is
 *		open (the statement trigger) and the target is the inbox, the
 *		events of one endpoint with the same type and trace context, and no
 *		ordering key, are collected here and written as one row: the first
 *		event in the row's own columns, the others in its more column.
 *
 * Why: every inbox row of one statement repeats xact, seq, written_at,
 * created_at, endpoint_id, event_type and the trace context; forming,
 * inserting and logging a full tuple per event cost the statement path a
 * quarter of the plain INSERT's instructions per row.  A pack pays for
 * them once per row of about PGCB_PACK_MAX_ROW bytes, and each further
 * event only for copying its length and body.
 *
 * Compression: with lz4 (compat.h), more is stored compressed, inline, as
 * the heap would store it (toast_compress_datum; reading it detoasts it),
 * and a pack collects until its row's raw bytes reach its limit, up to
 * PGCB_PACK_MAX_RAW, instead of PGCB_PACK_MAX_ROW.  A statement's bodies
 * differ in a few values each, and a pack's more (without ids, event_id.c)
 * compressed about fourteenfold in the bench (162-byte bodies): a tenth of
 * the heap pages for the same events, each page having to be extended,
 * logged and written.  A pack's limit follows the compression seen and its
 * own first body (pack_limit), so that the stored row stays below
 * PGCB_PACK_MAX_ROW; bodies that do not compress bring it back to
 * PGCB_PACK_MAX_ROW.  A row that still ends up past the TOAST threshold
 * (the first pack after the bodies changed) is toasted by the heap, as any
 * row: stored correctly, only at more cost.
 *
 * more's layout (ours; the table's comment says the same): for each event
 * after the first, in order, its body's length as a 4-byte unsigned
 * integer in network byte order and the body's bytes, with no padding.
 * The events' ids are not stored: a pack takes only an event whose id is
 * its last one's stepped by 1 (event_id.c makes a statement's ids so), so
 * each is the row's event_id stepped by its place.  The worker's move
 * (inbox.c) reads it back into one queue row per event.
 *
 * This file knows nothing of tuples: a pack that closes is handed to the
 * caller's emit function (queue_insert.c forms and buffers its row).  The
 * buffers live in their own context under TopMemoryContext and are reused
 * by every statement; a pack never outlives the batch that opened it
 * (queue_insert.c closes them all at the batch's end, or discards them at
 * an abort).
 */
#include "postgres.h"

#include "access/heaptoast.h"
#include "access/toast_compression.h"
#include "access/toast_internals.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "utils/memutils.h"

#include "compat.h"
#include "event_id.h"
#include "inbox_pack.h"

StaticAssertDecl(PGCB_PACK_MAX_ROW < TOAST_TUPLE_THRESHOLD,
				 "a pack row must stay below the heap's TOAST threshold");

/*
 * What a row takes besides its texts' bytes: the tuple header and null
 * bitmap, the fixed-width columns, five 4-byte varlena headers and the
 * alignment padding between them, rounded up.
 */
#define PACK_ROW_FIXED 128

/*
 * Open packs at once: one per endpoint an event fans out to (issue 10
 * measures 1, 3 and 10).  A statement routed to more endpoints packs for
 * the first ones and writes the others' events alone, as the row trigger
 * does: each endpoint's order is kept either way.
 */
#define PACK_MAX_OPEN 32

typedef struct Pack
{
	bool		open;
	int32		endpoint_id;
	uint64		last_used;		/* for choosing which pack to close */
	pg_uuid_t	first_id;
	pg_uuid_t	next_id;		/* the only id the pack takes next */
	StringInfoData type;
	StringInfoData traceparent;
	StringInfoData tracestate;
	bool		has_traceparent;
	bool		has_tracestate;
	StringInfoData body;		/* a text: header room, then the first body */
	StringInfoData more;		/* a bytea: header room, then the entries */
	int32		events;
	Size		row_bytes;		/* the row's size if closed now, about */
	Size		limit;			/* the raw row_bytes at which it closes */
} Pack;

static MemoryContext pack_cxt = NULL;
static Pack packs[PACK_MAX_OPEN];
static int	nopen = 0;
static uint64 use_clock = 0;

/*
 * Raw bytes of more per byte stored in the last compressed pack; 1 before
 * any, and after bodies that did not compress.
 */
static double more_ratio = 1.0;

/* A more shorter than this is not worth compressing. */
#define PACK_COMPRESS_MIN 512

static void
init_packs(void)
{
	MemoryContext old;

	pack_cxt = AllocSetContextCreate(TopMemoryContext, "pg_callback inbox packs",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pack_cxt);
	for (int i = 0; i < PACK_MAX_OPEN; i++)
	{
		Pack	   *p = &packs[i];

		memset(p, 0, sizeof(Pack));
		initStringInfo(&p->type);
		initStringInfo(&p->traceparent);
		initStringInfo(&p->tracestate);
		initStringInfo(&p->body);
		initStringInfo(&p->more);
	}
	MemoryContextSwitchTo(old);
}

static bool
same_text(bool has, const StringInfoData *kept, const char *s)
{
	if (!has || s == NULL)
		return !has && s == NULL;
	return strcmp(kept->data, s) == 0;
}

static void
keep_text(bool *has, StringInfo kept, const char *s)
{
	resetStringInfo(kept);
	*has = s != NULL;
	if (s != NULL)
		appendStringInfoString(kept, s);
}

/*
 * The raw bytes at which a pack whose row takes fixed bytes besides more
 * closes: PGCB_PACK_MAX_ROW when more is not compressed; with compression,
 * what more_ratio says will fit in PGCB_PACK_MAX_ROW once compressed, with
 * an eighth to spare.  Its own fixed part counts: a wide first body leaves
 * less room for more, and past half the bound none that is worth it (a few
 * hundred bytes compress less than the kilobytes more_ratio was learnt
 * from: such a pack went past the TOAST threshold).
 */
static Size
pack_limit(Size fixed)
{
	double		room;

	if (more_ratio <= 1.0 || fixed > PGCB_PACK_MAX_ROW / 2)
		return PGCB_PACK_MAX_ROW;
	room = (double) (PGCB_PACK_MAX_ROW - fixed) * more_ratio * 7 / 8;
	return Min(Max(fixed + (Size) room, PGCB_PACK_MAX_ROW), PGCB_PACK_MAX_RAW);
}

/*
 * more compressed as the heap would store it, or NULL when that saves too
 * little (or lz4 is not there); more_ratio follows what it saved.
 */
static struct varlena *
compress_more(const Pack *p)
{
#if PGCB_HAVE_LZ4
	Size		raw = p->more.len;
	Datum		c;

	/* small, unless the row is past the bound without it */
	if (raw < PACK_COMPRESS_MIN && p->row_bytes <= PGCB_PACK_MAX_ROW)
		return NULL;
	c = toast_compress_datum(PointerGetDatum(p->more.data), TOAST_LZ4_COMPRESSION);
	if (c == (Datum) 0)
	{
		/* these bodies do not compress: back to rows stored as they are */
		more_ratio = 1.0;
		return NULL;
	}
	more_ratio = (double) raw / VARSIZE(DatumGetPointer(c));
	return (struct varlena *) DatumGetPointer(c);
#else
	(void) p;
	return NULL;
#endif
}

/* The pack's row to emit; then the pack is closed and free. */
static void
emit_pack(Pack *p, PgcbPackEmit emit, void *arg)
{
	PgcbPackRow row;
	struct varlena *compressed = NULL;

	SET_VARSIZE(p->body.data, p->body.len);
	SET_VARSIZE(p->more.data, p->more.len);
	row.endpoint_id = p->endpoint_id;
	row.event_id = p->first_id;
	row.event_type = p->type.data;
	row.traceparent = p->has_traceparent ? p->traceparent.data : NULL;
	row.tracestate = p->has_tracestate ? p->tracestate.data : NULL;
	row.body = (const struct varlena *) p->body.data;
	row.events = p->events;
	row.more = p->events > 1 ? (const struct varlena *) p->more.data : NULL;
	row.bytes = p->row_bytes;
	/* closed before the call: an error in it leaves no half-written pack */
	p->open = false;
	nopen--;
	if (row.more != NULL && (compressed = compress_more(p)) != NULL)
	{
		row.more = compressed;
		row.bytes -= p->more.len - VARSIZE(compressed);
	}
	emit(&row, arg);
	if (compressed != NULL)
		pfree(compressed);
}

/* The open pack of endpoint_id, or NULL. */
static Pack *
find_pack(int32 endpoint_id)
{
	int			seen = 0;

	for (int i = 0; i < PACK_MAX_OPEN && seen < nopen; i++)
	{
		if (!packs[i].open)
			continue;
		if (packs[i].endpoint_id == endpoint_id)
			return &packs[i];
		seen++;
	}
	return NULL;
}

/*
 * A free pack, or NULL when all are open: the event is then written alone.
 * Closing another endpoint's pack instead would, over more endpoints than
 * packs in round robin, leave every pack one event long.
 */
static Pack *
free_pack(void)
{
	for (int i = 0; i < PACK_MAX_OPEN; i++)
		if (!packs[i].open)
			return &packs[i];
	return NULL;
}

static void
append_entry(StringInfo more, const PgcbEventRow *ev)
{
	uint32		len = pg_hton32((uint32) ev->body_len);

	appendBinaryStringInfoNT(more, (const char *) &len, sizeof(len));
	appendBinaryStringInfoNT(more, ev->body, ev->body_len);
}

bool
pgcb_pack_add(const PgcbEventRow *ev, int32 endpoint_id, PgcbPackEmit emit, void *arg)
{
	Size		alone;
	Pack	   *p;

	if (pack_cxt == NULL)
		init_packs();
	p = find_pack(endpoint_id);
	if (p != NULL &&
		(memcmp(p->next_id.data, ev->event_id.data, UUID_LEN) != 0 ||
		 strcmp(p->type.data, ev->event_type) != 0 ||
		 !same_text(p->has_traceparent, &p->traceparent, ev->traceparent) ||
		 !same_text(p->has_tracestate, &p->tracestate, ev->tracestate) ||
		 p->row_bytes + PGCB_PACK_ENTRY_HEAD + ev->body_len > p->limit))
	{
		emit_pack(p, emit, arg);
		p = NULL;
	}
	if (p != NULL)
	{
		append_entry(&p->more, ev);
		pgcb_event_id_step(&p->next_id, 1, &p->next_id);
		p->events++;
		p->row_bytes += PGCB_PACK_ENTRY_HEAD + ev->body_len;
		p->last_used = ++use_clock;
		return true;
	}

	/* a new pack, if the event's row alone is within the bound */
	alone = PACK_ROW_FIXED + strlen(ev->event_type) + (Size) ev->body_len +
		(ev->traceparent ? strlen(ev->traceparent) : 0) +
		(ev->tracestate ? strlen(ev->tracestate) : 0);
	if (alone > PGCB_PACK_MAX_ROW)
		return false;
	p = free_pack();
	if (p == NULL)
		return false;
	p->open = true;
	nopen++;
	p->endpoint_id = endpoint_id;
	p->last_used = ++use_clock;
	p->first_id = ev->event_id;
	pgcb_event_id_step(&ev->event_id, 1, &p->next_id);
	resetStringInfo(&p->type);
	appendStringInfoString(&p->type, ev->event_type);
	keep_text(&p->has_traceparent, &p->traceparent, ev->traceparent);
	keep_text(&p->has_tracestate, &p->tracestate, ev->tracestate);
	/* header room in front of each: set when the pack closes */
	resetStringInfo(&p->body);
	appendStringInfoSpaces(&p->body, VARHDRSZ);
	appendBinaryStringInfoNT(&p->body, ev->body, ev->body_len);
	resetStringInfo(&p->more);
	appendStringInfoSpaces(&p->more, VARHDRSZ);
	p->events = 1;
	p->row_bytes = alone;
	p->limit = pack_limit(alone);
	return true;
}

void
pgcb_pack_close_all(PgcbPackEmit emit, void *arg)
{
	while (nopen > 0)
	{
		Pack	   *oldest = NULL;

		/* oldest first: the order the endpoints' packs were last added to */
		for (int i = 0; i < PACK_MAX_OPEN; i++)
			if (packs[i].open && (oldest == NULL || packs[i].last_used < oldest->last_used))
				oldest = &packs[i];
		emit_pack(oldest, emit, arg);
	}
}

void
pgcb_pack_discard(void)
{
	for (int i = 0; i < PACK_MAX_OPEN; i++)
		packs[i].open = false;
	nopen = 0;
}

bool
pgcb_pack_any_open(void)
{
	return nopen > 0;
}

const char *
pgcb_pack_check(const struct varlena *more, int32 n)
{
	const char *pos = VARDATA_ANY(more);
	const char *end = pos + VARSIZE_ANY_EXHDR(more);

	for (int32 i = 0; i < n; i++)
	{
		uint32		len;

		CHECK_FOR_INTERRUPTS();
		if (end - pos < PGCB_PACK_ENTRY_HEAD)
			return psprintf("entry %d of %d: its head runs past the end", i + 2, n + 1);
		memcpy(&len, pos, sizeof(len));
		len = pg_ntoh32(len);
		pos += PGCB_PACK_ENTRY_HEAD;
		if ((Size) (end - pos) < len)
			return psprintf("entry %d of %d: its body of %u bytes runs past the end",
							i + 2, n + 1, len);
		/* a body becomes a text: never empty (JSON), no NUL, valid in the encoding */
		if (len == 0)
			return psprintf("entry %d of %d: its body is empty", i + 2, n + 1);
		if (!pg_verifymbstr(pos, (int) len, true))
			return psprintf("entry %d of %d: its body is not valid text in the database's encoding",
							i + 2, n + 1);
		pos += len;
	}
	if (pos != end)
		return psprintf("%d bytes follow the last of its %d entries", (int) (end - pos), n);
	return NULL;
}

void
pgcb_pack_next(const char **pos, pg_uuid_t *event_id, const char **body, int32 *body_len)
{
	uint32		len;

	pgcb_event_id_step(event_id, 1, event_id);
	memcpy(&len, *pos, sizeof(len));
	*body_len = (int32) pg_ntoh32(len);
	*body = *pos + PGCB_PACK_ENTRY_HEAD;
	*pos = *body + *body_len;
}
