/*
 * guc.c
 *		Defines the callback.* settings and reserves the prefix.
 *
 * Settings read only by the worker are PGC_SIGHUP so that a reload reaches
 * it.  callback.database_name is a filter the launcher applies at each
 * reload; callback.max_workers sizes nothing, but is fixed at start so that
 * a reload never has to stop a serving worker to honour a smaller cap.
 */
#include "postgres.h"

#include <float.h>
#include <limits.h>

#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "compat.h"
#include "guc.h"
#include "pg_callback.h"
#include "tracecontext.h"

char	   *pgcb_database_name = NULL;
int			pgcb_workers_per_database = 1;
int			pgcb_max_workers = 8;
int			pgcb_max_inflight = 256;
int			pgcb_max_inflight_per_endpoint = 128;
int			pgcb_batch_size = 1000;
int			pgcb_poll_interval_ms = 1000;
int			pgcb_default_timeout_ms = 5000;
int			pgcb_connect_timeout_ms = 2000;
int			pgcb_lease_ms = 60000;
int			pgcb_max_payload_bytes = 1048576;
int			pgcb_max_response_bytes = 1024;
int			pgcb_hook_timeout_ms = 2000;
int			pgcb_retention_s = 7 * 24 * 3600;
int			pgcb_retry_after_max_ms = 3600 * 1000;
double		pgcb_retry_jitter = 0.2;
double		pgcb_max_rate = 0;
char	   *pgcb_ssrf_allowlist = NULL;
char	   *pgcb_ca_file = NULL;
int			pgcb_max_connections = 256;
double		pgcb_health_min_success_rate = 99.5;
double		pgcb_health_max_avg_ms = 150;
int			pgcb_health_max_backlog = 1000;
char	   *pgcb_health_window = NULL;
char	   *pgcb_traceparent = NULL;
bool		pgcb_inbox = false;
char	   *pgcb_tracestate = NULL;
int			pgcb_attempt_history = PGCB_ATTEMPT_HISTORY_ALL;

int			pgcb_http_engine = PGCB_HTTP_ENGINE_NATIVE;

static const struct config_enum_entry http_engine_options[] = {
	{"native", PGCB_HTTP_ENGINE_NATIVE, false},
	{"libcurl", PGCB_HTTP_ENGINE_LIBCURL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry attempt_history_options[] = {
	{"all", PGCB_ATTEMPT_HISTORY_ALL, false},
	{"failures", PGCB_ATTEMPT_HISTORY_FAILURES, false},
	{NULL, 0, false}
};

static bool
check_ssrf_allowlist(char **newval, void **extra, GucSource source)
{
	extern bool pgcb_netpolicy_allowlist_is_valid(const char *list, char **bad);
	char	   *bad = NULL;

	if (*newval == NULL || pgcb_netpolicy_allowlist_is_valid(*newval, &bad))
		return true;
	GUC_check_errdetail("\"%s\" is not a CIDR block such as 127.0.0.0/8 or ::1/128.", bad);
	return false;
}

/* A malformed trace context is refused when set, not when an event takes it. */
static bool
check_traceparent(char **newval, void **extra, GucSource source)
{
	const char *why;

	if (*newval == NULL || (*newval)[0] == '\0' || pgcb_trace_parent_valid(*newval, &why))
		return true;
	GUC_check_errdetail("%s", why);
	GUC_check_errhint(PGCB_TRACEPARENT_HINT);
	return false;
}

static bool
check_tracestate(char **newval, void **extra, GucSource source)
{
	const char *why;

	if (*newval == NULL || pgcb_trace_state_valid(*newval, &why))
		return true;
	GUC_check_errdetail("%s", why);
	GUC_check_errhint(PGCB_TRACESTATE_HINT);
	return false;
}

static bool
check_database_name(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names = NIL;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	copy = pstrdup(*newval);
	ok = SplitGUCList(copy, ',', &names);
	list_free(names);
	pfree(copy);
	if (!ok)
		GUC_check_errdetail("Give database names separated by commas, such as app, billing (double-quote a name that holds a comma).");
	return ok;
}

/*
 * Whether callback.database_name lets the launcher serve datname: an empty
 * setting serves every database, else only those it names (exactly, case
 * included).
 */
bool
pgcb_guc_database_wanted(const char *datname)
{
	char	   *copy;
	List	   *names = NIL;
	ListCell   *lc;
	bool		wanted = false;

	if (pgcb_database_name == NULL || pgcb_database_name[0] == '\0')
		return true;
	copy = pstrdup(pgcb_database_name);
	if (SplitGUCList(copy, ',', &names))
	{
		foreach(lc, names)
		{
			if (strcmp((char *) lfirst(lc), datname) == 0)
				wanted = true;
		}
	}
	list_free(names);
	pfree(copy);
	return wanted;
}

void
pgcb_guc_init(void)
{
	DefineCustomStringVariable("callback.database_name",
							   "Databases delivered from (comma-separated; empty: every database where the extension is installed).",
							   NULL, &pgcb_database_name, "",
							   PGC_SIGHUP, GUC_LIST_INPUT, check_database_name, NULL, NULL);
	DefineCustomIntVariable("callback.max_workers",
							"Most delivery workers at once, over all databases.",
							"A database beyond this waits for a slot; callback.callback_databases shows which.",
							&pgcb_max_workers, 8, 1, PGCB_MAX_WORKERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.workers_per_database",
							"Delivery workers per served database.",
							"They claim disjoint work and share rate limits, breakers and in-flight caps; all count against callback.max_workers.",
							&pgcb_workers_per_database, 1, 1, PGCB_MAX_WORKERS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.max_inflight",
							"Most HTTP requests in flight at once, per worker.",
							NULL, &pgcb_max_inflight, 256, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.max_inflight_per_endpoint",
							"Most HTTP requests in flight at once to one endpoint.",
							"Keeps a slow endpoint from taking every slot.",
							&pgcb_max_inflight_per_endpoint, 128, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.batch_size",
							"Most deliveries claimed by one claim.",
							NULL, &pgcb_batch_size, 1000, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.poll_interval",
							"Longest the worker sleeps when nothing wakes it.",
							"Commits wake the worker at once; this is only the fallback.",
							&pgcb_poll_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.default_timeout",
							"Total time allowed for one HTTP attempt, when the endpoint sets none.",
							NULL, &pgcb_default_timeout_ms, 5000, 1, 300 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.connect_timeout",
							"Time allowed to open a connection.",
							NULL, &pgcb_connect_timeout_ms, 2000, 1, 300 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.lease",
							"How long a claimed delivery stays claimed before another claimer may take it.",
							"Must exceed the longest timeout; a crashed worker's deliveries come back after it.",
							&pgcb_lease_ms, 60000, 1000, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.max_payload_bytes",
							"Largest event body accepted by enqueue and the trigger.",
							NULL, &pgcb_max_payload_bytes, 1048576, 64, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.max_response_bytes",
							"How much of a response body is kept in the attempt history.",
							NULL, &pgcb_max_response_bytes, 1024, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomEnumVariable("callback.attempt_history",
							 "Which attempts leave a row in callback_attempts: all, or failures (and what follows one).",
							 "failures leaves out a delivery delivered at its first attempt; callback_stats and every metric still count it.",
							 &pgcb_attempt_history, PGCB_ATTEMPT_HISTORY_ALL, attempt_history_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.hook_timeout",
							"Longest an endpoint's transform or on_response function may run per call.",
							"A call that runs longer is cancelled and counts as a failed attempt (transform) or a recorded hook error (on_response).",
							&pgcb_hook_timeout_ms, 2000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.retention",
							"Default age after which callback.purge() removes finished deliveries and attempts.",
							NULL, &pgcb_retention_s, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.retry_after_max",
							"Longest Retry-After an endpoint may ask for; longer ones are clamped.",
							NULL, &pgcb_retry_after_max_ms, 3600 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomRealVariable("callback.retry_jitter",
							 "Fraction by which each retry delay is randomly stretched or shrunk.",
							 NULL, &pgcb_retry_jitter, 0.2, 0.0, 1.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("callback.max_rate",
							 "Most requests per second over all endpoints (0: no global cap).",
							 NULL, &pgcb_max_rate, 0, 0, 1e9,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("callback.ssrf_allowlist",
							   "Comma-separated CIDR blocks that may be called although private or local.",
							   "Loopback, private, link-local and CGNAT addresses are refused unless listed here.",
							   &pgcb_ssrf_allowlist, "",
							   PGC_SIGHUP, 0, check_ssrf_allowlist, NULL, NULL);
	DefineCustomStringVariable("callback.ca_file",
							   "CA bundle used to verify TLS peers (empty: the system's).",
							   NULL, &pgcb_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("callback.http_engine",
							 "Who writes each HTTP request and reads its response: native (pg_callback, on connections libcurl makes) or libcurl (a libcurl transfer per request).",
							 "Both speak HTTP/1.1 with the same headers; native costs less CPU per request. Requests in flight keep the engine they started with.",
							 &pgcb_http_engine, PGCB_HTTP_ENGINE_NATIVE, http_engine_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.max_connections",
							"Most connections a worker keeps open, idle ones included.",
							NULL, &pgcb_max_connections, 256, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomRealVariable("callback.health_min_success_rate",
							 "callback_health warns below this success rate (percent).",
							 NULL, &pgcb_health_min_success_rate, 99.5, 0, 100,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("callback.health_max_avg_ms",
							 "callback_health warns at this average latency (ms) or above.",
							 NULL, &pgcb_health_max_avg_ms, 150, 0, 1e9,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("callback.health_max_backlog",
							"callback_health warns at this many undelivered deliveries or more.",
							NULL, &pgcb_health_max_backlog, 1000, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("callback.health_window",
							   "How far back callback_health looks (an interval).",
							   NULL, &pgcb_health_window, "15min",
							   PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("callback.inbox",
							 "Write new deliveries into callback_inbox, which has no index, for the worker to move into callback_queue.",
							 "Halves what the trigger adds to a write; deliveries show in callback_queue once the worker has moved them.",
							 &pgcb_inbox, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("callback.traceparent",
							   "W3C traceparent that events queued in this session carry (empty: none).",
							   "Set with SET LOCAL in the transaction that writes; every attempt sends its trace-id.",
							   &pgcb_traceparent, "",
							   PGC_USERSET, 0, check_traceparent, NULL, NULL);
	DefineCustomStringVariable("callback.tracestate",
							   "W3C tracestate sent beside callback.traceparent (empty: none).",
							   NULL, &pgcb_tracestate, "",
							   PGC_USERSET, 0, check_tracestate, NULL, NULL);

	pgcb_reserve_guc_prefix("callback");
}
