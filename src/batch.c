/*
 * batch.c
 *		Batches (issue 12.3): on an endpoint with batch_size above 1 one
 *		request carries up to batch_size deliveries, the body a JSON array of
 *		their bodies byte for byte.  This file owns the two statements that
 *		differ from one delivery per request (the window check and the
 *		claim) and the request's body and ids; delivery.c sends a batch as
 *		it sends one row and gives every member the request's outcome.
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
"                   AND q.status OPERATOR(pg_catalog.=) 'pending' "
"                   AND q.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
"                 LIMIT w.size) s)";

/*
 * The claim of batch endpoints ($1 ids, $2 batches wanted, $3 batch sizes,
 * $4 lease in ms, $5 claimed_by), like queue.c's claim but by batches:
 *   d: the due rows, oldest first, straight from the index as queue.c's
 *      claim reads them (a batch sent before shares one next_attempt_at);
 *   g: new rows cut into chunks of size (same attempts: a batch shares
 *      its attempt count), rows sent before keep their batch;
 *   k, kept: the first n batches of each endpoint, new ones get an id;
 *   x: the rest of a batch sent before that the LIMIT cut off;
 * then marked 'sending' with their batch id, as the claim does.  Rows
 * locked in d but not kept stay pending.
 */
static const char *const claim_sql =
"WITH w AS ("
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::int[]), pg_catalog.unnest($2::int[]), "
"                           pg_catalog.unnest($3::int[])) AS w(endpoint_id, n, size)), "
"d AS MATERIALIZED ("
"  SELECT l.id, l.endpoint_id, l.batch_id, l.attempts, l.next_attempt_at, w.n, w.size "
"    FROM w CROSS JOIN LATERAL ("
"      SELECT q.id, q.endpoint_id, q.batch_id, q.attempts, q.next_attempt_at "
"        FROM callback.callback_queue q "
"       WHERE q.endpoint_id OPERATOR(pg_catalog.=) w.endpoint_id "
"         AND q.status OPERATOR(pg_catalog.=) 'pending' "
"         AND q.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
"       ORDER BY q.next_attempt_at "
"       LIMIT w.n OPERATOR(pg_catalog.*) w.size FOR UPDATE SKIP LOCKED) l), "
"g AS ("
"  SELECT d.id, d.endpoint_id, d.batch_id, d.next_attempt_at, d.n, "
"         CASE WHEN d.batch_id IS NULL THEN d.attempts END AS na, "
"         CASE WHEN d.batch_id IS NULL THEN "
"           (pg_catalog.row_number() OVER (PARTITION BY d.endpoint_id, d.batch_id IS NULL, d.attempts "
"                                          ORDER BY d.next_attempt_at, d.id) "
"            OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) d.size END AS chunk "
"    FROM d), "
"k AS ("
"  SELECT g.endpoint_id, g.batch_id, g.na, g.chunk, pg_catalog.max(g.n) AS n, "
"         pg_catalog.row_number() OVER (PARTITION BY g.endpoint_id "
"                                       ORDER BY pg_catalog.min(g.next_attempt_at), "
"                                                pg_catalog.min(g.id)) AS rank "
"    FROM g GROUP BY g.endpoint_id, g.batch_id, g.na, g.chunk), "
"kept AS MATERIALIZED ("
"  SELECT k.endpoint_id, k.batch_id, k.na, k.chunk, "
"         coalesce(k.batch_id, pg_catalog.gen_random_uuid()) AS new_id "
"    FROM k WHERE k.rank OPERATOR(pg_catalog.<=) k.n), "
"x AS MATERIALIZED ("
"  SELECT q.id, q.batch_id FROM callback.callback_queue q "
"   WHERE q.batch_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT kept.batch_id FROM kept "
"                                                      WHERE kept.batch_id IS NOT NULL)) "
"     AND q.status OPERATOR(pg_catalog.=) 'pending' "
"     AND NOT (q.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT d.id FROM d))) "
"     FOR UPDATE SKIP LOCKED), "
"m AS MATERIALIZED ("
"  SELECT g.id, kept.new_id FROM g JOIN kept "
"      ON g.endpoint_id OPERATOR(pg_catalog.=) kept.endpoint_id "
"     AND (g.batch_id OPERATOR(pg_catalog.=) kept.batch_id "
"          OR (g.batch_id IS NULL AND kept.batch_id IS NULL "
"              AND g.na OPERATOR(pg_catalog.=) kept.na "
"              AND g.chunk OPERATOR(pg_catalog.=) kept.chunk)) "
"  UNION ALL SELECT x.id, x.batch_id FROM x) "
"UPDATE callback.callback_queue q "
"   SET status = 'sending', claimed_by = $5, batch_id = c.new_id, "
"       lease_expires_at = pg_catalog.now() OPERATOR(pg_catalog.+) "
"                          ($4 OPERATOR(pg_catalog.*) interval '1 millisecond') "
/* arrays, not a join with m: see queue.c's claim */
"  FROM ROWS FROM (pg_catalog.unnest(ARRAY(SELECT m.id FROM m ORDER BY m.id)), "
"                  pg_catalog.unnest(ARRAY(SELECT m.new_id FROM m ORDER BY m.id))) AS c(id, new_id) "
" WHERE q.id OPERATOR(pg_catalog.=) c.id "
/* q.ctid: the version written here, where the write-back looks first */
"RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.body, q.batch_id, q.ctid";

static SPIPlanPtr ready_plan = NULL;
static SPIPlanPtr claim_plan = NULL;

/* Prepare on first use, run as the extension's owner (session.c). */
static void
run(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, Datum *values)
{
	PgcbSession session;
	int			ret;

	pgcb_session_enter(&session);
	if (*plan == NULL)
	{
		/* planned for each call, as queue.c's claim: the queue's size changes */
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

typedef struct ClaimedRow
{
	PgcbClaimed c;
	pg_uuid_t	batch_id;
} ClaimedRow;

static int
cmp_rows(const void *a, const void *b)
{
	const ClaimedRow *x = (const ClaimedRow *) a;
	const ClaimedRow *y = (const ClaimedRow *) b;
	int			c = memcmp(x->batch_id.data, y->batch_id.data, UUID_LEN);

	if (c != 0)
		return c;
	return x->c.id < y->c.id ? -1 : x->c.id > y->c.id ? 1 : 0;
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
make_batch(PgcbBatch *b, ClaimedRow *rows, int n)
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
		ClaimedRow *r = &rows[i];

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
	Datum		values[5];
	MemoryContext cxt;
	ClaimedRow *rows;
	int			n;
} ClaimStep;

static void
claim_step(void *arg)
{
	ClaimStep  *cs = (ClaimStep *) arg;
	Oid			types[5] = {INT4ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, FLOAT8OID, INT4OID};

	SPI_connect();
	run(&claim_plan, claim_sql, 5, types, cs->values);
	cs->n = (int) SPI_processed;
	cs->rows = MemoryContextAllocZero(cs->cxt, sizeof(ClaimedRow) * Max(cs->n, 1));
	for (int r = 0; r < cs->n; r++)
	{
		ClaimedRow *row = &cs->rows[r];
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		text	   *body;

		row->c.id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 7, &isnull)),
						&row->c.tid);
		memcpy(&row->c.event_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)), sizeof(pg_uuid_t));
		row->c.endpoint_id = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		row->c.attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		body = DatumGetTextPP(SPI_getbinval(tup, desc, 5, &isnull));
		row->c.body_len = VARSIZE_ANY_EXHDR(body);
		row->c.body = MemoryContextAlloc(cs->cxt, row->c.body_len + 1);
		memcpy(row->c.body, VARDATA_ANY(body), row->c.body_len);
		row->c.body[row->c.body_len] = '\0';
		memcpy(&row->batch_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 6, &isnull)), sizeof(pg_uuid_t));
	}
	SPI_finish();
}

int
pgcb_batch_claim(int n, const int *endpoint_ids, const int *counts, const int *sizes,
				 int claimed_by, int lease_ms, PgcbBatch **out, MemoryContext cxt)
{
	ClaimStep	cs;
	int			n_batches = 0;
	MemoryContext old;

	cs.values[0] = PointerGetDatum(pgcb_queue_int4_array(endpoint_ids, n));
	cs.values[1] = PointerGetDatum(pgcb_queue_int4_array(counts, n));
	cs.values[2] = PointerGetDatum(pgcb_queue_int4_array(sizes, n));
	cs.values[3] = Float8GetDatum((double) lease_ms);
	cs.values[4] = Int32GetDatum(claimed_by);
	cs.cxt = cxt;
	cs.rows = NULL;
	cs.n = 0;
	/* a lock timeout only means nothing claimed now, as for queue.c's claim */
	if (!pgcb_queue_run_step(claim_step, &cs) || cs.n == 0)
	{
		*out = MemoryContextAlloc(cxt, sizeof(PgcbBatch));
		return 0;
	}

	/* a batch's rows together, in delivery order: the body's order */
	qsort(cs.rows, cs.n, sizeof(ClaimedRow), cmp_rows);
	old = MemoryContextSwitchTo(cxt);
	*out = palloc0(sizeof(PgcbBatch) * cs.n);
	for (int start = 0; start < cs.n;)
	{
		int			end = start + 1;

		while (end < cs.n && memcmp(cs.rows[end].batch_id.data, cs.rows[start].batch_id.data,
									UUID_LEN) == 0)
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
