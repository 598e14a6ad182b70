/*
 * http1.h
 *		HTTP/1.1 requests written and responses read by pg_callback itself,
 *		on connections libcurl makes (DNS, connect, the address policy), for
 *		http:// endpoints when callback.http_engine = 'native'.
 */
#ifndef PGCB_HTTP1_H
#define PGCB_HTTP1_H

#include <curl/curl.h>

#include "utils/timestamp.h"

/* What became of one request; valid until the next pgcb_http1_next_done(). */
typedef struct PgcbHttp1Result
{
	void	   *owner;
	long		status;			/* 0: no (whole) response */
	const char *error;			/* NULL: a whole response came */
	long		retry_after_ms; /* -1: no usable Retry-After */
	double		latency_ms;
	const char *body;			/* the head of the body, up to the cap */
	int			body_len;
	const char *headers;		/* the final response's header lines, when asked */
	int			headers_len;
} PgcbHttp1Result;

/* Set up the descriptor the wait loop watches (after pgcb_http_init; idempotent). */
extern void pgcb_http1_init(void);

/* Whether url is one this file sends (http://; https:// stays with libcurl's transfers). */
extern bool pgcb_http1_takes(const char *url);

/*
 * POST body to url for owner.  headers: the request's header lines as a
 * curl_slist, read with curl's meaning (a "Name:" with no value only
 * suppresses a default) and copied before this returns.  The response's
 * body is kept up to response_cap bytes; its header lines only when
 * want_headers.  Never waits: the outcome comes out of pgcb_http1_next_done
 * (at once, for a request that could not be started).
 */
extern void pgcb_http1_start(const char *url, const struct curl_slist *headers,
							 const char *user_agent, const char *body, int body_len,
							 int timeout_ms, int connect_timeout_ms, int response_cap,
							 bool want_headers, void *owner);

/* Read and write what the sockets allow, expire late requests; never waits. */
extern void pgcb_http1_poll(void);

/* The next finished request, or false. */
extern bool pgcb_http1_next_done(PgcbHttp1Result *result);

/* Milliseconds until pgcb_http1_poll has work (0: now); -1: nothing to wait for. */
extern long pgcb_http1_ms_until_due(void);

/* Requests started and not yet returned by pgcb_http1_next_done. */
extern int	pgcb_http1_running(void);

/* A reload: idle connections are closed (the allowlist may have changed). */
extern void pgcb_http1_apply_settings(void);

/* Close every connection and forget every request (process exit, process_callbacks' error path). */
extern void pgcb_http1_shutdown(void);

#endif							/* PGCB_HTTP1_H */
