/*
 * batch.c
 *		Batches (issue 12.3): on an endpoint with batch_size above 1 one
 *		request carries up to batch_size deliveries, the body a JSON array of
 *		their bodies byte for byte.  This file owns what differs from one
 *		delivery per request: the window check (a statement), the claim
 *		(batch_claim.c forms and claims the batches in C) and the request's
 *		body and ids; delivery.c sends a batch as it sends one row and gives
 *		every member the request's outcome.
 *
 * A batch's composition is persisted at its first claim (callback_queue.
 * batch_id), so that a retry, an expired lease or a restart sends the same
 * deliveries together again.  Its webhook-id is derived from that batch id
 * and the event ids it carries: the same batch always has the same id, and
 * a batch that ever went out short (a member purged, or held by an SQL
 * user's lock) has another one, so that a receiver deduplicating on
 * webhook-id never drops events it has not seen.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "batch.h"
#include "batch_claim.h"
#include "delivery.h"
#include "session.h"

/*
 * The endpoints (of $1, with their batch sizes $2) whose partial batch must
 * go now although its window is open: batch_size deliveries are due, or a
 * batch sent before is due again (it was formed already).
 */
static const char *const ready_sql =
"SELECT w.endpoint_id "
"  FROM ROWS FROM (pg_catalog.unnest($1::int[]), pg_catalog.unnest($2::int[])) AS w(endpoint_id, size) "
" WHERE (SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>=) w.size "
"               OR pg_catalog.bool_or(s.batch_id IS NOT NULL) "
"          FROM (SELECT q.batch_id FROM callback.callback_queue q "
"                 WHERE q.endpoint_id OPERATOR(pg_catalog.=) w.endpoint_id "
"                   AND q.finished_at IS NULL "	/* callback_queue_due */
"                   AND q.status OPERATOR(pg_catalog.=) 'pending' "
"                   AND q.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
"                 LIMIT w.size) s)";

static SPIPlanPtr ready_plan = NULL;

/* Prepare on first use, run as the extension's owner (session.c). */
static void
run(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, Datum *values)
{
	PgcbSession session;
	int			ret;

	pgcb_session_enter(&session);
	if (*plan == NULL)
	{
		/* planned for each call: the queue's size changes */
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_CUSTOM_PLAN);

		if (p == NULL)
			elog(ERROR, "pg_callback: could not prepare a batch statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	ret = SPI_execute_plan(*plan, values, NULL, false, 0);
	if (ret < 0)
		elog(ERROR, "pg_callback: a batch statement failed: %s", SPI_result_code_string(ret));
	pgcb_session_leave(&session);
}

TimestampTz
pgcb_batch_hold(HTAB *endpoints, TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;
	int			n = 0;
	int			cap = hash_get_num_entries(endpoints);
	int		   *ids = palloc(sizeof(int) * Max(cap, 1));
	int		   *sizes = palloc(sizeof(int) * Max(cap, 1));
	TimestampTz release = 0;
	Oid			types[2] = {INT4ARRAYOID, INT4ARRAYOID};
	Datum		values[2];

	/* the window runs from when the oldest due delivery became due */
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
	{
		ep->batch_held = false;
		if (ep->active && ep->batch_size > 1 && ep->batch_window_ms > 0 &&
			ep->next_due != 0 && ep->next_due <= now &&
			now < TimestampTzPlusMilliseconds(ep->next_due, ep->batch_window_ms))
		{
			ids[n] = ep->id;
			sizes[n] = ep->batch_size;
			n++;
		}
	}
	if (n == 0)
		return 0;

	values[0] = PointerGetDatum(pgcb_queue_int4_array(ids, n));
	values[1] = PointerGetDatum(pgcb_queue_int4_array(sizes, n));
	SPI_connect();
	run(&ready_plan, ready_sql, 2, types, values);
	for (int i = 0; i < n; i++)
	{
		bool		ready = false;

		for (uint64 r = 0; r < SPI_processed && !ready; r++)
		{
			bool		isnull;

			ready = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
												1, &isnull)) == ids[i];
		}
		if (ready)
			continue;
		ep = hash_search(endpoints, &ids[i], HASH_FIND, NULL);
		ep->batch_held = true;
		{
			TimestampTz at = TimestampTzPlusMilliseconds(ep->next_due, ep->batch_window_ms);

			if (release == 0 || at < release)
				release = at;
		}
	}
	SPI_finish();
	return release;
}

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b) ? 1 : 0)

/*
 * A batch is its rows of one endpoint and batch id (an id is unique per
 * endpoint only); a row written with no batch id goes alone.
 */
static int
cmp_batch(const PgcbBatchRow *x, const PgcbBatchRow *y)
{
	if (x->c.endpoint_id != y->c.endpoint_id)
		return CMP(x->c.endpoint_id, y->c.endpoint_id);
	if (x->batch_null != y->batch_null)
		return CMP(x->batch_null, y->batch_null);
	if (x->batch_null)
		return CMP(x->c.id, y->c.id);
	return memcmp(x->batch_id.data, y->batch_id.data, UUID_LEN);
}

static int
cmp_rows(const void *a, const void *b)
{
	const PgcbBatchRow *x = (const PgcbBatchRow *) a;
	const PgcbBatchRow *y = (const PgcbBatchRow *) b;
	int			c = cmp_batch(x, y);

	if (c != 0)
		return c;
	return CMP(x->c.id, y->c.id);
}

static void
hex_id(char *out, const uint8 *bytes)
{
	strcpy(out, "msg_");
	for (int i = 0; i < 16; i++)
		sprintf(out + 4 + 2 * i, "%02x", bytes[i]);
}

/* One batch from rows[0..n): body "[b1,b2,...]", webhook-id, event ids. */
static void
make_batch(PgcbBatch *b, PgcbBatchRow *rows, int n)
{
	size_t		len = 2 + (n - 1);
	char	   *p;
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	int			hlen = strlen("webhook-event-ids: ");

	for (int i = 0; i < n; i++)
		len += rows[i].c.body_len;
	if (len > MaxAllocSize - 1)
		elog(ERROR, "pg_callback: a batch of %d deliveries is too large to send", n);

	b->head = rows[0].c;
	b->n = n;
	b->members = palloc(sizeof(PgcbBatchMember) * n);
	b->head.body = p = palloc(len + 1);
	b->head.body_len = (int) len;
	b->ids_header = palloc(hlen + n * 37 + 1);
	strcpy(b->ids_header, "webhook-event-ids: ");

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, rows[0].batch_id.data, UUID_LEN) < 0)
		elog(ERROR, "pg_callback: could not hash a batch id: %s", pg_cryptohash_error(ctx));

	*p++ = '[';
	for (int i = 0; i < n; i++)
	{
		PgcbBatchRow *r = &rows[i];

		if (i > 0)
			*p++ = ',';
		memcpy(p, r->c.body, r->c.body_len);
		p += r->c.body_len;
		pfree(r->c.body);
		b->members[i].id = r->c.id;
		b->members[i].event_id = r->c.event_id;
		b->members[i].tid = r->c.tid;
		/* a member counts attempts with the batch: the most any has made */
		b->head.attempts = Max(b->head.attempts, r->c.attempts);
		if (pg_cryptohash_update(ctx, r->c.event_id.data, UUID_LEN) < 0)
			elog(ERROR, "pg_callback: could not hash a batch id: %s", pg_cryptohash_error(ctx));
		if (i > 0)
			b->ids_header[hlen++] = ',';
		hex_id(b->ids_header + hlen, r->c.event_id.data);
		hlen += 36;
	}
	*p++ = ']';
	*p = '\0';
	if (pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "pg_callback: could not hash a batch id: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	hex_id(b->msg_id, digest);
}

typedef struct ClaimStep
{
	int			n;
	const int  *endpoint_ids;
	const int  *counts;
	const int  *sizes;
	int			claimed_by;
	int			lease_ms;
	MemoryContext cxt;
	PgcbBatchRow *rows;
	int			got;
} ClaimStep;

static void
claim_step(void *arg)
{
	ClaimStep  *cs = (ClaimStep *) arg;

	cs->got = pgcb_batch_claim_rows(cs->n, cs->endpoint_ids, cs->counts, cs->sizes,
									cs->claimed_by, cs->lease_ms, &cs->rows, cs->cxt);
}

int
pgcb_batch_claim(int n, const int *endpoint_ids, const int *counts, const int *sizes,
				 int claimed_by, int lease_ms, PgcbBatch **out, MemoryContext cxt)
{
	ClaimStep	cs = {.n = n, .endpoint_ids = endpoint_ids, .counts = counts, .sizes = sizes,
		.claimed_by = claimed_by, .lease_ms = lease_ms, .cxt = cxt};
	int			n_batches = 0;
	MemoryContext old;

	/* a lock timeout only means nothing claimed now, as for the plain claim */
	if (!pgcb_queue_run_step(claim_step, &cs) || cs.got == 0)
	{
		*out = MemoryContextAlloc(cxt, sizeof(PgcbBatch));
		return 0;
	}

	/* a batch's rows together, in delivery order: the body's order */
	qsort(cs.rows, cs.got, sizeof(PgcbBatchRow), cmp_rows);
	old = MemoryContextSwitchTo(cxt);
	*out = palloc0(sizeof(PgcbBatch) * cs.got);
	for (int start = 0; start < cs.got;)
	{
		int			end = start + 1;

		while (end < cs.got && cmp_batch(&cs.rows[end], &cs.rows[start]) == 0)
			end++;
		make_batch(&(*out)[n_batches++], &cs.rows[start], end - start);
		start = end;
	}
	pfree(cs.rows);
	MemoryContextSwitchTo(old);
	return n_batches;
}

void
pgcb_batch_free(PgcbBatch *b)
{
	pfree(b->members);
	pfree(b->ids_header);
	/* the body is the request's, freed with it */
}
