/*
 * http.h
 *		A libcurl multi handle driven from a PostgreSQL wait loop: sockets in
 *		an epoll set that sits in one WaitEventSet with the process latch and
 *		postmaster death, so SIGTERM and reloads are seen while HTTP is slow.
 */
#ifndef PGCB_HTTP_H
#define PGCB_HTTP_H

#include <sys/epoll.h>

#include <curl/curl.h>

/* A curl socket callback's work: watch s in epfd as curl asks; never allocates or raises. */
extern void pgcb_http_watch_curl_socket(CURLM *m, int epfd, curl_socket_t s, int what,
										void *socketp, epoll_data_t data);

/* What epoll reported (EPOLLIN, ...), as curl_multi_socket_action's flags. */
extern int	pgcb_http_curl_flags(uint32 events);

/* Set up the multi handle and the wait set (idempotent). */
extern void pgcb_http_init(void);

/*
 * Free the multi handle, the pool and the sockets (process exit and the
 * error path of process_callbacks).  Transfers still in flight must have
 * been given to pgcb_http_abandon() first.
 */
extern void pgcb_http_shutdown(void);

/* Remove a transfer in flight from the multi handle and free its handle. */
extern void pgcb_http_abandon(CURL *easy);

/* Wake pgcb_http_wait when fd is readable too (another transport's descriptor). */
extern void pgcb_http_wait_also(int fd);

/* Apply the reload settings kept in the multi handle (callback.max_connections). */
extern void pgcb_http_apply_settings(void);

/*
 * An easy handle from the pool, with the options its last user set (the
 * caller sets them all again); *fresh: a new handle, with curl's defaults.
 * *gen: the settings it was lent under, for pgcb_http_easy_put.
 */
extern CURL *pgcb_http_easy_get(bool *fresh, uint64 *gen);

/* Start a transfer set up on an easy handle from pgcb_http_easy_get(). */
extern void pgcb_http_start(CURL *easy);

/*
 * Wait up to timeout_ms (-1: no limit of ours) for the latch, a socket or
 * curl's own timer, and let curl do its work.  Returns true when the latch
 * was set.  Exits the process if the postmaster died.
 */
extern bool pgcb_http_wait(long timeout_ms);

/*
 * Next finished transfer, or NULL.  The handle is removed from the multi
 * handle; give it back with pgcb_http_easy_put() once read.
 */
extern CURL *pgcb_http_next_done(CURLcode *result);

/* Back to the pool, unless a reload came since it was lent (gen): freed. */
extern void pgcb_http_easy_put(CURL *easy, uint64 gen);

/* Transfers started and not yet returned by pgcb_http_next_done. */
extern int	pgcb_http_running(void);

/* The last response's headers as a JSON object, names and values within cap bytes. */
extern char *pgcb_http_headers_json(CURL *easy, int cap);

#endif							/* PGCB_HTTP_H */
