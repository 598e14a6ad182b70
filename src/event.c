/*
 * event.c
 *		Everything between "an event happened" and "its deliveries are in
 *		callback_queue": the JSON envelope, the event id, the size limit,
 *		the pattern matcher, handing the event to routing (route_cache.c)
 *		and to the queue (queue_insert.c, which inserts as the extension's
 *		owner so that producers need no rights on the queue), and waking the
 *		worker when the transaction commits (a prepared one: at COMMIT
 *		PREPARED).  Also callback.enqueue().
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "event.h"
#include "guc.h"
#include "pg_callback.h"
#include "queue_insert.h"
#include "route_cache.h"
#include "shmem.h"
#include "tracecontext.h"

PG_FUNCTION_INFO_V1(enqueue);
PG_FUNCTION_INFO_V1(validate_event_types);
PG_FUNCTION_INFO_V1(event_type_matches);
PG_FUNCTION_INFO_V1(wake_worker);

/* Registered once per backend (pg_net registered one per transaction). */
static bool xact_callback_registered = false;
static bool wake_at_commit = false;

static ProcessUtility_hook_type prev_utility_hook = NULL;

bool
pgcb_event_type_is_valid(const char *type, bool allow_wildcard)
{
	size_t		len = strlen(type);

	if (len == 0 || len > PGCB_EVENT_TYPE_MAX)
		return false;
	for (const char *p = type; *p; p++)
	{
		char		c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
			  (allow_wildcard && c == '*')))
			return false;
	}
	return true;
}

/*
 * Glob match where '*' stands for any run of characters, dots included; no
 * other character is special.  The pattern is a prefix segment, middle
 * segments and a suffix segment between its stars: the prefix and the
 * suffix are anchored, and each middle segment is taken at its leftmost
 * place after the one before, which is never worse than a later place when
 * '*' is the only wildcard.  So no backtracking: each segment is looked for
 * once, left to right, and the time is bounded by |pattern| * |type| (both at
 * most PGCB_EVENT_TYPE_MAX where they come from SQL).
 */
bool
pgcb_event_type_matches(const char *pattern, const char *type)
{
	size_t		plen = strlen(pattern);
	size_t		tlen = strlen(type);
	const char *first_star = memchr(pattern, '*', plen);
	const char *last_star;
	size_t		head;
	size_t		tail;
	const char *p;
	const char *t;
	const char *t_end;

	if (first_star == NULL)
		return plen == tlen && memcmp(pattern, type, plen) == 0;

	/* the literal prefix before the first star, and suffix after the last */
	head = first_star - pattern;
	last_star = strrchr(pattern, '*');
	tail = plen - (last_star - pattern) - 1;
	if (head + tail > tlen ||
		memcmp(pattern, type, head) != 0 ||
		memcmp(last_star + 1, type + tlen - tail, tail) != 0)
		return false;

	/* the middle segments, in order, within what prefix and suffix left */
	t = type + head;
	t_end = type + tlen - tail;
	p = first_star;
	while (p < last_star)
	{
		const char *seg;
		size_t		seg_len;
		bool		found = false;

		while (*p == '*' && p < last_star)
			p++;
		if (p >= last_star)
			break;
		seg = p;
		while (*p != '*')
			p++;
		seg_len = p - seg;
		for (; t + seg_len <= t_end; t++)
		{
			if (memcmp(t, seg, seg_len) == 0)
			{
				found = true;
				break;
			}
		}
		if (!found)
			return false;
		t += seg_len;
	}
	return true;
}

/*
 * s for a message: whole up to twice the longest event type, else its
 * start and "...", so that an error about a 10 MB argument does not repeat
 * it.  Cut at a character boundary: an invalid type need not be ASCII.
 */
const char *
pgcb_event_clip_for_message(const char *s)
{
	size_t		len = strlen(s);
	int			keep;

	if (len <= 2 * PGCB_EVENT_TYPE_MAX)
		return s;
	keep = pg_mbcliplen(s, (int) Min(len, (size_t) PG_INT32_MAX), PGCB_EVENT_TYPE_MAX);
	return psprintf("%.*s...", keep, s);
}

void
pgcb_event_check_type(const char *type, bool pattern, const char *what)
{
	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what),
				 errhint("Give a name such as 'order.created'.")));
	if (!pgcb_event_type_is_valid(type, pattern))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\"", what, pgcb_event_clip_for_message(type)),
				 pattern ?
				 errhint("Use 1 to %d of the characters A-Z a-z 0-9 _ . - and * as a wildcard, such as 'order.*' or '*'.",
						 PGCB_EVENT_TYPE_MAX) :
				 errhint("Use 1 to %d of the characters A-Z a-z 0-9 _ . -, such as 'order.created'.",
						 PGCB_EVENT_TYPE_MAX)));
}

/*
 * ts as YYYY-MM-DDTHH:MM:SS.ffffffZ.  Events come many to the second: the
 * date and time up to the second are formatted once per second and kept
 * (timestamp2tm cost about a fifth of a narrow row's body), the
 * microseconds every time.  The caller has made room for the 27 bytes.
 */
static void
append_utc_timestamp(StringInfo buf, TimestampTz ts)
{
	static TimestampTz cached_second = PG_INT64_MIN;
	static char cached[20];		/* YYYY-MM-DDTHH:MM:SS */
	TimestampTz second = ts - (ts % USECS_PER_SEC + USECS_PER_SEC) % USECS_PER_SEC;
	int			usec = (int) (ts - second);
	char	   *frac;

	if (second != cached_second)
	{
		struct pg_tm tm;
		fsec_t		fsec;
		int			fields[6];
		static const int widths[6] = {4, 2, 2, 2, 2, 2};
		static const char seps[6] = {'-', '-', 'T', ':', ':', '\0'};
		char	   *p = cached;

		if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		if (tm.tm_year < 1000 || tm.tm_year > 9999)
		{
			appendStringInfo(buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
							 tm.tm_year, tm.tm_mon, tm.tm_mday,
							 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
			return;
		}
		fields[0] = tm.tm_year;
		fields[1] = tm.tm_mon;
		fields[2] = tm.tm_mday;
		fields[3] = tm.tm_hour;
		fields[4] = tm.tm_min;
		fields[5] = tm.tm_sec;
		for (int f = 0; f < 6; f++)
		{
			int			v = fields[f];

			for (int d = widths[f] - 1; d >= 0; d--)
			{
				p[d] = '0' + v % 10;
				v /= 10;
			}
			p += widths[f];
			*p++ = seps[f];
		}
		cached_second = second;
	}
	frac = buf->data + buf->len;
	memcpy(frac, cached, 19);
	frac += 19;
	frac[0] = '.';
	for (int d = 6; d >= 1; d--)
	{
		frac[d] = '0' + usec % 10;
		usec /= 10;
	}
	frac[7] = 'Z';
	buf->len += 27;
	buf->data[buf->len] = '\0';
}

/* s (of length len, no terminator needed) at the end of buf, which has room */
#define PUT(sb, s, n) \
	(memcpy((sb)->data + (sb)->len, (s), (n)), (sb)->len += (n))

void
pgcb_event_body_begin(StringInfo buf, const char *event_type)
{
	size_t		len = strlen(event_type);

	/* one reservation up to the timestamp, then copies: a call per part cost as much again */
	enlargeStringInfo(buf, 9 + len + 15 + 27);
	/* event types are validated: no character in them needs escaping */
	PUT(buf, "{\"type\":\"", 9);
	PUT(buf, event_type, len);
	PUT(buf, "\",\"timestamp\":\"", 15);
	/* may be longer than 27 bytes, in a year past 9999: its own append */
	append_utc_timestamp(buf, GetCurrentTimestamp());
	appendBinaryStringInfo(buf, "\",\"data\":", 9);
}

void
pgcb_event_body_end(StringInfo buf)
{
	appendStringInfoChar(buf, '}');
}

/*
 * The flag lives for one transaction.  PREPARE TRANSACTION ends it without
 * a commit event: clear it there too, or it would wake the worker at this
 * session's next, unrelated commit.  The prepared events become visible at
 * COMMIT PREPARED, which may run in any session of the database and knows
 * nothing of this flag: the utility hook below wakes the worker then (and
 * the worker's poll picks them up in any case).  A subtransaction rolled
 * back after an enqueue leaves the flag set: one needless wake at commit.
 */
static void
pgcb_event_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				pgcb_shmem_wake_worker(MyDatabaseId);
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static void
wake_worker_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(pgcb_event_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * COMMIT PREPARED runs in a transaction of its own: wake the worker when
 * that commits, whatever the prepared transaction did (we cannot tell; one
 * SetLatch and maybe an empty cycle).  Only a flag is set here, before
 * PostgreSQL's checks: if COMMIT PREPARED fails, the abort clears it.
 */
static void
pgcb_event_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						ProcessUtilityContext context, ParamListInfo params,
						QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		wake_worker_at_commit();

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
pgcb_event_init(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = pgcb_event_utility_hook;
}

static void
check_body_size(int body_len)
{
	if (body_len > pgcb_max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event body of %d bytes exceeds callback.max_payload_bytes (%d)",
						body_len, pgcb_max_payload_bytes),
				 errhint("Send a smaller payload, such as an id the receiver can look up, or raise callback.max_payload_bytes.")));
}

/* Routes kept on the stack up to this many endpoints; more are palloc'd. */
#define ROUTES_ON_STACK 16

uint64
pgcb_event_enqueue(PgcbEventRow *ev)
{
	PgcbRoutes	looked_up;
	const PgcbRoutes *routes = ev->routes;
	int32		ids_buf[ROUTES_ON_STACK];
	bool		ordered_buf[ROUTES_ON_STACK];
	int32	   *ids = ids_buf;
	bool	   *ordered = NULL;
	int			n;
	bool		any_unpaused;
	int			body_len = ev->body_len;

	check_body_size(body_len);
	/* a run's next id only for an event that is packed (event_id.c) */
	pgcb_event_id_new(&ev->event_id,
					  ev->id_run != NULL && pgcb_queue_batch_packs() ? ev->id_run : NULL);
	/* routing: route_cache.c (once per event: the trigger's, if still held); the rows: queue_insert.c */
	if (routes == NULL || !pgcb_route_cache_current(routes))
	{
		pgcb_route_cache_lookup(ev->event_type, &looked_up);
		routes = &looked_up;
	}

	/*
	 * A copy: the ordering key's output function and the rows' defaults
	 * run SQL, which may remake the cache the routes point into.
	 */
	n = routes->n;
	any_unpaused = routes->any_unpaused;
	if (n > ROUTES_ON_STACK)
		ids = palloc(n * sizeof(int32));
	if (n > 0)
		memcpy(ids, routes->ids, n * sizeof(int32));
	if (n > 0 && routes->ordered != NULL)
	{
		ordered = n > ROUTES_ON_STACK ? palloc(n * sizeof(bool)) : ordered_buf;
		memcpy(ordered, routes->ordered, n * sizeof(bool));
	}
	routes = NULL;

	/* ordering: the trigger's key costs nothing unless an endpoint orders */
	if (ordered != NULL && ev->ordering_key == NULL && ev->ordering_key_fn != NULL)
		ev->ordering_key = ev->ordering_key_fn(ev->ordering_key_arg);
	pgcb_queue_insert(ev, ids, ordered, n);
	if (ids != ids_buf)
		pfree(ids);
	if (ordered != NULL && ordered != ordered_buf)
		pfree(ordered);

	/* a paused endpoint's events wait for resume_endpoint(), which wakes */
	if (any_unpaused)
		wake_worker_at_commit();
	return n;
}

/*
 * ordering: an ordering key given to enqueue(): at most PGCB_ORDERING_KEY_MAX
 * bytes (it is kept in a btree index), no NUL (a text cannot hold one).
 */
const char *
pgcb_event_check_key(const char *key)
{
	if (strlen(key) > PGCB_ORDERING_KEY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ordering key of %zu bytes is too long", strlen(key)),
				 errhint("Give a key of at most %d bytes, such as the id of the row or customer whose events must stay in order.",
						 PGCB_ORDERING_KEY_MAX)));
	return key;
}

/* One delivery to endpoint_id, whatever its patterns: it was named. */
void
pgcb_event_enqueue_to(PgcbEventRow *ev, int32 endpoint_id)
{
	check_body_size(ev->body_len);
	pgcb_event_id_new(&ev->event_id, NULL);
	/* ordering: no key (a backfill is not ordered against live events) */
	pgcb_queue_insert(ev, &endpoint_id, NULL, 1);
	wake_worker_at_commit();
}

/* A text argument of enqueue(), or NULL when not given. */
static const char *
optional_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * callback.enqueue(event_type text, payload jsonb, key text, traceparent
 * text, tracestate text) returns uuid
 */
Datum
enqueue(PG_FUNCTION_ARGS)
{
	char	   *event_type;
	Jsonb	   *payload;
	StringInfoData body;
	PgcbEventRow ev = {0};
	pg_uuid_t  *event_id = palloc(sizeof(pg_uuid_t));

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_type must not be NULL"),
				 errhint("Give an event type such as 'order.created'.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be NULL"),
				 errhint("Give a JSON value, such as '{}'::jsonb or 'null'::jsonb.")));
	event_type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	payload = PG_GETARG_JSONB_P(1);
	pgcb_event_check_type(event_type, false, "event type");
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
		ev.ordering_key = pgcb_event_check_key(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	/* checked before anything is built or queued (tracecontext.c) */
	pgcb_trace_for_event(optional_arg(fcinfo, 3), optional_arg(fcinfo, 4),
						 &ev.traceparent, &ev.tracestate);

	initStringInfo(&body);
	pgcb_event_body_begin(&body, event_type);
	(void) JsonbToCString(&body, &payload->root, VARSIZE(payload));
	pgcb_event_body_end(&body);

	ev.event_type = event_type;
	ev.body = body.data;
	ev.body_len = body.len;
	pgcb_event_enqueue(&ev);
	*event_id = ev.event_id;
	PG_RETURN_UUID_P(event_id);
}

/* callback.validate_event_types(patterns text[]): NULL means "not given". */
Datum
validate_event_types(PG_FUNCTION_ARGS)
{
	ArrayType  *patterns;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	patterns = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(patterns) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_types must be a one-dimensional array"),
				 errhint("Give a list of patterns, such as '{order.*,invoice.paid}'.")));
	deconstruct_array(patterns, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_types must not be empty"),
				 errhint("Give at least one pattern, such as '{*}' for every event.")));
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("event_types must not contain NULL"),
					 errhint("Remove the NULL; use '*' to match every event type.")));
		pgcb_event_check_type(TextDatumGetCString(elems[i]), true, "event type pattern");
	}
	PG_RETURN_VOID();
}

/*
 * An argument of event_type_matches() longer than anything that can be
 * stored or sent (validate_event_types, enqueue and the trigger all stop at
 * PGCB_EVENT_TYPE_MAX) is refused, so the cost of a match stays bounded.
 */
static void
check_match_arg_length(text *t, const char *what)
{
	size_t		len = VARSIZE_ANY_EXHDR(t);

	if (len > PGCB_EVENT_TYPE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s of %zu bytes is too long", what, len),
				 errdetail("Event types and patterns are at most %d characters.",
						   PGCB_EVENT_TYPE_MAX),
				 errhint("Give an event type or pattern of 1 to %d characters, such as 'order.*'.",
						 PGCB_EVENT_TYPE_MAX)));
}

/*
 * callback.event_type_matches(patterns text[], event_type text) returns
 * boolean: whether any pattern matches.  NULL elements match nothing.
 */
Datum
event_type_matches(PG_FUNCTION_ARGS)
{
	ArrayType  *patterns = PG_GETARG_ARRAYTYPE_P(0);
	text	   *type_t = PG_GETARG_TEXT_PP(1);
	char	   *type;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	check_match_arg_length(type_t, "event type");
	if (ARR_NDIM(patterns) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_types must be a one-dimensional array"),
				 errhint("Give a list of patterns, such as '{order.*,invoice.paid}'.")));
	type = text_to_cstring(type_t);
	deconstruct_array(patterns, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		text	   *pattern_t;
		char	   *pattern;
		bool		match;

		CHECK_FOR_INTERRUPTS();
		if (nulls[i])
			continue;
		pattern_t = DatumGetTextPP(elems[i]);
		check_match_arg_length(pattern_t, "event type pattern");
		pattern = text_to_cstring(pattern_t);
		match = pgcb_event_type_matches(pattern, type);
		pfree(pattern);
		if (match)
			PG_RETURN_BOOL(true);
	}
	PG_RETURN_BOOL(false);
}

/* callback.wake_worker(): wake at commit, so the worker sees what we did. */
Datum
wake_worker(PG_FUNCTION_ARGS)
{
	wake_worker_at_commit();
	PG_RETURN_VOID();
}
