/*
 * guc.h
 *		The callback.* settings.
 */
#ifndef PGCB_GUC_H
#define PGCB_GUC_H

extern char *pgcb_database_name;
extern int	pgcb_max_workers;
extern int	pgcb_workers_per_database;
extern int	pgcb_max_inflight;
extern int	pgcb_max_inflight_per_endpoint;
extern int	pgcb_batch_size;
extern int	pgcb_poll_interval_ms;
extern int	pgcb_default_timeout_ms;
extern int	pgcb_connect_timeout_ms;
extern int	pgcb_lease_ms;
extern int	pgcb_max_payload_bytes;
extern int	pgcb_max_response_bytes;
extern int	pgcb_hook_timeout_ms;
extern int	pgcb_retention_s;
extern int	pgcb_retry_after_max_ms;
extern double pgcb_retry_jitter;
extern double pgcb_max_rate;
extern char *pgcb_ssrf_allowlist;
extern char *pgcb_ca_file;
extern int	pgcb_max_connections;
extern double pgcb_health_min_success_rate;
extern double pgcb_health_max_avg_ms;
extern int	pgcb_health_max_backlog;
extern char *pgcb_health_window;
extern char *pgcb_traceparent;
extern char *pgcb_tracestate;
extern bool pgcb_inbox;

/* callback.attempt_history: which attempts leave a callback_attempts row */
typedef enum PgcbAttemptHistory
{
	PGCB_ATTEMPT_HISTORY_ALL,
	PGCB_ATTEMPT_HISTORY_FAILURES
} PgcbAttemptHistory;
extern int	pgcb_attempt_history;

/* callback.http_engine: who writes HTTP/1.1 requests and reads responses */
typedef enum PgcbHttpEngine
{
	PGCB_HTTP_ENGINE_NATIVE,	/* http1.c, on connections libcurl makes */
	PGCB_HTTP_ENGINE_LIBCURL	/* a libcurl transfer per request (http.c) */
} PgcbHttpEngine;
extern int	pgcb_http_engine;

extern void pgcb_guc_init(void);
extern bool pgcb_guc_database_wanted(const char *datname);

#endif							/* PGCB_GUC_H */
