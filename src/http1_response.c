/*
 * http1_response.c
 *		An HTTP/1.1 response parsed as its bytes arrive (RFC 9112): the
 *		status line, 1xx responses skipped, the headers pg_callback acts on
 *		(Content-Length, Transfer-Encoding, Connection, Retry-After), the
 *		header lines kept for an on_response hook, and a body framed by
 *		Content-Length, by chunks (trailers read and dropped) or by the
 *		connection's close, its head kept up to a cap and the rest dropped.
 *
 * The caller owns the bytes (http1.c's read buffer); the parser keeps only
 * its place, so a response split anywhere, a byte at a time, parses alike.
 * Anything it cannot frame with certainty fails the response: the
 * connection is then closed, never reused out of step.
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"

#include "http1_response.h"
#include "retry.h"

typedef enum Phase
{
	PH_HEAD,
	PH_BODY_LEN,
	PH_CHUNK_SIZE,
	PH_CHUNK_DATA,
	PH_CHUNK_END,
	PH_TRAILER,
	PH_BODY_EOF,
	PH_DONE
} Phase;

void
pgcb_http1_response_init(PgcbHttp1Response *r, char *body, int body_cap, bool want_headers)
{
	memset(r, 0, sizeof(*r));
	r->phase = PH_HEAD;
	r->body = body;
	r->body_cap = body_cap;
	r->want_headers = want_headers;
	r->retry_after_ms = -1;
}

bool
pgcb_http1_response_at_close(PgcbHttp1Response *r)
{
	if (r->phase != PH_BODY_EOF)
		return false;
	r->phase = PH_DONE;
	return true;
}

static void
keep_body(PgcbHttp1Response *r, const char *p, int64 n)
{
	int64		room = r->body_cap - r->body_len;

	if (room > 0)
	{
		int			k = (int) Min(n, room);

		memcpy(r->body + r->body_len, p, k);
		r->body_len += k;
	}
}

/* The next line from *pos within [.., end): its length without CR LF, or -1 if not all there. */
static int
next_line(const char *buf, int *pos, int end, const char **line)
{
	const char *nl = memchr(buf + *pos, '\n', end - *pos);
	int			len;

	if (nl == NULL)
		return -1;
	*line = buf + *pos;
	len = (int) (nl - *line);
	*pos = (int) (nl - buf) + 1;
	if (len > 0 && (*line)[len - 1] == '\r')
		len--;
	return len;
}

static bool
token_in_list(const char *v, int len, const char *token)
{
	size_t		tl = strlen(token);
	int			i = 0;

	while (i < len)
	{
		int			start,
					end;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		start = i;
		while (i < len && v[i] != ',')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if ((size_t) (end - start) == tl && pg_strncasecmp(v + start, token, tl) == 0)
			return true;
	}
	return false;
}

/* The last transfer coding of a Transfer-Encoding value is chunked. */
static bool
ends_chunked(const char *v, int len)
{
	int			end = len;
	int			start;

	while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	start = end;
	while (start > 0 && v[start - 1] != ',' && v[start - 1] != ' ' && v[start - 1] != '\t')
		start--;
	return end - start == 7 && pg_strncasecmp(v + start, "chunked", 7) == 0;
}

/* At most max bytes of a peer's text as printable ASCII (the rest as \xNN), for an error message. */
static void
printable(char *dst, int dstlen, const char *src, int len, int max)
{
	int			o = 0;

	for (int i = 0; i < len && i < max && o + 5 < dstlen; i++)
	{
		unsigned char c = (unsigned char) src[i];

		if (c >= 0x20 && c < 0x7F && c != '\\')
			dst[o++] = c;
		else
			o += snprintf(dst + o, dstlen - o, "\\x%02X", c);
	}
	dst[o] = '\0';
}

/*
 * A whole head at [start, end): status line and header lines.  Sets how the
 * body is framed (RFC 9112, 6.3).  Returns false on a malformed head, with
 * the error set.
 */
static bool
parse_head(PgcbHttp1Response *r, const char *buf, int start, int end)
{
	int			pos = start;
	const char *line;
	int			len = next_line(buf, &pos, end, &line);
	int			minor;
	int64		content_length = -1;
	bool		chunked = false;
	bool		has_te = false;
	bool		keep_alive = false;
	bool		close = false;
	bool		retry_after_seen = false;
	int			lines_start;

	/* a NUL cannot be stored or shown: libcurl refuses such a head too */
	if (memchr(buf + start, '\0', end - start) != NULL)
	{
		snprintf(r->error, sizeof(r->error), "the response's head holds a NUL byte");
		return false;
	}
	if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char) line[7]) ||
		line[8] != ' ' || !isdigit((unsigned char) line[9]) ||
		!isdigit((unsigned char) line[10]) || !isdigit((unsigned char) line[11]) ||
		(len > 12 && line[12] != ' '))
	{
		char		shown[4 * 60 + 8];

		/* the peer's bytes go into stored text: printable ASCII only */
		printable(shown, sizeof(shown), line, len < 0 ? 0 : len, 60);
		snprintf(r->error, sizeof(r->error), "malformed HTTP/1.x status line in the response: \"%s\"",
				 shown);
		return false;
	}
	minor = line[7] - '0';
	r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	lines_start = pos;
	while ((len = next_line(buf, &pos, end, &line)) > 0)
	{
		const char *colon = memchr(line, ':', len);
		int			nlen;
		const char *v;
		int			vlen;

		if (colon == NULL)
			continue;			/* an obsolete folded line, or junk: not ours to read */
		nlen = (int) (colon - line);
		v = colon + 1;
		vlen = len - nlen - 1;
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nlen == 14 && pg_strncasecmp(line, "Content-Length", 14) == 0)
		{
			int64		cl = 0;

			if (vlen == 0 || vlen > 18)
				goto bad_length;
			for (int i = 0; i < vlen; i++)
			{
				if (!isdigit((unsigned char) v[i]))
					goto bad_length;
				cl = cl * 10 + (v[i] - '0');
			}
			if (content_length >= 0 && content_length != cl)
				goto bad_length;
			content_length = cl;
		}
		else if (nlen == 17 && pg_strncasecmp(line, "Transfer-Encoding", 17) == 0)
		{
			has_te = true;
			chunked = ends_chunked(v, vlen);
		}
		else if (nlen == 10 && pg_strncasecmp(line, "Connection", 10) == 0)
		{
			close |= token_in_list(v, vlen, "close");
			keep_alive |= token_in_list(v, vlen, "keep-alive");
		}
		else if (nlen == 11 && pg_strncasecmp(line, "Retry-After", 11) == 0 && !retry_after_seen)
		{
			/* the first one counts, as libcurl's curl_easy_header(..., 0, ...) gives it */
			char	   *value = pnstrdup(v, vlen);

			r->retry_after_ms = pgcb_retry_parse_retry_after(value);
			retry_after_seen = true;
			pfree(value);
		}
	}
	if (r->status >= 100 && r->status < 200)
		return true;			/* the caller reads the next head */
	if (r->want_headers)
	{
		r->headers_len = end - lines_start;
		r->headers = palloc(r->headers_len + 1);
		memcpy(r->headers, buf + lines_start, r->headers_len);
		r->headers[r->headers_len] = '\0';
	}
	/* both framings given: the chunks decide, and the connection is not trusted again (RFC 9112, 6.3) */
	r->close_after = close || (minor == 0 && !keep_alive) || (has_te && content_length >= 0);
	if (r->status == 204 || r->status == 304)
		r->phase = PH_DONE;
	else if (has_te && chunked)
		r->phase = PH_CHUNK_SIZE;
	else if (has_te || content_length < 0)
	{
		/* no length: the body runs to the close */
		r->phase = PH_BODY_EOF;
		r->close_after = true;
	}
	else
	{
		r->remaining = content_length;
		r->phase = content_length == 0 ? PH_DONE : PH_BODY_LEN;
	}
	return true;

bad_length:
	snprintf(r->error, sizeof(r->error), "invalid Content-Length in the response");
	return false;
}

PgcbHttp1Step
pgcb_http1_response_parse(PgcbHttp1Response *r, const char *buf, int *off, int in_len)
{
	for (;;)
	{
		int			avail = in_len - *off;
		const char *line;
		int			len;

		switch (r->phase)
		{
			case PH_HEAD:
				{
					int			pos = *off + r->scan;

					/* find the empty line that ends the head */
					while ((len = next_line(buf, &pos, in_len, &line)) > 0)
						r->scan = pos - *off;
					/* the same limit however the head arrived: whole or in part */
					if ((len < 0 ? in_len : pos) - *off > PGCB_HTTP1_HEAD_MAX)
					{
						snprintf(r->error, sizeof(r->error),
								 "the response's head exceeds %d bytes", PGCB_HTTP1_HEAD_MAX);
						return PGCB_HTTP1_FAILED;
					}
					if (len < 0)
						return PGCB_HTTP1_MORE;
					if (r->scan == 0)
					{
						/* an empty line before the status line (RFC 9112, 2.2) */
						*off = pos;
						continue;
					}
					if (!parse_head(r, buf, *off, pos))
						return PGCB_HTTP1_FAILED;
					*off = pos;
					r->scan = 0;
					if (r->phase == PH_HEAD)
					{
						/* a 1xx: the real response follows */
						if (r->status == 101)
						{
							snprintf(r->error, sizeof(r->error),
									 "the server switched protocols (101)");
							return PGCB_HTTP1_FAILED;
						}
						r->status = 0;
						r->retry_after_ms = -1;
					}
					break;
				}
			case PH_BODY_LEN:
			case PH_CHUNK_DATA:
				{
					int64		n = Min((int64) avail, r->remaining);

					if (n == 0)
						return PGCB_HTTP1_MORE;
					keep_body(r, buf + *off, n);
					*off += (int) n;
					r->remaining -= n;
					if (r->remaining == 0)
						r->phase = r->phase == PH_BODY_LEN ? PH_DONE : PH_CHUNK_END;
					break;
				}
			case PH_CHUNK_SIZE:
				{
					int			pos = *off;
					int64		size = 0;
					int			i;

					/* a size line (extensions and all) within the head's limit, whole or in part */
					len = next_line(buf, &pos, in_len, &line);
					if ((len < 0 ? avail : pos - *off) > PGCB_HTTP1_HEAD_MAX)
						goto bad_chunk;
					if (len < 0)
						return PGCB_HTTP1_MORE;
					for (i = 0; i < len && isxdigit((unsigned char) line[i]); i++)
					{
						if (size > (INT64CONST(1) << 56))
							goto bad_chunk;
						size = size * 16 + (isdigit((unsigned char) line[i]) ? line[i] - '0' :
											(pg_ascii_tolower((unsigned char) line[i]) - 'a' + 10));
					}
					if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
						goto bad_chunk;
					*off = pos;
					r->remaining = size;
					r->phase = size == 0 ? PH_TRAILER : PH_CHUNK_DATA;
					break;
				}
			case PH_CHUNK_END:
				if (avail < 1 || (buf[*off] == '\r' && avail < 2))
					return PGCB_HTTP1_MORE;
				if (buf[*off] == '\n')
					*off += 1;
				else if (buf[*off] == '\r' && buf[*off + 1] == '\n')
					*off += 2;
				else
					goto bad_chunk;
				r->phase = PH_CHUNK_SIZE;
				break;
			case PH_TRAILER:
				{
					int			pos = *off;

					/* the trailer section within the head's limit: r->scan counts it */
					len = next_line(buf, &pos, in_len, &line);
					if (r->scan + (len < 0 ? avail : pos - *off) > PGCB_HTTP1_HEAD_MAX)
						goto bad_chunk;
					if (len < 0)
						return PGCB_HTTP1_MORE;
					r->scan += pos - *off;
					*off = pos;
					if (len == 0)
						r->phase = PH_DONE;
					break;
				}
			case PH_BODY_EOF:
				keep_body(r, buf + *off, avail);
				*off = in_len;
				return PGCB_HTTP1_MORE;
			case PH_DONE:
				return PGCB_HTTP1_DONE;
		}
	}

bad_chunk:
	snprintf(r->error, sizeof(r->error), "malformed chunked body in the response");
	return PGCB_HTTP1_FAILED;
}

/*
 * Header lines as an on_response hook is given them: a JSON object, names
 * lower-cased (of a repeated name the last wins), at most cap bytes of
 * names and values.
 */
char *
pgcb_http1_headers_json(const char *lines, int len, int cap)
{
	StringInfoData buf;
	int			pos = 0;
	int			used = 0;
	bool		first = true;
	const char *line;
	int			n;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	while (lines != NULL && (n = next_line(lines, &pos, len, &line)) > 0)
	{
		const char *colon = memchr(line, ':', n);
		int			nlen;
		const char *v;
		int			vlen;

		if (colon == NULL)
			continue;
		nlen = (int) (colon - line);
		v = colon + 1;
		vlen = n - nlen - 1;
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (used + nlen + vlen > cap)
			break;
		used += nlen + vlen;
		pgcb_http_json_header(&buf, line, nlen, v, vlen, &first);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * One header as a member of the JSON object an on_response hook is given:
 * the name lower-cased, both cut to their valid-encoding prefix.  For
 * http.c's libcurl transfers too.
 */
void
pgcb_http_json_header(StringInfo buf, const char *n, int nlen, const char *v, int vlen, bool *first)
{
	char	   *name = pnstrdup(n, pg_encoding_verifymbstr(GetDatabaseEncoding(), n, nlen));
	char	   *value = pnstrdup(v, pg_encoding_verifymbstr(GetDatabaseEncoding(), v, vlen));

	for (char *p = name; *p; p++)
		*p = pg_ascii_tolower((unsigned char) *p);
	if (!*first)
		appendStringInfoString(buf, ", ");
	*first = false;
	escape_json(buf, name);
	appendStringInfoString(buf, ": ");
	escape_json(buf, value);
	pfree(name);
	pfree(value);
}
