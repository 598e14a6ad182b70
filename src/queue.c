/*
 * queue.c
 *		SQL of the delivery engine.  Each step is one statement with a saved
 *		plan: load endpoints (with each one's earliest due time, from the
 *		partial index), the ordered claim (FOR UPDATE SKIP LOCKED, a lease;
 *		the plain claim is C, in queue_claim.c), the stats rollup
 *		(PLAN_STATS).  The write-back of outcomes is C too
 *		(queue_write_back.c), run as a step of this file's (run_step).
 *		Nothing here runs per row.  In the worker no statement waits on a
 *		row lock an SQL user holds (see LOCK_MARK and run_step).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "guc.h"
#include "pg_callback.h"
#include "queue.h"
#include "queue_stats.h"
#include "session.h"
#include "sign.h"

enum
{
	PLAN_LOAD,
	PLAN_DISABLE,
	PLAN_BREAKERS,
	PLAN_RELEASE,
	PLAN_RELEASE_EXPIRED,
	PLAN_STATS,
	PLAN_CLAIM_ORDERED,			/* ordering: see its statement */
	PLAN_EVENT,
	PLAN_HOOK_ERROR,
	NUM_PLANS
};

/*
 * Row locks.  Every row the engine writes may be locked by an SQL user for
 * as long as their transaction stays open: an endpoint by alter_endpoint()
 * and the others (FOR UPDATE through _endpoint_for_update), queue rows by
 * drop_endpoint(force => true) or a process_callbacks() still running,
 * stats rows by purge() and drop_endpoint().  The worker must never wait
 * for them: one forgotten BEGIN would stop delivery to every endpoint.  So
 * in the worker each write first locks its rows FOR UPDATE SKIP LOCKED,
 * writes only those it got, and tells the caller which it skipped; the
 * engine keeps those (outcomes, stats, breaker states, 410s) in memory and
 * tries again next cycle.  Written in the plans as "FOR UPDATE" LOCK_MARK:
 * the worker's plans get SKIP LOCKED there, process_callbacks()' keep the
 * comment and wait, as the caller's transaction chose to (and a deadlock
 * there is detected, which a retry loop would hide).  A wait SKIP LOCKED
 * cannot avoid (a stats row inserted by a transaction still open) is cut
 * short by lock_timeout: see run_step().
 */
#define LOCK_MARK "/*SKIP*/"

/* How long a worker step may wait for a lock before it is retried later. */
#define STEP_LOCK_TIMEOUT "100ms"

static bool skip_locked = false;	/* the worker: never wait on a row lock */
static SPIPlanPtr plans[2][NUM_PLANS];	/* [skip_locked] */

/*
 * Every function, aggregate and operator is schema-qualified, and multi-array
 * unnest is spelled ROWS FROM (pg_catalog.unnest(..), ..): these run with the
 * owner's rights, and an unqualified name could resolve to a better-matching
 * overload that another role put in public or a "$user" schema (session.c
 * pins search_path too).  coalesce, greatest, extract and casts are fixed
 * catalog entries; keywords such as int, bigint and interval name pg_catalog
 * types.  Mind precedence: OPERATOR(...) binds like any other operator.
 */
static const char *const plan_sql[NUM_PLANS] = {
	[PLAN_LOAD] =
	"SELECT e.id, e.name, e.url, "
	"       ARRAY(SELECT CASE WHEN h.value OPERATOR(pg_catalog.=) '' "
	"                         THEN h.key OPERATOR(pg_catalog.||) ';' "
	"                         ELSE h.key OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) h.value END "
	"               FROM pg_catalog.jsonb_each_text(e.headers) h), "
	"       coalesce(e.timeout_ms, $1), e.max_attempts, "
	"       ARRAY(SELECT (extract(epoch FROM d) OPERATOR(pg_catalog.*) 1000)::bigint "
	"               FROM pg_catalog.unnest(e.retry_schedule) d), "
	"       e.rate_limit, e.rate_burst, e.failure_threshold, "
	"       (extract(epoch FROM e.breaker_cooldown) OPERATOR(pg_catalog.*) 1000)::bigint, "
	"       e.enabled AND NOT e.paused, e.breaker_state, e.breaker_changed_at, "
	"       e.secret, CASE WHEN e.previous_secret_expires_at OPERATOR(pg_catalog.>) pg_catalog.now() "
	"                      THEN e.previous_secret END, "
	"       CASE WHEN e.enabled AND NOT e.paused THEN "
	"         (SELECT q.next_attempt_at FROM callback.callback_queue q "
	"           WHERE q.endpoint_id OPERATOR(pg_catalog.=) e.id "
	"             AND q.finished_at IS NULL "	/* callback_queue_due */
	"             AND q.status OPERATOR(pg_catalog.=) 'pending' "
	"           ORDER BY q.next_attempt_at LIMIT 1) END, "
	"       pg_catalog.now(), "
	/* batches: events per request, how long a partial batch may wait (batch.c) */
	"       e.batch_size, (extract(epoch FROM e.batch_window) OPERATOR(pg_catalog.*) 1000)::bigint, "
	/* ordering: one event per key at a time (PLAN_CLAIM_ORDERED) */
	"       e.ordered, "
	/* hooks: see hooks.c */
	"       e.transform, e.on_response, e.owner::pg_catalog.text "
	"  FROM callback.callback_endpoints e",

	[PLAN_DISABLE] =
	"UPDATE callback.callback_endpoints e "
	"   SET enabled = false, updated_at = pg_catalog.now(), "
	"       disabled_reason = 'endpoint answered 410 Gone at ' OPERATOR(pg_catalog.||) pg_catalog.now() "
	" WHERE e.id OPERATOR(pg_catalog.=) ANY (ARRAY("
	"         SELECT c.id FROM callback.callback_endpoints c "
	"          WHERE c.id OPERATOR(pg_catalog.=) ANY ($1::int[]) FOR UPDATE " LOCK_MARK ")) "
	"RETURNING e.id",

	/*
	 * Only where the table still holds what we last read or wrote: a
	 * resume_endpoint committed meanwhile wins (and the next load adopts
	 * it).  Only the rows we could lock (see LOCK_MARK): the others stay
	 * dirty in memory, and the next cycle tries again, after its load has
	 * adopted whatever a resume holding the lock committed.  Returns the
	 * rows dealt with, written or left to a resume.  (In
	 * process_callbacks() an uncommitted resume is waited for, and the
	 * condition checked again on the row it commits.)
	 */
	[PLAN_BREAKERS] =
	"WITH l AS MATERIALIZED ("
	"  SELECT c.id FROM callback.callback_endpoints c "
	"   WHERE c.id OPERATOR(pg_catalog.=) ANY ($1::int[]) FOR UPDATE " LOCK_MARK "), "
	"u AS ("
	"  UPDATE callback.callback_endpoints e "
	"     SET breaker_state = b.state, breaker_reason = b.reason, breaker_changed_at = b.at "
	"    FROM ROWS FROM (pg_catalog.unnest($1::int[]), pg_catalog.unnest($2::pg_catalog.text[]), "
	"                    pg_catalog.unnest($3::pg_catalog.text[]), "
	"                    pg_catalog.unnest($4::pg_catalog.timestamptz[]), "
	"                    pg_catalog.unnest($5::pg_catalog.timestamptz[])) AS b(id, state, reason, at, seen) "
	"   WHERE e.id OPERATOR(pg_catalog.=) b.id "
	"     AND e.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT l.id FROM l)) "
	"     AND (e.breaker_changed_at OPERATOR(pg_catalog.=) b.seen "
	"          OR (e.breaker_changed_at IS NULL AND b.seen IS NULL))) "
	"SELECT l.id FROM l",

	/*
	 * Claims whose claimer stopped: this worker's at its start ($1, $2), and
	 * there those of any claimer whose lease ran out ($3).  It reads every
	 * undelivered row, once per start.  Rows someone holds (drop_endpoint()
	 * deleting them) are left for the next sweep; so are those whose
	 * outcome we hold but could not write yet ($4): their request was
	 * sent, and sending it again would not be needed.
	 */
	[PLAN_RELEASE] =
	"UPDATE callback.callback_queue q "
	"   SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL, "
	/* due now: a batch claim set it to the lease's end (queue_claim.c) */
	"       next_attempt_at = LEAST(q.next_attempt_at, pg_catalog.now()) "
	" WHERE q.id OPERATOR(pg_catalog.=) ANY (ARRAY("
	"         SELECT c.id FROM callback.callback_queue c "
	"          WHERE c.finished_at IS NULL "	/* callback_queue_due */
	"            AND c.status OPERATOR(pg_catalog.=) 'sending' "
	"            AND (($1 AND c.claimed_by OPERATOR(pg_catalog.=) $2) "
	"                 OR ($3 AND c.lease_expires_at OPERATOR(pg_catalog.<) pg_catalog.now())) "
	"            AND NOT (c.id OPERATOR(pg_catalog.=) ANY ($4::bigint[])) "
	"          FOR UPDATE " LOCK_MARK ")) "
	"   AND q.status OPERATOR(pg_catalog.=) 'sending'",

	/*
	 * The sweep between starts: claims whose lease ran out, but only where
	 * one can be.  A row in flight was due when it was claimed (a batch
	 * claim sets next_attempt_at to the lease's end), so an expired one has
	 * next_attempt_at <= now(): rows waiting for a later retry are not read.
	 * A paused or disabled endpoint's rows are not read either: its backlog
	 * can be millions of rows, and a claim returned meanwhile would wait all
	 * the same; they come back within a quarter of callback.lease once it
	 * is resumed and enabled (or at a worker's start).  The endpoints whose
	 * row is gone (found as _dead_letter_orphans() finds them, one probe of
	 * callback_queue_due each) are swept too: their claims, returned, are
	 * made dead letters by that function, next in the cycle.  One index
	 * range of callback_queue_due per endpoint (the locking subquery is not
	 * pulled up into a join), instead of every undelivered row (about
	 * 0.65 us each).  $1 as $4 above.
	 */
	[PLAN_RELEASE_EXPIRED] =
	"WITH RECURSIVE ids(id) AS ("
	"  SELECT pg_catalog.min(c.endpoint_id) FROM callback.callback_queue c "
	"   WHERE c.finished_at IS NULL "
	"  UNION ALL "
	"  SELECT (SELECT pg_catalog.min(c.endpoint_id) FROM callback.callback_queue c "
	"           WHERE c.finished_at IS NULL AND c.endpoint_id OPERATOR(pg_catalog.>) ids.id) "
	"    FROM ids WHERE ids.id IS NOT NULL), "
	"swept(id) AS ("
	"  SELECT a.id FROM callback.callback_endpoints a "
	"   WHERE a.enabled AND NOT a.paused "
	"  UNION ALL "
	"  SELECT ids.id FROM ids "
	"   WHERE ids.id IS NOT NULL "
	"     AND NOT EXISTS (SELECT 1 FROM callback.callback_endpoints d "
	"                      WHERE d.id OPERATOR(pg_catalog.=) ids.id)) "
	"UPDATE callback.callback_queue q "
	"   SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL, "
	"       next_attempt_at = LEAST(q.next_attempt_at, pg_catalog.now()) "
	" WHERE q.id OPERATOR(pg_catalog.=) ANY (ARRAY("
	"         SELECT s.id FROM swept e "
	"          CROSS JOIN LATERAL ("
	"                SELECT c.id FROM callback.callback_queue c "
	"                 WHERE c.endpoint_id OPERATOR(pg_catalog.=) e.id "
	"                   AND c.finished_at IS NULL "	/* callback_queue_due */
	"                   AND c.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
	"                   AND c.status OPERATOR(pg_catalog.=) 'sending' "
	"                   AND c.lease_expires_at OPERATOR(pg_catalog.<) pg_catalog.now() "
	"                   AND NOT (c.id OPERATOR(pg_catalog.=) ANY ($1::bigint[])) "
	"                 FOR UPDATE " LOCK_MARK ") s)) "
	"   AND q.status OPERATOR(pg_catalog.=) 'sending'",

	/*
	 * Add stats rollups ($1: jsonb arrays of callback_stats rows, oldest
	 * first, from the write-back) into callback_stats.  A key whose row is
	 * there but held by someone else (purge() or drop_endpoint() deleting
	 * it) is returned, to be added later; so each attempt is counted once.
	 * Keys of endpoints dropped meanwhile are let go.
	 */
	[PLAN_STATS] =
	"WITH j AS ("
	"  SELECT r.minute, r.endpoint_id, r.event_type, "
	"         pg_catalog.sum(r.attempts)::bigint AS attempts, "
	"         pg_catalog.sum(r.delivered)::bigint AS delivered, "
	"         pg_catalog.sum(r.failed)::bigint AS failed, "
	"         pg_catalog.sum(r.dead)::bigint AS dead, "
	"         pg_catalog.sum(r.latency_sum_ms) AS latency_sum_ms, "
	"         pg_catalog.max(r.latency_max_ms) AS latency_max_ms, "
	"         callback.histogram_sum(r.latency_hist) AS latency_hist, "
	"         (pg_catalog.array_agg(r.last_error ORDER BY b.n DESC) "
	"              FILTER (WHERE r.last_error IS NOT NULL))[1] AS last_error "
	"    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[])) WITH ORDINALITY AS b(doc, n) "
	"   CROSS JOIN LATERAL pg_catalog.jsonb_populate_recordset(NULL::callback.callback_stats, "
	"                                                          b.doc::pg_catalog.jsonb) r "
	"   WHERE EXISTS (SELECT 1 FROM callback.callback_endpoints e "
	"                  WHERE e.id OPERATOR(pg_catalog.=) r.endpoint_id) "
	"   GROUP BY 1, 2, 3), "
	"x AS ("
	"  SELECT s.endpoint_id, s.event_type, s.minute FROM callback.callback_stats s "
	"   WHERE EXISTS (SELECT 1 FROM j WHERE j.endpoint_id OPERATOR(pg_catalog.=) s.endpoint_id "
	"                   AND j.event_type OPERATOR(pg_catalog.=) s.event_type "
	"                   AND j.minute OPERATOR(pg_catalog.=) s.minute)), "
	"k AS MATERIALIZED ("
	"  SELECT s.endpoint_id, s.event_type, s.minute FROM callback.callback_stats s "
	"   WHERE EXISTS (SELECT 1 FROM j WHERE j.endpoint_id OPERATOR(pg_catalog.=) s.endpoint_id "
	"                   AND j.event_type OPERATOR(pg_catalog.=) s.event_type "
	"                   AND j.minute OPERATOR(pg_catalog.=) s.minute) "
	"   FOR UPDATE " LOCK_MARK "), "
	/* held: the row is there (x) but we could not lock it (not in k) */
	"h AS MATERIALIZED ("
	"  SELECT j.* FROM j "
	"   WHERE EXISTS (SELECT 1 FROM x WHERE x.endpoint_id OPERATOR(pg_catalog.=) j.endpoint_id "
	"                   AND x.event_type OPERATOR(pg_catalog.=) j.event_type "
	"                   AND x.minute OPERATOR(pg_catalog.=) j.minute) "
	"     AND NOT EXISTS (SELECT 1 FROM k WHERE k.endpoint_id OPERATOR(pg_catalog.=) j.endpoint_id "
	"                       AND k.event_type OPERATOR(pg_catalog.=) j.event_type "
	"                       AND k.minute OPERATOR(pg_catalog.=) j.minute)), "
	"w AS ("
	"  INSERT INTO callback.callback_stats AS s "
	"    (minute, endpoint_id, event_type, attempts, delivered, failed, dead, "
	"     latency_sum_ms, latency_max_ms, latency_hist, last_error) "
	"  SELECT j.minute, j.endpoint_id, j.event_type, j.attempts, j.delivered, j.failed, j.dead, "
	"         j.latency_sum_ms, j.latency_max_ms, j.latency_hist, j.last_error "
	"    FROM j "
	"   WHERE NOT EXISTS (SELECT 1 FROM h WHERE h.endpoint_id OPERATOR(pg_catalog.=) j.endpoint_id "
	"                       AND h.event_type OPERATOR(pg_catalog.=) j.event_type "
	"                       AND h.minute OPERATOR(pg_catalog.=) j.minute) "
	"  ON CONFLICT (endpoint_id, event_type, minute) DO UPDATE SET "
	"    attempts = s.attempts OPERATOR(pg_catalog.+) excluded.attempts, "
	"    delivered = s.delivered OPERATOR(pg_catalog.+) excluded.delivered, "
	"    failed = s.failed OPERATOR(pg_catalog.+) excluded.failed, "
	"    dead = s.dead OPERATOR(pg_catalog.+) excluded.dead, "
	"    latency_sum_ms = s.latency_sum_ms OPERATOR(pg_catalog.+) excluded.latency_sum_ms, "
	"    latency_max_ms = greatest(s.latency_max_ms, excluded.latency_max_ms), "
	"    latency_hist = callback.histogram_add(s.latency_hist, excluded.latency_hist), "
	"    last_error = coalesce(excluded.last_error, s.last_error)) "
	"SELECT (SELECT pg_catalog.jsonb_agg(h) FROM h)::pg_catalog.text",

	/*
	 * ordering: the claim of one ordered endpoint ($1), up to $2 rows.  A
	 * row with a key is claimable only as the head of its key: the lowest
	 * id of that (endpoint, key) still pending or sending.  The keys are
	 * walked through the partial index callback_queue_ordering (part 97)
	 * one index probe each (k), and each key's head is one more (h); a key
	 * whose head is in flight, or waits for a retry, gives nothing.  Rows
	 * without a key are claimed as on any endpoint.  Several claimers: a
	 * head claimed by a transaction that committed after our snapshot is
	 * locked again here and, being 'sending' now, fails the recheck of
	 * FOR UPDATE; a later row of the key is never a head while that one is
	 * open, in any snapshot that sees it (ids of one key are taken in
	 * commit order: see the README on ordering).  The last row (id NULL)
	 * carries the earliest retry time of a waiting head, for the wake-up.
	 */
	"WITH RECURSIVE k(key) AS ("
	"  (SELECT q.ordering_key FROM callback.callback_queue q "
	"    WHERE q.endpoint_id OPERATOR(pg_catalog.=) $1 AND q.ordering_key IS NOT NULL "
	"      AND q.finished_at IS NULL "
	"      AND q.status OPERATOR(pg_catalog.=) ANY ('{pending,sending}'::callback.delivery_status[]) "
	"    ORDER BY q.ordering_key LIMIT 1) "
	"  UNION ALL "
	"  SELECT (SELECT q.ordering_key FROM callback.callback_queue q "
	"           WHERE q.endpoint_id OPERATOR(pg_catalog.=) $1 AND q.ordering_key IS NOT NULL "
	"             AND q.ordering_key OPERATOR(pg_catalog.>) k.key "
	"             AND q.finished_at IS NULL "
	"             AND q.status OPERATOR(pg_catalog.=) ANY ('{pending,sending}'::callback.delivery_status[]) "
	"           ORDER BY q.ordering_key LIMIT 1) "
	"    FROM k WHERE k.key IS NOT NULL), "
	"h AS MATERIALIZED ("
	"  SELECT f.id, f.status, f.next_attempt_at FROM k CROSS JOIN LATERAL ("
	"    SELECT q.id, q.status, q.next_attempt_at FROM callback.callback_queue q "
	"     WHERE q.endpoint_id OPERATOR(pg_catalog.=) $1 AND q.ordering_key IS NOT NULL "
	"       AND q.ordering_key OPERATOR(pg_catalog.=) k.key "
	"       AND q.finished_at IS NULL "
	"       AND q.status OPERATOR(pg_catalog.=) ANY ('{pending,sending}'::callback.delivery_status[]) "
	"     ORDER BY q.id LIMIT 1) f "
	"   WHERE k.key IS NOT NULL), "
	"c AS ("
	"  SELECT q.ctid FROM callback.callback_queue q "
	"   WHERE q.id OPERATOR(pg_catalog.=) ANY (ARRAY("
	"           SELECT h.id FROM h WHERE h.status OPERATOR(pg_catalog.=) 'pending' "
	"              AND h.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
	"           UNION ALL "
	"           SELECT * FROM (SELECT n.id FROM callback.callback_queue n "
	"                           WHERE n.endpoint_id OPERATOR(pg_catalog.=) $1 "
	"                             AND n.finished_at IS NULL "
	"                             AND n.status OPERATOR(pg_catalog.=) 'pending' "
	"                             AND n.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
	"                             AND n.ordering_key IS NULL "
	"                           ORDER BY n.next_attempt_at LIMIT $2) x)) "
	"     AND q.status OPERATOR(pg_catalog.=) 'pending' "
	"     AND q.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
	"   ORDER BY q.next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED), "
	"u AS ("
	"  UPDATE callback.callback_queue q "
	"     SET status = 'sending', claimed_by = $4, "
	"         lease_expires_at = pg_catalog.now() OPERATOR(pg_catalog.+) "
	"                            ($3 OPERATOR(pg_catalog.*) interval '1 millisecond') "
	/*
	 * By ctid (a TID scan): the row version locked above.  One committed
	 * after the snapshot is not visible to it: not claimed this time.
	 */
	"   WHERE q.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT c.ctid FROM c)) "
	"  RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.body, q.traceparent, q.tracestate, "
	"            q.event_type, q.ctid) "
	/* u.ctid: the version written here, where the write-back looks first */
	"SELECT u.id, u.event_id, u.endpoint_id, u.attempts, u.body, u.traceparent, u.tracestate, "
	"       u.event_type, NULL::pg_catalog.timestamptz, u.ctid FROM u "
	"UNION ALL "
	"SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
	"       (SELECT pg_catalog.min(h.next_attempt_at) FROM h "
	"         WHERE h.status OPERATOR(pg_catalog.=) 'pending' "
	"           AND h.next_attempt_at OPERATOR(pg_catalog.>) pg_catalog.now()), "
	"       NULL::pg_catalog.tid",

	/* The event an on_response hook is given. */
	[PLAN_EVENT] =
	"SELECT q.body FROM callback.callback_queue q WHERE q.id OPERATOR(pg_catalog.=) $1",

	/*
	 * What a failed on_response left: on the attempt it ran after.  $9
	 * says whether the write-back wrote that attempt's row: if so it is
	 * updated, found by its delivery, attempt, event and start (a delivery
	 * id given out again, or a redriven dead letter's new attempt 1, is
	 * another row); if not (callback.attempt_history left out a first-try
	 * success), it is written here: a hook error is something to see.
	 * Neither probes for the other, so an operator's trigger that refuses
	 * the update cannot make a second row.
	 */
	[PLAN_HOOK_ERROR] =
	"WITH u AS ("
	"  UPDATE callback.callback_attempts a SET hook_error = $3 "
	"   WHERE $9 AND a.delivery_id OPERATOR(pg_catalog.=) $1 AND a.attempt OPERATOR(pg_catalog.=) $2 "
	"     AND a.event_id OPERATOR(pg_catalog.=) $10 AND a.started_at OPERATOR(pg_catalog.=) $4 "
	"  RETURNING 1) "
	"INSERT INTO callback.callback_attempts (delivery_id, event_id, endpoint_id, event_type, attempt, "
	"       started_at, latency_ms, status_code, error, response_body, outcome, hook_error) "
	"SELECT q.id, q.event_id, q.endpoint_id, q.event_type, q.attempts, $4, $5, $6, $7, $8, q.status, $3 "
	"  FROM callback.callback_queue q "
	" WHERE q.id OPERATOR(pg_catalog.=) $1 AND q.attempts OPERATOR(pg_catalog.=) $2 "
	"   AND NOT $9 AND q.event_id OPERATOR(pg_catalog.=) $10",
};

static const int plan_nargs[NUM_PLANS] = {
	[PLAN_LOAD] = 1,
	[PLAN_DISABLE] = 1,[PLAN_BREAKERS] = 5,[PLAN_RELEASE] = 4,[PLAN_RELEASE_EXPIRED] = 1,
	[PLAN_STATS] = 1,
	[PLAN_CLAIM_ORDERED] = 4,
	[PLAN_EVENT] = 1,[PLAN_HOOK_ERROR] = 10,
};

static const Oid plan_types[NUM_PLANS][10] = {
	[PLAN_LOAD] = {INT4OID},
	[PLAN_DISABLE] = {INT4ARRAYOID},
	[PLAN_BREAKERS] = {INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
	TIMESTAMPTZARRAYOID},
	[PLAN_RELEASE] = {BOOLOID, INT4OID, BOOLOID, INT8ARRAYOID},
	[PLAN_RELEASE_EXPIRED] = {INT8ARRAYOID},
	[PLAN_STATS] = {TEXTARRAYOID},
	[PLAN_CLAIM_ORDERED] = {INT4OID, INT4OID, FLOAT8OID, INT4OID},
	[PLAN_EVENT] = {INT8OID},
	[PLAN_HOOK_ERROR] = {INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID, FLOAT8OID, INT4OID, TEXTOID,
	TEXTOID, BOOLOID, UUIDOID},
};

bool
pgcb_queue_extension_present(void)
{
	Oid			extoid = get_extension_oid(PGCB_EXTENSION_NAME, true);

	if (!OidIsValid(extoid))
		return false;

	/*
	 * DROP EXTENSION locks the extension before its tables: share-lock it
	 * for the rest of this transaction so that the tables cannot vanish
	 * under our statements, then look again, in case it went while we
	 * waited (taking the lock has read the invalidations).
	 */
	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);
	return get_extension_oid(PGCB_EXTENSION_NAME, true) == extoid;
}

/*
 * The plan's text for this process: LOCK_MARK becomes SKIP LOCKED in the
 * worker, and stays a comment in process_callbacks().
 */
static char *
plan_text(int which)
{
	const char *sql = plan_sql[which];
	const char *mark = strstr(sql, LOCK_MARK);
	StringInfoData buf;

	initStringInfo(&buf);
	while (mark != NULL)
	{
		appendBinaryStringInfo(&buf, sql, mark - sql);
		appendStringInfoString(&buf, skip_locked ? "SKIP LOCKED" : LOCK_MARK);
		sql = mark + strlen(LOCK_MARK);
		mark = strstr(sql, LOCK_MARK);
	}
	appendStringInfoString(&buf, sql);
	return buf.data;
}

/*
 * Run a saved plan (prepared on first use) inside an SPI connection, as the
 * extension's owner with search_path pinned (session.c): the worker and
 * process_callbacks() alike.
 */
static int
run_plan(int which, Datum *values, const char *nulls, bool read_only)
{
	int			ret;
	PgcbSession session;
	SPIPlanPtr *slot = &plans[skip_locked ? 1 : 0][which];

	pgcb_session_enter(&session);

	/*
	 * Each statement is planned once, not per batch: planning was a sixth
	 * of the worker's time per delivery (perf, bench drain).  A generic plan
	 * made while the queue was nearly empty would scan the whole queue and
	 * keep doing so as the queue grows; every statement here reads a
	 * batch's rows by key or an endpoint's due rows from its partial index,
	 * so the planner is told that a scan of a table is not an option (set
	 * for this statement only, in the session's GUC level; also at a
	 * re-plan after an invalidation).
	 */
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* the disabled path's cost would otherwise call for JIT compilation */
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(plan_text(which), plan_nargs[which],
											  (Oid *) plan_types[which],
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "pg_callback: could not prepare statement %d: %s",
				 which, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	ret = SPI_execute_plan(*slot, values, nulls, read_only, 0);
	if (ret < 0)
		elog(ERROR, "pg_callback: statement %d failed: %s", which, SPI_result_code_string(ret));
	pgcb_session_leave(&session);
	return ret;
}

void
pgcb_queue_set_skip_locked(bool skip)
{
	skip_locked = skip;
}

bool
pgcb_queue_skip_locked(void)
{
	return skip_locked;
}

/*
 * Run one step of the worker's cycle in a subtransaction with a short
 * lock_timeout, as a PL/pgSQL exception block would.  SKIP LOCKED keeps the
 * steps from waiting on rows that exist; what it cannot see (an upsert
 * meeting a key inserted by a transaction still open, a lock on a whole
 * table) is cut short here instead of stopping the worker.  Returns false
 * when a lock was not granted in time: everything the step did is undone
 * and the caller keeps what it meant to write for the next cycle.  Any
 * other error is thrown on, or, given error, handed back there (see
 * pgcb_queue_try_step).  In process_callbacks() a step without error runs
 * as is: there the caller's transaction chose to wait.
 */
static bool
run_step_in(void (*step) (void *), void *arg, ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	if (error != NULL)
		*error = NULL;
	if (!skip_locked && error == NULL)
	{
		step(arg);
		return true;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			nest = NewGUCNestLevel();

		if (skip_locked)
			(void) set_config_option("lock_timeout", STEP_LOCK_TIMEOUT, PGC_SUSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
		step(arg);
		AtEOXact_GUC(true, nest);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* also ends SPI connections and session.c's user switch made inside */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = false;
		if (edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
			FreeErrorData(edata);
		else if (error != NULL &&
				 edata->sqlerrcode != ERRCODE_QUERY_CANCELED &&
				 edata->sqlerrcode != ERRCODE_ADMIN_SHUTDOWN)
			*error = edata;
		else
			ReThrowError(edata);
	}
	PG_END_TRY();
	return ok;
}

static bool
run_step(void (*step) (void *), void *arg)
{
	return run_step_in(step, arg, NULL);
}

/* batches: batch.c's claim runs as a step of the cycle, like ours */
bool
pgcb_queue_run_step(void (*step) (void *), void *arg)
{
	return run_step(step, arg);
}

bool
pgcb_queue_try_step(void (*step) (void *), void *arg, ErrorData **error)
{
	return run_step_in(step, arg, error);
}

static Datum
get_col(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

static void
load_key(PgcbEndpoint *ep, Datum secret, PgcbKey *key, bool *ok)
{
	const char *why;
	char	   *s = TextDatumGetCString(secret);

	*ok = pgcb_secret_decode(s, key, &why);
	if (!*ok)
		ereport(WARNING,
				(errmsg("pg_callback: endpoint \"%s\" has an unusable secret: %s", ep->name, why),
				 errhint("Set a new one with callback.rotate_secret().")));
	pfree(s);
}

void
pgcb_queue_load_endpoints(HTAB *endpoints, MemoryContext cfgcxt, TimestampTz *now)
{
	Datum		arg = Int32GetDatum(pgcb_default_timeout_ms);
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;

	/* nothing outside the engine keeps pointers into the old configuration */
	MemoryContextReset(cfgcxt);
	SPI_connect();
	/*
	 * Not read-only: SPI then takes a fresh snapshot, which sees the
	 * write-back just done (retries now pending, 410s disabled) and events
	 * committed since the cycle began.
	 */
	run_plan(PLAN_LOAD, &arg, NULL, false);

	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		ep->seen = false;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		MemoryContext old;
		bool		isnull;
		bool		found;
		int			id = DatumGetInt32(get_col(r, 1, &isnull));
		ArrayType  *arr;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		bool		key_ok;
		char	   *state;
		Datum		d;

		ep = hash_search(endpoints, &id, HASH_ENTER, &found);
		if (!found)
		{
			memset(((char *) ep) + sizeof(int), 0, sizeof(PgcbEndpoint) - sizeof(int));
			ep->breaker = 'c';
		}
		old = MemoryContextSwitchTo(cfgcxt);
		ep->seen = true;
		ep->name = TextDatumGetCString(get_col(r, 2, &isnull));
		ep->url = TextDatumGetCString(get_col(r, 3, &isnull));
		arr = DatumGetArrayTypeP(get_col(r, 4, &isnull));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		ep->headers = palloc(sizeof(char *) * Max(n, 1));
		ep->n_headers = 0;
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				ep->headers[ep->n_headers++] = TextDatumGetCString(elems[i]);
		ep->timeout_ms = DatumGetInt32(get_col(r, 5, &isnull));
		ep->max_attempts = DatumGetInt32(get_col(r, 6, &isnull));
		arr = DatumGetArrayTypeP(get_col(r, 7, &isnull));
		deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
		ep->schedule_ms = palloc(sizeof(int64) * Max(n, 1));
		ep->n_schedule = n;
		for (int i = 0; i < n; i++)
			ep->schedule_ms[i] = nulls[i] ? 0 : DatumGetInt64(elems[i]);
		d = get_col(r, 8, &isnull);
		ep->rate = isnull ? 0 : DatumGetFloat8(d);
		d = get_col(r, 9, &isnull);
		ep->burst = isnull ? 1 : DatumGetInt32(d);
		ep->failure_threshold = DatumGetInt32(get_col(r, 10, &isnull));
		ep->cooldown_ms = DatumGetInt64(get_col(r, 11, &isnull));
		ep->active = DatumGetBool(get_col(r, 12, &isnull));

		/*
		 * Breaker: the table wins when we have no state yet, and whenever
		 * it no longer holds what we last read or wrote: then someone else
		 * (resume_endpoint) changed it, and a resume wins over whatever we
		 * decided meanwhile (our write-back, conditional on the same value,
		 * did nothing).  Compared by value, not by time: a resume's time
		 * may be older than our own change (its transaction began first).
		 */
		state = TextDatumGetCString(get_col(r, 13, &isnull));
		d = get_col(r, 14, &isnull);
		{
			TimestampTz table_at = isnull ? 0 : DatumGetTimestampTz(d);

			if (!found || table_at != ep->breaker_table_at)
			{
				ep->breaker = state[0] == 'o' ? 'o' : state[0] == 'h' ? 'o' : 'c';
				ep->breaker_changed_at = table_at;
				ep->breaker_table_at = table_at;
				ep->breaker_dirty = false;
				if (ep->breaker == 'c')
					ep->consecutive_failures = 0;
			}
		}

		load_key(ep, get_col(r, 15, &isnull), &ep->key, &key_ok);
		if (!key_ok)
			ep->active = false;
		d = get_col(r, 16, &isnull);
		ep->has_previous_key = false;
		if (!isnull)
			load_key(ep, d, &ep->previous_key, &ep->has_previous_key);
		d = get_col(r, 17, &isnull);
		ep->next_due = isnull ? 0 : DatumGetTimestampTz(d);
		*now = DatumGetTimestampTz(get_col(r, 18, &isnull));
		/* batches: see batch.c */
		ep->batch_size = DatumGetInt32(get_col(r, 19, &isnull));
		ep->batch_window_ms = DatumGetInt64(get_col(r, 20, &isnull));
		ep->ordered = DatumGetBool(get_col(r, 21, &isnull));
		d = get_col(r, 22, &isnull);
		ep->transform = isnull ? NULL : TextDatumGetCString(d);
		d = get_col(r, 23, &isnull);
		ep->on_response = isnull ? NULL : TextDatumGetCString(d);
		d = get_col(r, 24, &isnull);
		ep->owner = isnull ? NULL : TextDatumGetCString(d);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();

	/* endpoints dropped meanwhile: forget them once nothing is in flight */
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
	{
		if (!ep->seen)
		{
			ep->active = false;
			ep->next_due = 0;
			if (ep->inflight == 0)
				hash_search(endpoints, &ep->id, HASH_REMOVE, NULL);
		}
	}
}

static ArrayType *
int4_array(const int *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int32GetDatum(v[i]);
	return construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT);
}

/* batches: batch.c builds its arguments alike */
ArrayType *
pgcb_queue_int4_array(const int *v, int n)
{
	return int4_array(v, n);
}

typedef struct ClaimStep
{
	Datum		values[4];
	PgcbClaimed **out;
	MemoryContext cxt;
	int			got;
} ClaimStep;

/* Claimed row r of the SPI result (id, event_id, endpoint_id, attempts, body) into c. */
static void
read_claimed(int r, PgcbClaimed *c, MemoryContext cxt)
{
	bool		isnull;
	text	   *body;
	Datum		d;

	c->id = DatumGetInt64(get_col(r, 1, &isnull));
	ItemPointerCopy((ItemPointer) DatumGetPointer(get_col(r, 10, &isnull)), &c->tid);
	memcpy(&c->event_id, DatumGetUUIDP(get_col(r, 2, &isnull)), sizeof(pg_uuid_t));
	c->endpoint_id = DatumGetInt32(get_col(r, 3, &isnull));
	c->attempts = DatumGetInt32(get_col(r, 4, &isnull));
	body = DatumGetTextPP(get_col(r, 5, &isnull));
	c->body_len = VARSIZE_ANY_EXHDR(body);
	c->body = MemoryContextAlloc(cxt, c->body_len + 1);
	memcpy(c->body, VARDATA_ANY(body), c->body_len);
	c->body[c->body_len] = '\0';
	d = get_col(r, 6, &isnull);
	c->traceparent = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
	d = get_col(r, 7, &isnull);
	c->tracestate = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
	c->event_type = MemoryContextStrdup(cxt, TextDatumGetCString(get_col(r, 8, &isnull)));
}

/* ordering: PLAN_CLAIM_ORDERED, whose last row carries the next retry of a head */
typedef struct OrderedClaimStep
{
	ClaimStep	cs;
	TimestampTz next_due;
} OrderedClaimStep;

static void
ordered_claim_step(void *arg)
{
	OrderedClaimStep *os = (OrderedClaimStep *) arg;
	int			got = 0;

	SPI_connect();
	run_plan(PLAN_CLAIM_ORDERED, os->cs.values, NULL, false);
	*os->cs.out = MemoryContextAlloc(os->cs.cxt, sizeof(PgcbClaimed) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d;

		(void) get_col(r, 1, &isnull);
		if (!isnull)
		{
			read_claimed(r, &(*os->cs.out)[got++], os->cs.cxt);
			continue;
		}
		d = get_col(r, 9, &isnull);
		os->next_due = isnull ? 0 : DatumGetTimestampTz(d);
	}
	SPI_finish();
	os->cs.got = got;
}

int
pgcb_queue_claim_ordered(int endpoint_id, int n, int claimed_by, int lease_ms,
						 PgcbClaimed **out, MemoryContext cxt, TimestampTz *next_due)
{
	OrderedClaimStep os;

	os.cs.values[0] = Int32GetDatum(endpoint_id);
	os.cs.values[1] = Int32GetDatum(n);
	os.cs.values[2] = Float8GetDatum((double) lease_ms);
	os.cs.values[3] = Int32GetDatum(claimed_by);
	os.cs.out = out;
	os.cs.cxt = cxt;
	os.cs.got = 0;
	os.next_due = 0;
	*next_due = 0;
	if (!run_step(ordered_claim_step, &os))
	{
		*out = MemoryContextAlloc(cxt, sizeof(PgcbClaimed));
		return 0;
	}
	*next_due = os.next_due;
	return os.cs.got;
}

typedef struct StatsStep
{
	Datum		values[1];
	char	   *rest;
	MemoryContext cxt;
} StatsStep;

static void
stats_step(void *arg)
{
	StatsStep  *ss = (StatsStep *) arg;
	bool		isnull;
	Datum		d;

	SPI_connect();
	run_plan(PLAN_STATS, ss->values, NULL, false);
	d = get_col(0, 1, &isnull);
	ss->rest = isnull ? NULL : MemoryContextStrdup(ss->cxt, TextDatumGetCString(d));
	SPI_finish();
}

bool
pgcb_queue_write_stats(char *const *docs, int n, char **rest, MemoryContext cxt)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	StatsStep	ss;

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(docs[i]);
	ss.values[0] = PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
	ss.rest = NULL;
	ss.cxt = cxt;
	*rest = NULL;
	/* the common case, every key's row there, in C (queue_stats.c) */
	if (pgcb_stats_add_in_place(docs, n))
		return true;
	if (!run_step(stats_step, &ss))
		return false;

	/*
	 * process_callbacks() waited for the rows it met: one left now was
	 * deleted (purge) while it waited, and is there to insert again in a
	 * new snapshot.
	 */
	for (int tries = 0; !skip_locked && ss.rest != NULL && tries < 3; tries++)
	{
		d[0] = CStringGetTextDatum(ss.rest);
		ss.values[0] = PointerGetDatum(construct_array(d, 1, TEXTOID, -1, false, TYPALIGN_INT));
		stats_step(&ss);
	}
	*rest = ss.rest;
	return true;
}

typedef struct IdsStep
{
	int			which;
	Datum	   *values;
	bool	   *done;
	const int  *ids;
	int			n;
} IdsStep;

/* A plan returning the endpoint ids it dealt with: flag them in done[]. */
static void
ids_step(void *arg)
{
	IdsStep    *is = (IdsStep *) arg;

	SPI_connect();
	run_plan(is->which, is->values, NULL, false);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			id = DatumGetInt32(get_col(r, 1, &isnull));

		for (int i = 0; i < is->n; i++)
			if (is->ids[i] == id)
				is->done[i] = true;
	}
	SPI_finish();
}

static void
run_ids_step(int which, Datum *values, const int *ids, int n, bool *done)
{
	IdsStep		is;

	memset(done, 0, sizeof(bool) * n);
	is.which = which;
	is.values = values;
	is.done = done;
	is.ids = ids;
	is.n = n;
	if (!run_step(ids_step, &is))
		memset(done, 0, sizeof(bool) * n);
	/* process_callbacks() waited for each row: one it did not get is gone */
	if (!skip_locked)
		memset(done, 1, sizeof(bool) * n);
}

void
pgcb_queue_disable_endpoints(const int *ids, int n, bool *done)
{
	Datum		values[1];

	values[0] = PointerGetDatum(int4_array(ids, n));
	run_ids_step(PLAN_DISABLE, values, ids, n, done);
}

void
pgcb_queue_write_breakers(const int *ids, const char *const *states,
						  const char *const *reasons, const TimestampTz *at,
						  const TimestampTz *seen, int n, bool *done)
{
	Datum	   *s = palloc(sizeof(Datum) * n);
	Datum	   *r = palloc(sizeof(Datum) * n);
	bool	   *rnulls = palloc(sizeof(bool) * n);
	Datum	   *t = palloc(sizeof(Datum) * n);
	Datum	   *w = palloc(sizeof(Datum) * n);
	bool	   *wnulls = palloc(sizeof(bool) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	Datum		values[5];

	for (int i = 0; i < n; i++)
	{
		s[i] = CStringGetTextDatum(states[i]);
		rnulls[i] = reasons[i] == NULL;
		r[i] = rnulls[i] ? (Datum) 0 : CStringGetTextDatum(reasons[i]);
		t[i] = TimestampTzGetDatum(at[i]);
		wnulls[i] = seen[i] == 0;
		w[i] = TimestampTzGetDatum(seen[i]);
	}
	values[0] = PointerGetDatum(int4_array(ids, n));
	values[1] = PointerGetDatum(construct_array(s, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_md_array(r, rnulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(t, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_md_array(w, wnulls, 1, dims, lbs, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	run_ids_step(PLAN_BREAKERS, values, ids, n, done);
}

typedef struct ReleaseStep
{
	int			plan;
	Datum		values[4];
	uint64		n;
} ReleaseStep;

static void
release_step(void *arg)
{
	ReleaseStep *rs = (ReleaseStep *) arg;

	SPI_connect();
	run_plan(rs->plan, rs->values, NULL, false);
	rs->n = SPI_processed;
	SPI_finish();
}

uint64
pgcb_queue_release(bool mine, int claimed_by, bool expired, const int64 *keep, int n_keep)
{
	ReleaseStep rs;
	Datum	   *k = palloc(sizeof(Datum) * Max(n_keep, 1));
	ArrayType  *keep_ids;

	for (int i = 0; i < n_keep; i++)
		k[i] = Int64GetDatum(keep[i]);
	keep_ids = construct_array(k, n_keep, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	if (mine)
	{
		rs.plan = PLAN_RELEASE;
		rs.values[0] = BoolGetDatum(mine);
		rs.values[1] = Int32GetDatum(claimed_by);
		rs.values[2] = BoolGetDatum(expired);
		rs.values[3] = PointerGetDatum(keep_ids);
	}
	else if (expired)
	{
		rs.plan = PLAN_RELEASE_EXPIRED;
		rs.values[0] = PointerGetDatum(keep_ids);
	}
	else
		return 0;
	rs.n = 0;
	/* rows held by someone else are skipped; a lock timeout: the next sweep */
	(void) run_step(release_step, &rs);
	return rs.n;
}

typedef struct OrphanStep
{
	Oid			fn;
	uint64		n;
} OrphanStep;

static void
orphan_step(void *arg)
{
	OrphanStep *os = (OrphanStep *) arg;

	os->n = (uint64) DatumGetInt64(OidFunctionCall0(os->fn));
}

/*
 * Deliveries queued for an endpoint that no longer exists (by a transaction
 * that committed after callback.drop_endpoint() removed it) become dead
 * letters with the error "endpoint dropped": callback._dead_letter_orphans().
 * Looked up by name, so that a database still at version 1.0 is skipped.
 */
uint64
pgcb_queue_dead_letter_orphans(void)
{
	Oid			fn = LookupFuncName(list_make2(makeString(PGCB_SCHEMA_NAME),
											   makeString("_dead_letter_orphans")),
									0, NULL, true);

	OrphanStep	os;

	if (!OidIsValid(fn))
		return 0;
	os.fn = fn;
	os.n = 0;
	/* its UPDATE could meet rows a process_callbacks() holds: then next sweep */
	(void) run_step(orphan_step, &os);
	return os.n;
}

char *
pgcb_queue_event_body(int64 delivery_id)
{
	Datum		arg = Int64GetDatum(delivery_id);
	char	   *body = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	run_plan(PLAN_EVENT, &arg, NULL, true);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = get_col(0, 1, &isnull);

		if (!isnull)
			body = MemoryContextStrdup(cxt, TextDatumGetCString(d));
	}
	SPI_finish();
	return body;
}

void
pgcb_queue_record_hook_error(const PgcbOutcome *o, const PgcbFinalAttempt *final, const char *error)
{
	Datum		args[10];
	char		nulls[10];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = Int64GetDatum(o->delivery_id);
	args[1] = Int32GetDatum(final->attempt);
	args[2] = CStringGetTextDatum(error);
	/* the attempt's row, as the write-back forms it (form_attempt) */
	args[3] = TimestampTzGetDatum(o->started_at);
	args[4] = Float8GetDatum(o->latency_ms);
	args[5] = Int32GetDatum(o->status_code);
	nulls[5] = o->status_code == 0 ? 'n' : ' ';
	args[6] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
	nulls[6] = o->error ? ' ' : 'n';
	args[7] = o->response_body ? CStringGetTextDatum(o->response_body) : (Datum) 0;
	nulls[7] = o->response_body ? ' ' : 'n';
	args[8] = BoolGetDatum(final->row_written);
	args[9] = UUIDPGetDatum(&o->event_id);
	SPI_connect();
	run_plan(PLAN_HOOK_ERROR, args, nulls, false);
	SPI_finish();
}
