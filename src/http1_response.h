/*
 * http1_response.h
 *		An HTTP/1.1 response parsed as its bytes arrive: status, headers, and
 *		a body framed by Content-Length, by chunks or by the close (RFC 9112).
 */
#ifndef PGCB_HTTP1_RESPONSE_H
#define PGCB_HTTP1_RESPONSE_H

#include "lib/stringinfo.h"

#define PGCB_HTTP1_HEAD_MAX (100 * 1024)	/* a head, a chunk-size line, a trailer */
#define PGCB_HTTP1_ERROR_LEN 256

typedef enum PgcbHttp1Step
{
	PGCB_HTTP1_MORE,			/* needs more bytes (or the close) */
	PGCB_HTTP1_DONE,			/* a whole response */
	PGCB_HTTP1_FAILED			/* malformed: error says how */
} PgcbHttp1Step;

typedef struct PgcbHttp1Response
{
	/* set by pgcb_http1_response_init */
	bool		want_headers;	/* keep the final response's header lines */
	char	   *body;			/* the head of the body, body_cap bytes at most */
	int			body_cap;
	/* the parser's place */
	int			phase;
	int			scan;			/* in a head or the trailer: where the next line starts */
	int64		remaining;		/* body or chunk bytes still to come */
	/* what came */
	long		status;
	bool		close_after;	/* the connection must not carry another request */
	long		retry_after_ms; /* -1: no usable Retry-After */
	char	   *headers;		/* palloc'd, when want_headers */
	int			headers_len;
	int			body_len;
	char		error[PGCB_HTTP1_ERROR_LEN];
} PgcbHttp1Response;

extern void pgcb_http1_response_init(PgcbHttp1Response *r, char *body, int body_cap,
									 bool want_headers);

/*
 * Parse buf[*off, in_len), moving *off past what it used (a body's bytes are
 * used up; a head is used only once it is whole).
 */
extern PgcbHttp1Step pgcb_http1_response_parse(PgcbHttp1Response *r, const char *buf,
												int *off, int in_len);

/*
 * The connection closed: that completes a body that runs to the close.
 * Returns whether the response is whole now.
 */
extern bool pgcb_http1_response_at_close(PgcbHttp1Response *r);

/* Header lines (PgcbHttp1Response.headers) as a JSON object within cap bytes of names and values. */
extern char *pgcb_http1_headers_json(const char *lines, int len, int cap);

/* Append one header to such an object (first: none yet); names lower-cased. */
extern void pgcb_http_json_header(StringInfo buf, const char *name, int nlen,
								  const char *value, int vlen, bool *first);

#endif							/* PGCB_HTTP1_RESPONSE_H */
