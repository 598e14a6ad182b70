/*
 * delivery.c
 *		The delivery engine: decides how many deliveries each endpoint may
 *		take now (its free in-flight slots, its token bucket, its circuit
 *		breaker), claims them, sends them signed through http1.c (http://,
 *		callback.http_engine = native) or http.c (a libcurl transfer), or
 *		through notify_target.c or amqp_transport.c, turns each finished
 *		attempt into an outcome with the retry policy (settle), and writes
 *		the outcomes back in one statement (keeping, in the worker, those
 *		whose rows an SQL user's open transaction holds, for a later cycle).
 *
 * Memory: endpoint configuration lives in config_cxt, reset at each
 * reload; each request is allocated in request_cxt and freed when it
 * finishes (http1.c keeps its copy of a native request in its own
 * context, freed when the outcome is read); outcome strings live in
 * outcome_cxt, reset after each write-back.  So the engine's memory stays flat however long the backlog.
 * Requests in flight are also kept in a list, so that shutdown (a cancelled
 * or failed process_callbacks) frees each curl handle and header list.
 *
 * Nothing that curl calls back (response_write here, the socket and timer
 * callbacks in http.c, the address checks in netpolicy.c) may palloc or
 * ereport: an error would longjmp through libcurl's frames.  The response
 * buffer is therefore allocated before the transfer starts.
 */
#include "postgres.h"

#include <time.h>

#include "commands/extension.h"
#include "lib/ilist.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "amqp_transport.h"
#include "batch.h"
#include "delivery.h"
#include "epshare.h"
#include "guc.h"
#include "hooks.h"
#include "http.h"
#include "http1.h"
#include "http1_response.h"
#include "netpolicy.h"
#include "notify_target.h"
#include "queue.h"
#include "ratelimit.h"
#include "retry.h"
#include "sign.h"
#include "tracecontext.h"

#define USER_AGENT "pg_callback/1.0"
#define N_FIXED_HEADERS 5

typedef struct PgcbRequest
{
	int64		delivery_id;
	pg_uuid_t	event_id;
	ItemPointerData tid;		/* the claimed version, for the write-back */
	int			endpoint_id;
	int			attempt;		/* this attempt's number, from 1 */
	char	   *body;
	int			body_len;
	PgcbBatch  *batch;			/* batches: the deliveries it carries; NULL: one */
	CURL	   *easy;			/* NULL: an amqp publish or a native request */
	uint64		easy_gen;		/* http.c's settings when it was lent */
	TimestampTz started_at;
	dlist_node	node;			/* in live_requests while in flight */
	char	   *response;		/* head of the body, allocated up front */
	int			response_len;
	int			response_cap;	/* callback.max_response_bytes at the start */
	struct curl_slist fixed[N_FIXED_HEADERS];	/* no malloc per request */
	struct curl_slist *extra;	/* the endpoint's own headers (curl copies) */
	struct curl_slist trace[2];	/* traceparent, tracestate */
	char		traceparent_header[16 + PGCB_TRACEPARENT_LEN];
	char	   *tracestate_header;
	char		id_header[64];
	char		ts_header[48];
	char		sig_header[2 * PGCB_SIGNATURE_LEN + 32];
	char		why[PGCB_NETPOLICY_WHY_LEN];
	char		errbuf[CURL_ERROR_SIZE];
} PgcbRequest;

static PgcbWorkerSlot *my_slot = NULL;
static int	my_slotno = -1;
static int	my_claimed_by = -1;
static HTAB *endpoints = NULL;
static MemoryContext engine_cxt = NULL;
static MemoryContext config_cxt = NULL;
static MemoryContext request_cxt = NULL;
static MemoryContext outcome_cxt = NULL;

static PgcbOutcome *outcomes = NULL;
static int	n_outcomes = 0;
static int	cap_outcomes = 0;
static int	inflight = 0;
static dlist_head live_requests = DLIST_STATIC_INIT(live_requests);
static bool more_due = false;
static TimestampTz next_due_at = 0;

/*
 * What a lock held back at the last flush (see pgcb_delivery_flush): the
 * outcomes kept are the first n_blocked (they do not count as unflushed,
 * or the worker would cycle without pause); stats rollups not yet added.
 * All are tried again at held_retry_at or with the next batch.
 */
#define HELD_RETRY_MS 200
static int	n_blocked = 0;
static bool held_back = false;
static TimestampTz held_retry_at = 0;
static char **pending_stats = NULL;
static int	n_pending_stats = 0;
static int	cap_pending_stats = 0;

bool
pgcb_delivery_in_worker(void)
{
	return my_slot != NULL;
}

void
pgcb_delivery_init(PgcbWorkerSlot *slot, int claimed_by)
{
	HASHCTL		info;

	my_slot = slot;
	my_slotno = slot != NULL ? (int) (slot - pgcb_shared->workers) : -1;
	my_claimed_by = claimed_by;
	/* only the worker must never wait: see queue.c, LOCK_MARK */
	pgcb_queue_set_skip_locked(slot != NULL);
	if (engine_cxt != NULL)
		return;

	/*
	 * All or nothing: a set-up that failed half-way (no descriptor left, say)
	 * is undone, so that the next call (process_callbacks() in the same
	 * session) starts again instead of using what is missing.
	 */
	PG_TRY();
	{
		engine_cxt = AllocSetContextCreate(TopMemoryContext, "pg_callback delivery",
										   ALLOCSET_DEFAULT_SIZES);
		config_cxt = AllocSetContextCreate(engine_cxt, "pg_callback endpoints",
										   ALLOCSET_DEFAULT_SIZES);
		request_cxt = AllocSetContextCreate(engine_cxt, "pg_callback requests",
											ALLOCSET_DEFAULT_SIZES);
		outcome_cxt = AllocSetContextCreate(engine_cxt, "pg_callback outcomes",
											ALLOCSET_DEFAULT_SIZES);
		info.keysize = sizeof(int);
		info.entrysize = sizeof(PgcbEndpoint);
		info.hcxt = engine_cxt;
		endpoints = hash_create("pg_callback endpoints", 64, &info,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		pgcb_http_init();
		pgcb_http1_init();
		pgcb_amqp_init();
	}
	PG_CATCH();
	{
		pgcb_delivery_shutdown();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

static void
note_due(TimestampTz when)
{
	if (when != 0 && (next_due_at == 0 || when < next_due_at))
		next_due_at = when;
}

/*
 * curl's write callback: copies into the buffer allocated by start_request,
 * never allocates (see the header comment).
 */
static size_t
response_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	PgcbRequest *req = (PgcbRequest *) userdata;
	size_t		len = size * nmemb;
	size_t		room = (size_t) (req->response_cap - req->response_len);

	/* keep the head of the body, drain the rest: the cap bounds memory */
	if (room > 0)
	{
		size_t		n = Min(len, room);

		memcpy(req->response + req->response_len, data, n);
		req->response_len += (int) n;
	}
	return len;
}

static void
set_header(struct curl_slist *node, char *text, struct curl_slist *next)
{
	node->data = text;
	node->next = next;
}

/*
 * W3C trace context (tracecontext.c): each attempt is a span of its own, so
 * it sends the event's trace-id and flags with a new parent-id; the
 * tracestate as given.  Returns the list with these in front of next.
 */
static struct curl_slist *
trace_headers(PgcbRequest *req, PgcbClaimed *c, struct curl_slist *next)
{
	const char *why;

	/* checked at write time; again here for rows written by hand */
	if (c->traceparent == NULL || !pgcb_trace_parent_valid(c->traceparent, &why))
		return next;
	if (c->tracestate != NULL && pgcb_trace_state_valid(c->tracestate, &why))
	{
		req->tracestate_header = psprintf("tracestate: %s", c->tracestate);
		set_header(&req->trace[1], req->tracestate_header, next);
		next = &req->trace[1];
	}
	strcpy(req->traceparent_header, "traceparent: ");
	pgcb_trace_attempt_parent(c->traceparent,
							  req->traceparent_header + strlen("traceparent: "));
	set_header(&req->trace[0], req->traceparent_header, next);
	return &req->trace[0];
}

/* What every started attempt counts, whatever its transport. */
static void
note_started(PgcbEndpoint *ep, PgcbRequest *req)
{
	ep->inflight++;
	inflight++;
	if (my_slot)
	{
		pg_atomic_write_u64(&my_slot->inflight, inflight);
		pg_atomic_fetch_add_u64(&my_slot->bytes_sent, req->body_len);
	}
}

/*
 * The amqp transport's way to send an attempt: the same id, timestamp and
 * signature as an HTTP attempt, as message properties and headers.  A batch
 * is one message (its array body), with its events' ids in a header; its
 * type, and its routing key unless the URL names one, is "batch".
 */
static void
start_publish(PgcbEndpoint *ep, PgcbRequest *req, const char *msg_id, int64 ts,
			  const char *event_type)
{
	PgcbAmqpMessage m;
	char	  **headers = ep->headers;
	int			n_headers = ep->n_headers;

	if (req->batch != NULL)
	{
		headers = palloc(sizeof(char *) * (n_headers + 1));
		memcpy(headers, ep->headers, sizeof(char *) * n_headers);
		headers[n_headers++] = req->batch->ids_header;
		event_type = "batch";
	}

	m.body = req->body;
	m.body_len = req->body_len;
	m.event_type = event_type;
	m.webhook_id = msg_id;
	m.timestamp = ts;
	m.signature = strchr(req->sig_header, ' ') + 1;
	m.headers = headers;
	m.n_headers = n_headers;
	dlist_push_tail(&live_requests, &req->node);
	req->started_at = GetCurrentTimestamp();
	pgcb_amqp_publish(ep->id, ep->url, ep->timeout_ms, &m, req);
	note_started(ep, req);
	if (headers != ep->headers)
		pfree(headers);
}

/*
 * The options every request of ours sets alike: set once on a new handle,
 * kept while it sits in http.c's pool (which a reload empties, for
 * callback.ca_file), instead of a reset and a dozen calls per request.
 */
static void
set_fixed_options(CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	/* a proxy from the environment would hide the real peer from the SSRF check */
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, response_write);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, pgcb_netpolicy_opensocket);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, pgcb_netpolicy_prereq);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);

	/*
	 * HTTP/1.1, also over TLS, where libcurl would offer HTTP/2 first.  An
	 * HTTP/2 server may answer before it reads the request's body and then
	 * reset the stream (RFC 9113, 8.1): a 403, 413 or 429 from a front
	 * door.  libcurl 7.88 reports a stream error for such a transfer,
	 * whether or not it had read the status: the answer is lost, and a
	 * request the server has seen is retried.
	 */
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	if (pgcb_ca_file != NULL && pgcb_ca_file[0] != '\0')
		curl_easy_setopt(easy, CURLOPT_CAINFO, pgcb_ca_file);
}

static void
start_request(PgcbEndpoint *ep, PgcbClaimed *c, PgcbBatch *batch)
{
	MemoryContext old = MemoryContextSwitchTo(request_cxt);
	PgcbRequest *req = palloc0(sizeof(PgcbRequest));
	CURL	   *easy;
	bool		fresh;
	char		msg_id[40];
	char		sig[PGCB_SIGNATURE_LEN];
	int64		ts = (int64) time(NULL);
	int			len;
	/* written and read by http1.c (callback.http_engine), or a libcurl transfer */
	bool		native = pgcb_http_engine == PGCB_HTTP_ENGINE_NATIVE && pgcb_http1_takes(ep->url);

	/* batches: sent as one row, its head (batch.c) */
	if (batch != NULL)
	{
		req->batch = palloc(sizeof(PgcbBatch));
		*req->batch = *batch;
		c = &batch->head;
	}
	req->delivery_id = c->id;
	req->event_id = c->event_id;
	req->tid = c->tid;
	req->endpoint_id = ep->id;
	req->attempt = c->attempts + 1;
	req->body = c->body;
	req->body_len = c->body_len;
	req->response_len = 0;

	/* webhook-id: stable across retries, unique across reinstalls */
	strcpy(msg_id, "msg_");
	hex_encode((const char *) c->event_id.data, UUID_LEN, msg_id + 4);
	msg_id[4 + 2 * UUID_LEN] = '\0';
	/* batches: the batch's own id, and its events' ids in a header */
	if (batch != NULL)
	{
		strlcpy(msg_id, batch->msg_id, sizeof(msg_id));
		req->extra = curl_slist_append(NULL, batch->ids_header);
		if (req->extra == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory building the headers of endpoint \"%s\"", ep->name),
					 errhint("Lower callback.max_inflight or free memory on the server.")));
	}

	snprintf(req->id_header, sizeof(req->id_header), "webhook-id: %s", msg_id);
	snprintf(req->ts_header, sizeof(req->ts_header), "webhook-timestamp: " INT64_FORMAT, ts);
	pgcb_sign(&ep->key, msg_id, ts, req->body, req->body_len, sig, my_slot != NULL);
	len = snprintf(req->sig_header, sizeof(req->sig_header), "webhook-signature: %s", sig);
	if (ep->has_previous_key)
	{
		pgcb_sign(&ep->previous_key, msg_id, ts, req->body, req->body_len, sig, my_slot != NULL);
		snprintf(req->sig_header + len, sizeof(req->sig_header) - len, " %s", sig);
	}
	if (pgcb_amqp_is_url(ep->url))
	{
		start_publish(ep, req, msg_id, ts, batch ? NULL : c->event_type);
		if (batch == NULL)
			pfree(c->event_type);
		MemoryContextSwitchTo(old);
		return;
	}
	/* a batch's head is formed by batch.c, without an event type */
	if (batch == NULL)
		pfree(c->event_type);
	req->response_cap = pgcb_max_response_bytes;
	if (!native)
		req->response = palloc(req->response_cap + 1);
	for (int i = 0; i < ep->n_headers; i++)
	{
		struct curl_slist *l = curl_slist_append(req->extra, ep->headers[i]);

		if (l == NULL)
		{
			curl_slist_free_all(req->extra);
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory building the headers of endpoint \"%s\"", ep->name),
					 errhint("Lower callback.max_inflight or free memory on the server.")));
		}
		req->extra = l;
	}
	set_header(&req->fixed[0], req->id_header, &req->fixed[1]);
	set_header(&req->fixed[1], req->ts_header, &req->fixed[2]);
	set_header(&req->fixed[2], req->sig_header, &req->fixed[3]);
	set_header(&req->fixed[3], "Content-Type: application/json", &req->fixed[4]);
	set_header(&req->fixed[4], "Expect:", trace_headers(req, c, req->extra));

	if (native)
	{
		/* http1.c copies the headers and the body into its request */
		dlist_push_tail(&live_requests, &req->node);
		req->started_at = GetCurrentTimestamp();
		pgcb_http1_start(ep->url, &req->fixed[0], USER_AGENT, req->body, req->body_len,
						 ep->timeout_ms, pgcb_connect_timeout_ms, req->response_cap,
						 ep->on_response != NULL, req);
		note_started(ep, req);
		MemoryContextSwitchTo(old);
		return;
	}
	easy = pgcb_http_easy_get(&fresh, &req->easy_gen);
	req->easy = easy;
	/* from here on shutdown frees the handle and the header list */
	dlist_push_tail(&live_requests, &req->node);
	if (fresh)
		set_fixed_options(easy);
	/* the rest points into req or depends on the endpoint: set every time */
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_URL, ep->url);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) req->body_len);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, &req->fixed[0]);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) ep->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) Min(pgcb_connect_timeout_ms, ep->timeout_ms));
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, (void *) req->why);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, (void *) req->why);

	req->started_at = GetCurrentTimestamp();
	pgcb_http_start(easy);
	note_started(ep, req);
	MemoryContextSwitchTo(old);
}

/*
 * Several workers (epshare.c): what this worker decided about ep's breaker
 * or hold becomes the shared state; share_sync() reads it back after each
 * load.  A backend (process_callbacks) keeps to its own copy.
 */
static void
share_fill(PgcbEndpoint *ep, PgcbEpBreaker *b)
{
	b->state = ep->breaker;
	b->changed_at = ep->breaker_changed_at;
	b->table_at = ep->breaker_table_at;
	b->failures = ep->consecutive_failures;
	b->hold_until = ep->hold_until;
	b->gen = ep->share_gen;
}

static void
share_push(PgcbEndpoint *ep)
{
	PgcbEpBreaker b;

	if (my_slot == NULL)
		return;
	share_fill(ep, &b);
	pgcb_epshare_push(MyDatabaseId, ep->id, &b);
	ep->share_gen = b.gen;
}

static void
share_sync(PgcbEndpoint *ep)
{
	PgcbEpBreaker b;

	if (my_slot == NULL)
		return;
	share_fill(ep, &b);
	/* the load adopted a breaker time from the table that we had not seen */
	if (pgcb_epshare_sync(MyDatabaseId, ep->id, ep->breaker_table_at != ep->share_table_at, &b))
		ep->breaker_dirty = false;	/* another worker decided later, and writes it */
	ep->breaker = b.state;
	ep->breaker_changed_at = b.changed_at;
	ep->breaker_table_at = ep->share_table_at = b.table_at;
	ep->consecutive_failures = b.failures;
	ep->hold_until = b.hold_until;
	ep->share_gen = b.gen;
}

/*
 * Several workers: the shared state of endpoints dropped since (or of an
 * extension dropped and created again, whose ids start over) is forgotten,
 * every few seconds, so that a new endpoint starts afresh and the table
 * does not fill up.
 */
static void
forget_gone_endpoints(TimestampTz now)
{
	static TimestampTz last = 0;
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;
	int		   *ids;
	int			n = 0;

	if (last == 0)
		pgcb_epshare_set_generation(get_extension_oid("pg_callback", true));
	if (last != 0 && now - last < 10 * USECS_PER_SEC)
		return;
	last = now;
	ids = palloc(sizeof(int) * Max(hash_get_num_entries(endpoints), 1));
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		ids[n++] = ep->id;
	pgcb_epshare_keep(MyDatabaseId, ids, n);
	pfree(ids);
}

static void
breaker_set(PgcbEndpoint *ep, char state, const char *reason)
{
	if (ep->breaker == state)
		return;
	ep->breaker = state;
	ep->breaker_changed_at = GetCurrentTimestamp();
	ep->breaker_reason = reason;
	ep->breaker_dirty = true;
	share_push(ep);
}

static PgcbOutcome *
new_outcome(void)
{
	if (n_outcomes == cap_outcomes)
	{
		int			newcap = Max(256, cap_outcomes * 2);

		if (outcomes == NULL)
			outcomes = MemoryContextAlloc(engine_cxt, newcap * sizeof(PgcbOutcome));
		else
			outcomes = repalloc(outcomes, newcap * sizeof(PgcbOutcome));
		cap_outcomes = newcap;
	}
	return &outcomes[n_outcomes++];
}

/* Text safe to store: the valid-encoding prefix, no NULs. */
static char *
storable_text(const char *data, int len)
{
	int			ok = pg_encoding_verifymbstr(GetDatabaseEncoding(), data, len);

	return pnstrdup(data, ok);
}

/* One finished attempt, whatever carried it: what settle() decides on. */
typedef struct PgcbAttempt
{
	int64		delivery_id;
	pg_uuid_t	event_id;
	ItemPointerData tid;		/* the claimed version (PgcbOutcome) */
	int			endpoint_id;	/* its in-flight slot is given back */
	int			attempt;		/* from 1 */
	TimestampTz started_at;
	long		status;			/* HTTP status; 0: no response (or no HTTP) */
	long		retry_after_ms; /* -1: none */
	char	   *error;			/* NULL: none besides the status */
	bool		delivered;		/* a transport without status codes: it got there */
	bool		permanent;		/* a failure no retry can mend: dead at once */
	double		latency_ms;
	char	   *response_body;
	char	   *response_headers;	/* JSON object; only for an on_response hook */
	const PgcbBatch *batch;		/* batches: its other deliveries share the outcome */
} PgcbAttempt;

/*
 * Turn a finished attempt into an outcome for the write-back, and into its
 * endpoint's breaker and hold and the worker's counters: the same for every
 * transport.
 */
static void
settle(PgcbEndpoint *ep, const PgcbAttempt *a)
{
	PgcbOutcome *o;
	PgcbDecision d;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();

	if (a->delivered)
	{
		memset(&d, 0, sizeof(d));
		d.verdict = PGCB_DELIVERED;
	}
	else if (ep)
		d = pgcb_retry_decide(a->status, a->retry_after_ms, a->attempt, ep->max_attempts,
							  ep->schedule_ms, ep->n_schedule);
	else
		d = pgcb_retry_decide(a->status, a->retry_after_ms, a->attempt, a->attempt, NULL, 0);
	if (a->permanent && d.verdict != PGCB_DELIVERED)
	{
		/* the event's fault, not the endpoint's: no breaker counts it */
		d.verdict = PGCB_DEAD;
		d.reason = NULL;
		d.counts_as_failure = false;
	}

	old = MemoryContextSwitchTo(outcome_cxt);
	o = new_outcome();
	o->delivery_id = a->delivery_id;
	o->event_id = a->event_id;
	o->tid = a->tid;
	o->endpoint_id = a->endpoint_id;
	o->status_code = (int) a->status;
	o->latency_ms = a->latency_ms;
	o->started_at = a->started_at;
	o->next_attempt_at = 0;
	o->response_body = a->response_body;
	/* only a final outcome's: on_response reads them */
	o->response_headers = d.verdict != PGCB_RETRY ? a->response_headers : NULL;
	if (a->error != NULL)
		o->error = pstrdup(a->error);
	else if (d.verdict != PGCB_DELIVERED)
		o->error = psprintf("HTTP %ld", a->status);
	else
		o->error = NULL;
	if (d.verdict == PGCB_DEAD && d.reason && o->error)
		o->error = psprintf("%s (%s)", o->error, d.reason);
	switch (d.verdict)
	{
		case PGCB_DELIVERED:
			o->verdict = "delivered";
			break;
		case PGCB_RETRY:
			o->verdict = "pending";
			o->next_attempt_at = TimestampTzPlusMilliseconds(now, d.delay_ms);
			note_due(o->next_attempt_at);
			break;
		case PGCB_DEAD:
			o->verdict = "dead";
			break;
	}
	/* batches: every delivery of the batch has the request's outcome */
	if (a->batch != NULL)
	{
		PgcbOutcome first = *o;

		for (int i = 1; i < a->batch->n; i++)
		{
			o = new_outcome();
			*o = first;
			o->delivery_id = a->batch->members[i].id;
			o->event_id = a->batch->members[i].event_id;
			o->tid = a->batch->members[i].tid;
		}
	}

	if (my_slot)
		pgcb_epshare_release(my_slotno, MyDatabaseId, a->endpoint_id, 1);
	if (ep)
	{
		if (d.verdict == PGCB_DELIVERED)
		{
			ep->consecutive_failures = my_slot == NULL ? 0 :
				pgcb_epshare_failures(MyDatabaseId, ep->id, 0, 0);
			breaker_set(ep, 'c', NULL);
		}
		else if (d.counts_as_failure)
		{
			/* counted over all the database's workers */
			ep->consecutive_failures = my_slot == NULL ? ep->consecutive_failures + 1 :
				pgcb_epshare_failures(MyDatabaseId, ep->id, 1, ep->consecutive_failures);
			if (ep->breaker == 'h' ||
				(ep->breaker == 'c' && ep->consecutive_failures >= ep->failure_threshold))
			{
				breaker_set(ep, 'o', NULL);
				ep->breaker_reason = psprintf("%d consecutive failures, last: %s",
											  ep->consecutive_failures, o->error);
				note_due(TimestampTzPlusMilliseconds(now, ep->cooldown_ms));
			}
		}
		if (d.endpoint_gone)
			ep->gone = true;
		/* "slow down" is about the endpoint, not one delivery: hold them all */
		if (a->status == 429 || (a->status == 503 && a->retry_after_ms > 0))
		{
			long		hold_ms = d.verdict == PGCB_RETRY ? d.delay_ms :
				Min(Max(a->retry_after_ms, 0), pgcb_retry_after_max_ms);

			ep->hold_until = Max(ep->hold_until, TimestampTzPlusMilliseconds(now, hold_ms));
			share_push(ep);
		}
	}
	MemoryContextSwitchTo(old);

	if (my_slot)
	{
		/* batches: counted by deliveries, as the stats are */
		uint64		n = a->batch != NULL ? a->batch->n : 1;

		pg_atomic_fetch_add_u64(&my_slot->sent, n);
		if (d.verdict == PGCB_DELIVERED)
			pg_atomic_fetch_add_u64(&my_slot->delivered, n);
		else
		{
			pg_atomic_fetch_add_u64(&my_slot->failed, n);
			pgcb_shmem_set_error(my_slot, o->error);
		}
		if (d.verdict == PGCB_DEAD)
			pg_atomic_fetch_add_u64(&my_slot->dead, n);
	}
}

/* What every finished attempt gives back, whatever its transport. */
static void
end_request(PgcbEndpoint *ep, PgcbRequest *req)
{
	if (ep)
		ep->inflight--;
	inflight--;
	if (my_slot)
		pg_atomic_write_u64(&my_slot->inflight, inflight);
	dlist_delete(&req->node);
	curl_slist_free_all(req->extra);
	if (req->easy != NULL)
	{
		pgcb_http_easy_put(req->easy, req->easy_gen);
		pfree(req->response);
	}
	pfree(req->body);
	if (req->tracestate_header)
		pfree(req->tracestate_header);
	if (req->batch != NULL)
	{
		pgcb_batch_free(req->batch);
		pfree(req->batch);
	}
	pfree(req);
}

/* The attempt's fields that every transport knows from its request. */
static void
attempt_of(PgcbRequest *req, PgcbAttempt *a)
{
	a->delivery_id = req->delivery_id;
	a->endpoint_id = req->endpoint_id;
	a->event_id = req->event_id;
	a->tid = req->tid;
	a->attempt = req->attempt;
	a->started_at = req->started_at;
	a->batch = req->batch;
	a->retry_after_ms = -1;
}

static void
finish_request(CURL *easy, CURLcode result)
{
	PgcbRequest *req;
	PgcbEndpoint *ep;
	PgcbAttempt a = {0};
	curl_off_t	total_us = 0;
	struct curl_header *h;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
	attempt_of(req, &a);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &a.status);
	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us);
	if (result != CURLE_OK)
		a.status = 0;
	else if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		a.retry_after_ms = pgcb_retry_parse_retry_after(h->value);
	a.latency_ms = (double) total_us / 1000.0;
	if (req->response_len > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(outcome_cxt);

		a.response_body = storable_text(req->response, req->response_len);
		MemoryContextSwitchTo(old);
	}
	if (result != CURLE_OK)
		a.error = req->why[0] ? req->why :
			req->errbuf[0] ? req->errbuf : (char *) curl_easy_strerror(result);

	ep = hash_search(endpoints, &req->endpoint_id, HASH_FIND, NULL);
	a.endpoint_id = req->endpoint_id;
	/* kept only where a hook will read them */
	if (ep != NULL && ep->on_response != NULL && a.status != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(outcome_cxt);

		a.response_headers = pgcb_http_headers_json(easy, pgcb_max_response_bytes);
		MemoryContextSwitchTo(old);
	}
	settle(ep, &a);
	end_request(ep, req);
}

/* A request of http1.c's (callback.http_engine = native): as finish_request. */
static void
finish_native(const PgcbHttp1Result *r)
{
	PgcbRequest *req = (PgcbRequest *) r->owner;
	PgcbEndpoint *ep;
	PgcbAttempt a = {0};
	MemoryContext old;

	attempt_of(req, &a);
	a.status = r->status;
	a.retry_after_ms = r->retry_after_ms;
	a.latency_ms = r->latency_ms;
	old = MemoryContextSwitchTo(outcome_cxt);
	if (r->body_len > 0)
		a.response_body = storable_text(r->body, r->body_len);
	if (r->error != NULL)
		a.error = pstrdup(r->error);
	ep = hash_search(endpoints, &req->endpoint_id, HASH_FIND, NULL);
	/* kept only where a hook will read them */
	if (ep != NULL && ep->on_response != NULL && a.status != 0)
		a.response_headers = pgcb_http1_headers_json(r->headers, r->headers_len,
													 pgcb_max_response_bytes);
	MemoryContextSwitchTo(old);
	settle(ep, &a);
	end_request(ep, req);
}

/*
 * A publish: delivered when the broker confirmed it; a failure no retry
 * can mend (a missing exchange, an unroutable message) dead at once, as an
 * HTTP 4xx would be; anything else retried.  No HTTP status is recorded.
 */
static void
finish_publish(PgcbRequest *req, const PgcbAmqpResult *r)
{
	PgcbEndpoint *ep;
	PgcbAttempt a = {0};

	attempt_of(req, &a);
	a.delivered = r->ok;
	a.permanent = !r->ok && r->permanent;
	a.error = r->ok ? NULL : (char *) r->error;
	a.latency_ms = r->latency_ms;
	ep = hash_search(endpoints, &req->endpoint_id, HASH_FIND, NULL);
	settle(ep, &a);
	end_request(ep, req);
}

bool
pgcb_delivery_wait(long timeout_ms)
{
	long		amqp_ms = pgcb_amqp_ms_until_due();
	bool		latch_set;
	CURL	   *easy;
	CURLcode	result;
	void	   *owner;
	PgcbAmqpResult r;
	PgcbHttp1Result r1;
	long		http1_ms;

	/* the requests the cycle queued go out now, after its commit */
	pgcb_http1_poll();
	http1_ms = pgcb_http1_ms_until_due();

	if (amqp_ms >= 0 && (timeout_ms < 0 || amqp_ms < timeout_ms))
		timeout_ms = amqp_ms;
	if (http1_ms >= 0 && (timeout_ms < 0 || http1_ms < timeout_ms))
		timeout_ms = http1_ms;
	latch_set = pgcb_http_wait(timeout_ms);
	while ((easy = pgcb_http_next_done(&result)) != NULL)
		finish_request(easy, result);
	pgcb_http1_poll();
	while (pgcb_http1_next_done(&r1))
		finish_native(&r1);
	pgcb_amqp_poll();
	while ((owner = pgcb_amqp_next_done(&r)) != NULL)
		finish_publish((PgcbRequest *) owner, &r);
	return latch_set;
}

/*
 * Start outcome_cxt again with only what is still to be written: the
 * outcomes kept and the reasons of breakers still dirty.  So memory stays
 * flat however long a lock holds some of them back.
 */
static void
renew_outcome_cxt(void)
{
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;
	bool		keep = n_outcomes > 0;
	MemoryContext fresh;

	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
	{
		if (!ep->breaker_dirty)
			ep->breaker_reason = NULL;
		else if (ep->breaker_reason != NULL)
			keep = true;
	}
	if (!keep)
	{
		MemoryContextReset(outcome_cxt);
		return;
	}
	fresh = AllocSetContextCreate(engine_cxt, "pg_callback outcomes", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < n_outcomes; i++)
	{
		if (outcomes[i].error)
			outcomes[i].error = MemoryContextStrdup(fresh, outcomes[i].error);
		if (outcomes[i].response_body)
			outcomes[i].response_body = MemoryContextStrdup(fresh, outcomes[i].response_body);
		if (outcomes[i].response_headers)
			outcomes[i].response_headers = MemoryContextStrdup(fresh, outcomes[i].response_headers);
	}
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		if (ep->breaker_reason != NULL)
			ep->breaker_reason = MemoryContextStrdup(fresh, ep->breaker_reason);
	MemoryContextDelete(outcome_cxt);
	outcome_cxt = fresh;
}

static void
add_pending_stats(char *doc)
{
	if (n_pending_stats == cap_pending_stats)
	{
		cap_pending_stats = Max(8, cap_pending_stats * 2);
		pending_stats = pending_stats == NULL ?
			MemoryContextAlloc(engine_cxt, sizeof(char *) * cap_pending_stats) :
			repalloc(pending_stats, sizeof(char *) * cap_pending_stats);
	}
	pending_stats[n_pending_stats++] = doc;
}

/*
 * The on_response hooks of the outcomes just written as final, in the
 * write-back's transaction, after it: a hook's failure (hooks.c undoes
 * its work) is noted on the attempt, and the outcome stands.  Written
 * once, so each runs once per final outcome.
 */
static void
run_on_response(const PgcbFinalAttempt *final)
{
	for (int i = 0; i < n_outcomes; i++)
	{
		PgcbOutcome *o = &outcomes[i];
		PgcbEndpoint *ep;
		char	   *event;
		char	   *error;

		if (final[i].attempt == 0)
			continue;
		ep = hash_search(endpoints, &o->endpoint_id, HASH_FIND, NULL);
		if (ep == NULL || ep->on_response == NULL)
			continue;
		CHECK_FOR_INTERRUPTS();
		event = pgcb_queue_event_body(o->delivery_id);
		error = pgcb_hooks_on_response(ep->on_response, ep->owner, o->delivery_id, event,
									   o->status_code, o->response_headers, o->response_body);
		if (error != NULL)
		{
			pgcb_queue_record_hook_error(o, &final[i], error);
			if (my_slot)
				pgcb_shmem_set_error(my_slot, error);
		}
	}
}

/*
 * Write back what is finished: outcomes, then the stats rollup, the 410s
 * and the breakers.  In the worker each of these skips the rows someone
 * else holds (queue.c, LOCK_MARK) and keeps what it could not write, to try
 * again in a later cycle: an outcome is written once, when its row is free
 * (or dropped if the row is gone by then), and its stats with it or later,
 * never twice.
 */
void
pgcb_delivery_flush(void)
{
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;
	int			n = hash_get_num_entries(endpoints);
	int		   *gone = palloc(sizeof(int) * Max(n, 1));
	int			n_gone = 0;
	int		   *ids = palloc(sizeof(int) * Max(n, 1));
	const char **states = palloc(sizeof(char *) * Max(n, 1));
	const char **reasons = palloc(sizeof(char *) * Max(n, 1));
	TimestampTz *at = palloc(sizeof(TimestampTz) * Max(n, 1));
	TimestampTz *seen = palloc(sizeof(TimestampTz) * Max(n, 1));
	bool	   *done = palloc(sizeof(bool) * Max(n, 1));
	int			n_breakers = 0;

	if (n_outcomes > 0)
	{
		bool	   *kept = palloc(sizeof(bool) * n_outcomes);
		PgcbFinalAttempt *final = palloc(sizeof(PgcbFinalAttempt) * n_outcomes);
		char	   *stats;
		int			n_kept PG_USED_FOR_ASSERTS_ONLY = pgcb_queue_write_back(outcomes, n_outcomes, kept, final, &stats, engine_cxt);
		int			k = 0;

		if (stats != NULL)
			add_pending_stats(stats);
		run_on_response(final);
		for (int i = 0; i < n_outcomes; i++)
			if (kept[i])
				outcomes[k++] = outcomes[i];
		Assert(k == n_kept);
		n_outcomes = k;
		pfree(kept);
	}
	if (n_pending_stats > 0)
	{
		char	   *rest;

		if (pgcb_queue_write_stats(pending_stats, n_pending_stats, &rest, engine_cxt))
		{
			for (int i = 0; i < n_pending_stats; i++)
				pfree(pending_stats[i]);
			n_pending_stats = 0;
			if (rest != NULL)
				add_pending_stats(rest);
		}
	}

	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
	{
		if (ep->gone)
		{
			gone[n_gone++] = ep->id;
			ep->active = false;
		}
		if (ep->breaker_dirty)
		{
			ids[n_breakers] = ep->id;
			states[n_breakers] = ep->breaker == 'c' ? "closed" : ep->breaker == 'o' ? "open" : "half_open";
			reasons[n_breakers] = ep->breaker_reason;
			at[n_breakers] = ep->breaker_changed_at;
			/* what any of the database's workers last wrote or read there */
			seen[n_breakers] = my_slot == NULL ? ep->breaker_table_at :
				pgcb_epshare_table_at(MyDatabaseId, ep->id, ep->breaker_table_at);
			n_breakers++;
		}
	}
	if (n_gone > 0)
	{
		pgcb_queue_disable_endpoints(gone, n_gone, done);
		for (int i = 0; i < n_gone; i++)
		{
			ep = hash_search(endpoints, &gone[i], HASH_FIND, NULL);
			if (ep != NULL && done[i])
				ep->gone = false;
		}
	}
	if (n_breakers > 0)
	{
		pgcb_queue_write_breakers(ids, states, reasons, at, seen, n_breakers, done);
		for (int i = 0; i < n_breakers; i++)
		{
			ep = hash_search(endpoints, &ids[i], HASH_FIND, NULL);
			/* not done: someone holds the row; written again next time */
			if (ep == NULL || !done[i])
				continue;
			ep->breaker_dirty = false;
			/* if a resume wins instead, the next load sees it differ */
			ep->breaker_table_at = ep->share_table_at = at[i];
			if (my_slot)
				pgcb_epshare_written(MyDatabaseId, ep->id, at[i]);
		}
	}

	renew_outcome_cxt();
	n_blocked = n_outcomes;
	held_back = n_outcomes > 0 || n_pending_stats > 0;
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		held_back |= ep->gone || ep->breaker_dirty;
	if (held_back)
	{
		held_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HELD_RETRY_MS);
		note_due(held_retry_at);
	}
	if (my_slot)
	{
		pg_atomic_fetch_add_u64(&my_slot->batches, 1);
		my_slot->last_activity_at = GetCurrentTimestamp();
	}
}

/* Whether ep's requests go over HTTP, each on a connection of its own. */
static bool
over_http(PgcbEndpoint *ep)
{
	return pgcb_notify_channel(ep->url) == NULL && !pgcb_amqp_is_url(ep->url);
}

/*
 * When an open breaker lets its endpoint probe again.
 */
static TimestampTz
probe_at(PgcbEndpoint *ep)
{
	return TimestampTzPlusMilliseconds(ep->breaker_changed_at, ep->cooldown_ms);
}

/*
 * Whether ep could use a slot now or holds one: the endpoints that share
 * the in-flight slots (see fair_share).
 */
static bool
endpoint_busy(PgcbEndpoint *ep, TimestampTz now)
{
	if (ep->inflight > 0)
		return true;
	if (!ep->active || ep->next_due == 0 || ep->next_due > now || ep->hold_until > now)
		return false;
	return ep->breaker != 'o' || now >= probe_at(ep);
}

/*
 * Most slots one endpoint may hold: callback.max_inflight_per_endpoint, and
 * no more than max_inflight / (n_busy + 1), so that the endpoints that are
 * busy together always leave slots free for one more whose work becomes
 * due (two slow endpoints cannot take every slot).  At least 1.
 */
static int
fair_share(int n_busy)
{
	return Min(pgcb_max_inflight_per_endpoint,
			   Max(1, pgcb_max_inflight / (n_busy + 1)));
}

/*
 * How many deliveries endpoint ep may take now, noting when it may take
 * more.  A time is noted only when ep is claimable then: one that waits for
 * its own requests to finish is woken by their outcomes, and noting a time
 * already past would make the worker cycle without pause (issue 14.7).
 */
static int
endpoint_wants(PgcbEndpoint *ep, int room, int share, TimestampTz now)
{
	int			want;
	long		wait_ms;
	int			granted;

	if (!ep->active || ep->next_due == 0)
		return 0;
	if (ep->hold_until > now)
	{
		note_due(ep->hold_until);
		return 0;
	}
	if (ep->breaker == 'o' && now < probe_at(ep))
	{
		note_due(probe_at(ep));
		return 0;
	}
	/* open and cooled down, or half-open: one probe at a time decides */
	if (ep->breaker != 'c' && ep->inflight > 0)
		return 0;
	if (ep->next_due > now)
	{
		note_due(ep->next_due);
		return 0;
	}
	/* batches: a partial batch waits for its window (noted by pgcb_batch_hold) */
	if (ep->batch_held)
		return 0;
	if (ep->breaker == 'c')
		want = Min(share - ep->inflight, room);
	else
		want = Min(1, room);
	/* batches: want counts requests; their rows stay within callback.batch_size */
	if (ep->batch_size > 1)
		want = Min(want, Max(1, pgcb_batch_size / ep->batch_size));
	if (want <= 0)
		return 0;
	/* several workers: the cap and the single probe hold for all (epshare.c) */
	if (my_slot)
	{
		want = pgcb_epshare_reserve(my_slotno, MyDatabaseId, ep->id, want,
									pgcb_max_inflight_per_endpoint, ep->breaker != 'c');
		if (want <= 0)
			return 0;
	}

	/* the probe takes its token like any request: max_rate holds for all */
	granted = pgcb_ratelimit_take(MyDatabaseId, ep->id, ep->rate, ep->burst, want, &wait_ms);
	if (my_slot && granted < want)
		pgcb_epshare_release(my_slotno, MyDatabaseId, ep->id, want - granted);
	/* bounded before it becomes microseconds: the sum must not overflow */
	if (granted < want && wait_ms > 0)
		note_due(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											 Min(wait_ms, PGCB_RATELIMIT_MAX_WAIT_MS)));
	if (granted > 0 && ep->breaker == 'o')
	{
		breaker_set(ep, 'h', "probing after cooldown");
		ep->breaker_dirty = false;	/* transient; only open/closed are written */
	}
	return granted;
}

/*
 * Replace the claimed body by the endpoint's transform of it (the bytes
 * then signed and sent); a batch's body (the JSON array of its events) is
 * transformed whole.  Here, before the request: no transaction may be open
 * while it is in flight.  False: the transform failed, and that is the
 * attempt's outcome (of every delivery in a batch), decided by the retry
 * policy as a failure without a response; not the endpoint's fault, so not
 * counted by its breaker.
 */
static bool
apply_transform(PgcbEndpoint *ep, PgcbClaimed *c, PgcbBatch *batch)
{
	MemoryContext old = MemoryContextSwitchTo(request_cxt);
	char	   *body = c->body;
	int			body_len = c->body_len;
	char	   *error;
	PgcbOutcome *o;
	PgcbDecision d;
	TimestampTz now = GetCurrentTimestamp();

	if (pgcb_hooks_transform(ep->transform, ep->owner, c->id, &body, &body_len, &error))
	{
		pfree(c->body);
		c->body = body;
		c->body_len = body_len;
		MemoryContextSwitchTo(old);
		return true;
	}
	MemoryContextSwitchTo(outcome_cxt);
	d = pgcb_retry_decide(0, -1, c->attempts + 1, ep->max_attempts, ep->schedule_ms, ep->n_schedule);
	o = new_outcome();
	o->delivery_id = c->id;
	o->event_id = c->event_id;
	o->tid = c->tid;
	o->endpoint_id = ep->id;
	o->status_code = 0;
	o->latency_ms = 0;
	o->started_at = now;
	o->next_attempt_at = 0;
	o->response_body = NULL;
	o->response_headers = NULL;
	o->error = pstrdup(error);
	if (d.verdict == PGCB_RETRY)
	{
		o->verdict = "pending";
		o->next_attempt_at = TimestampTzPlusMilliseconds(now, d.delay_ms);
		note_due(o->next_attempt_at);
	}
	else
	{
		o->verdict = "dead";
		if (d.reason)
			o->error = psprintf("%s (%s)", o->error, d.reason);
	}
	if (batch != NULL)
	{
		PgcbOutcome first = *o;

		for (int i = 1; i < batch->n; i++)
		{
			o = new_outcome();
			*o = first;
			o->delivery_id = batch->members[i].id;
			o->event_id = batch->members[i].event_id;
			o->tid = batch->members[i].tid;
		}
		pgcb_batch_free(batch);
	}
	MemoryContextSwitchTo(old);
	pfree(c->body);
	/* a batch's head has no event type (batch.c) */
	if (batch == NULL && c->event_type != NULL)
		pfree(c->event_type);
	pfree(error);
	/* its rate token: the caller gives back what it did not start */
	if (my_slot)
	{
		uint64		n = batch != NULL ? batch->n : 1;

		pg_atomic_fetch_add_u64(&my_slot->failed, n);
		if (d.verdict == PGCB_DEAD)
			pg_atomic_fetch_add_u64(&my_slot->dead, n);
		pgcb_shmem_set_error(my_slot, o->error);
	}
	return false;
}

/*
 * A notify: endpoint's attempt: the notification is queued in this (the
 * claiming) transaction and the caller writes the outcome back in it too,
 * so both commit together.  No HTTP status: the attempt records NULL.
 */
static void
notify_attempt(PgcbEndpoint *ep, PgcbClaimed *c, const char *channel)
{
	PgcbAttempt a = {0};

	a.delivery_id = c->id;
	a.endpoint_id = c->endpoint_id;
	a.event_id = c->event_id;
	a.tid = c->tid;
	a.endpoint_id = ep->id;
	a.attempt = c->attempts + 1;
	a.started_at = GetCurrentTimestamp();
	a.retry_after_ms = -1;
	a.error = pgcb_notify_send(channel, c->body, c->body_len, &a.permanent);
	a.delivered = (a.error == NULL);
	a.latency_ms = (double) (GetCurrentTimestamp() - a.started_at) / 1000.0;
	settle(ep, &a);
	if (my_slot && a.error == NULL)
		pg_atomic_fetch_add_u64(&my_slot->bytes_sent, c->body_len);
}

/* Claimed rows in queue order, so that a NOTIFY channel gets them in it. */
static int
cmp_claimed(const void *a, const void *b)
{
	int64		x = ((const PgcbClaimed *) a)->id;
	int64		y = ((const PgcbClaimed *) b)->id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * ordering: claim for the endpoints asked, the ordered ones one by one
 * through their own statement (queue.c, PLAN_CLAIM_ORDERED), the others
 * together.  Rows go to *out, in request_cxt.
 */
static int
claim_for(int n_want, const int *ids, const int *counts, int lease_ms, PgcbClaimed **out)
{
	int		   *plain_ids = palloc(sizeof(int) * n_want);
	int		   *plain_counts = palloc(sizeof(int) * n_want);
	int			n_plain = 0;
	int			got = 0;

	*out = NULL;
	for (int k = 0; k < n_want; k++)
	{
		PgcbEndpoint *ep = hash_search(endpoints, &ids[k], HASH_FIND, NULL);

		if (ep == NULL || !ep->ordered)
		{
			plain_ids[n_plain] = ids[k];
			plain_counts[n_plain++] = counts[k];
		}
	}
	if (n_plain > 0)
		got = pgcb_queue_claim(n_plain, plain_ids, plain_counts, my_claimed_by, lease_ms,
							   out, request_cxt);
	for (int k = 0; k < n_want; k++)
	{
		PgcbEndpoint *ep = hash_search(endpoints, &ids[k], HASH_FIND, NULL);
		PgcbClaimed *more;
		TimestampTz next_retry;
		int			m;

		if (ep == NULL || !ep->ordered)
			continue;
		m = pgcb_queue_claim_ordered(ids[k], counts[k], my_claimed_by, lease_ms,
									 &more, request_cxt, &next_retry);
		/* a key waits for its head's retry: wake then, not at the next poll */
		note_due(next_retry);
		if (*out == NULL)
		{
			*out = more;
			got = m;
			continue;
		}
		if (m > 0)
		{
			*out = repalloc(*out, sizeof(PgcbClaimed) * (got + m));
			memcpy(*out + got, more, sizeof(PgcbClaimed) * m);
			got += m;
		}
		pfree(more);
	}
	pfree(plain_ids);
	pfree(plain_counts);
	return got;
}

/*
 * batches: claim and start what the batch endpoints among ids/counts (in
 * requests) want, taking them out of the lists, which keep the others;
 * returns the deliveries started.  Tokens are per request.
 */
static int
claim_batches(int *ids, int *counts, int *n_want, int lease_ms)
{
	int			n = *n_want;
	int		   *b_ids = palloc(sizeof(int) * n);
	int		   *b_counts = palloc(sizeof(int) * n);
	int		   *b_sizes = palloc(sizeof(int) * n);
	int		   *b_got = palloc0(sizeof(int) * n);
	int			n_b = 0;
	int			k = 0;
	int			got;
	int			started = 0;
	PgcbBatch  *batches;
	PgcbEndpoint *ep;

	for (int i = 0; i < n; i++)
	{
		ep = hash_search(endpoints, &ids[i], HASH_FIND, NULL);
		if (ep->batch_size > 1)
		{
			b_ids[n_b] = ids[i];
			b_counts[n_b] = counts[i];
			b_sizes[n_b] = ep->batch_size;
			n_b++;
		}
		else
		{
			ids[k] = ids[i];
			counts[k] = counts[i];
			k++;
		}
	}
	*n_want = k;
	if (n_b == 0)
		return 0;

	got = pgcb_batch_claim(n_b, b_ids, b_counts, b_sizes, my_claimed_by, lease_ms,
						   &batches, request_cxt);
	for (int i = 0; i < got; i++)
	{
		ep = hash_search(endpoints, &batches[i].head.endpoint_id, HASH_FIND, NULL);
		Assert(ep != NULL);
		if (ep->transform != NULL && !apply_transform(ep, &batches[i].head, &batches[i]))
			continue;
		start_request(ep, NULL, &batches[i]);
		started += batches[i].n;
		for (int j = 0; j < n_b; j++)
			if (b_ids[j] == ep->id)
				b_got[j]++;
	}
	for (int j = 0; j < n_b; j++)
	{
		if (b_got[j] < b_counts[j])
		{
			pgcb_ratelimit_give_back(MyDatabaseId, b_ids[j], b_counts[j] - b_got[j]);
			if (my_slot)
				pgcb_epshare_release(my_slotno, MyDatabaseId, b_ids[j], b_counts[j] - b_got[j]);
		}
		else
			more_due = true;
	}
	pfree(batches);
	return started;
}


int
pgcb_delivery_cycle(int max_new)
{
	HASH_SEQ_STATUS seq;
	PgcbEndpoint *ep;
	TimestampTz now = GetCurrentTimestamp();
	int			n_eps;
	int		   *ids;
	int		   *counts;
	int			n_want = 0;
	int			room = Min(max_new, pgcb_batch_size);
	PgcbClaimed *claimed;
	int			got;
	int		   *got_per;
	int			lease_ms = pgcb_lease_ms;
	int			n_busy = 0;
	int			share;
	int			n_notified = 0;
	int			started;

	/*
	 * Each HTTP request holds a connection of its own (HTTP/1.1): one
	 * started beyond callback.max_connections would wait inside libcurl
	 * with its timeout running, and fail unsent.  It waits here instead.
	 */
	int			http_room = pgcb_max_connections - pgcb_http_running() - pgcb_http1_running();
	int			http_share;

	pgcb_delivery_flush();
	pgcb_queue_load_endpoints(endpoints, config_cxt, &now);
	if (my_slot)
		forget_gone_endpoints(now);
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		share_sync(ep);

	next_due_at = 0;
	more_due = false;
	if (held_back)
		note_due(held_retry_at);
	/* a notification carries one event: notify: endpoints never batch */
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		if (ep->batch_size > 1 && pgcb_notify_channel(ep->url) != NULL)
			ep->batch_size = 1;
	/* batches: hold partial batches whose window is open */
	note_due(pgcb_batch_hold(endpoints, now));
	n_eps = hash_get_num_entries(endpoints);
	ids = palloc(sizeof(int) * Max(n_eps, 1));
	counts = palloc(sizeof(int) * Max(n_eps, 1));
	got_per = palloc0(sizeof(int) * Max(n_eps, 1));
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
		n_busy += endpoint_busy(ep, now) ? 1 : 0;
	share = fair_share(n_busy);
	/* the same fair share of the connections, which may be fewer than the slots */
	http_share = Max(1, pgcb_max_connections / (n_busy + 1));
	hash_seq_init(&seq, endpoints);
	while ((ep = hash_seq_search(&seq)) != NULL)
	{
		bool		http = over_http(ep);
		int			ep_room = http ? Min(room, http_room) : room;
		int			ep_share = http ? Min(share, http_share) : share;
		int			want = ep_room > 0 ? endpoint_wants(ep, ep_room, ep_share, now) : 0;

		if (want > 0)
		{
			/* a claim must outlive the request, or another claimer could send it too */
			lease_ms = Max(lease_ms, 2 * ep->timeout_ms + pgcb_connect_timeout_ms);
			ids[n_want] = ep->id;
			counts[n_want] = want;
			n_want++;
			room -= want;
			if (http)
				http_room -= want;
		}
		else if (ep_room <= 0 && ep->active && ep->next_due != 0 && ep->next_due <= now)
			more_due = true;	/* no room this time; due all the same */
	}
	if (n_want == 0)
		return 0;

	/* batches: batch endpoints are claimed apart, by batches (batch.c) */
	started = claim_batches(ids, counts, &n_want, lease_ms);
	if (n_want == 0)
		return started;

	got = claim_for(n_want, ids, counts, lease_ms, &claimed);
	if (got > 1)
		qsort(claimed, got, sizeof(PgcbClaimed), cmp_claimed);
	for (int i = 0; i < got; i++)
	{
		PgcbClaimed *c = &claimed[i];
		const char *channel;
		bool		transform_failed = false;

		ep = hash_search(endpoints, &c->endpoint_id, HASH_FIND, NULL);
		Assert(ep != NULL);
		/* hooks: the endpoint's transform; a failure is the attempt's outcome */
		if (ep->transform != NULL && !apply_transform(ep, c, NULL))
			transform_failed = true;
		/* the transport, by the URL's scheme */
		else if ((channel = pgcb_notify_channel(ep->url)) != NULL)
		{
			notify_attempt(ep, c, channel);
			pfree(c->body);
			n_notified++;
		}
		else
			start_request(ep, c, NULL);
		if (c->traceparent)
			pfree(c->traceparent);
		if (c->tracestate)
			pfree(c->tracestate);
		/* not started: its rate token is given back below */
		if (transform_failed)
			continue;
		for (int k = 0; k < n_want; k++)
			if (ids[k] == c->endpoint_id)
				got_per[k]++;
	}
	/* NOTIFY attempts: recorded in the transaction whose commit sends them */
	if (n_notified > 0)
		pgcb_delivery_flush();
	for (int k = 0; k < n_want; k++)
	{
		if (got_per[k] < counts[k])
		{
			pgcb_ratelimit_give_back(MyDatabaseId, ids[k], counts[k] - got_per[k]);
			if (my_slot)
				pgcb_epshare_release(my_slotno, MyDatabaseId, ids[k], counts[k] - got_per[k]);
		}
		else
		{
			more_due = true;	/* it took all it asked for: maybe more are due */
			/* no response will come back to start the next cycle: due now */
			ep = hash_search(endpoints, &ids[k], HASH_FIND, NULL);
			if (ep != NULL && pgcb_notify_channel(ep->url) != NULL)
				note_due(GetCurrentTimestamp());
		}
	}
	pfree(claimed);
	return got + started;
}

int
pgcb_delivery_inflight(void)
{
	return inflight;
}

int
pgcb_delivery_unflushed(void)
{
	return n_outcomes - n_blocked;
}

bool
pgcb_delivery_more_due(void)
{
	return more_due;
}

long
pgcb_delivery_ms_until_due(void)
{
	long		ms;

	if (next_due_at == 0)
		return -1;
	ms = (long) ((next_due_at - GetCurrentTimestamp()) / 1000);
	return Max(ms, 0);
}

void
pgcb_delivery_release_claims(bool mine, bool expired)
{
	int64	   *keep = palloc(sizeof(int64) * Max(n_outcomes, 1));
	uint64		n;

	/* rows whose outcome we hold: their request was sent, no need again */
	for (int i = 0; i < n_outcomes; i++)
		keep[i] = outcomes[i].delivery_id;
	n = pgcb_queue_release(mine, my_claimed_by, expired, keep, n_outcomes);

	if (n > 0)
		ereport(LOG,
				(errmsg("pg_callback: %llu claimed deliveries returned to the queue",
						(unsigned long long) n),
				 errdetail("A claimer stopped before recording their outcome; they will be sent again with the same webhook-id.")));
}

void
pgcb_delivery_apply_settings(void)
{
	pgcb_http_apply_settings();
	pgcb_http1_apply_settings();
}

void
pgcb_delivery_shutdown(void)
{
	dlist_mutable_iter it;

	/* curl_multi_cleanup() frees none of the handles still attached */
	dlist_foreach_modify(it, &live_requests)
	{
		PgcbRequest *req = dlist_container(PgcbRequest, node, it.cur);

		dlist_delete(&req->node);
		/* a publish or a native request has no handle: their shutdowns forget them */
		if (req->easy != NULL)
			pgcb_http_abandon(req->easy);
		curl_slist_free_all(req->extra);
	}
	pgcb_amqp_shutdown();
	pgcb_http1_shutdown();
	pgcb_http_shutdown();
	if (engine_cxt != NULL)
		MemoryContextDelete(engine_cxt);
	engine_cxt = NULL;
	endpoints = NULL;
	outcomes = NULL;
	n_outcomes = cap_outcomes = 0;
	n_blocked = 0;
	held_back = false;
	pending_stats = NULL;
	n_pending_stats = cap_pending_stats = 0;
	inflight = 0;
	next_due_at = 0;
	more_due = false;
}
