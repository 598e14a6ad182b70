/*
 * http1.c
 *		HTTP/1.1 requests written and responses read by pg_callback itself,
 *		on connections libcurl makes, for http:// endpoints.
 *
 * Why: libcurl's transfer machinery (set-up, URL parsing, header printing,
 * its internal polls and socket-callback churn) costs about 40 us of CPU
 * per request here, the same request written in one buffer and answered in
 * one read about 12 (bench/results/drain-raw-floor.md).  So libcurl keeps
 * what it is for, the connect (DNS, the connect timeout, the address
 * policy's check of each address), and this file writes each request with
 * one send() and reads the response with recv(), parsed by
 * http1_response.c.  It keeps the connections: one per request in flight
 * (HTTP/1.1), kept alive and reused per origin, within
 * callback.max_connections.
 *
 * How a connection changes hands: a CURLOPT_CONNECT_ONLY transfer in one
 * multi handle of ours, with CURLOPT_FORBID_REUSE, so that libcurl closes
 * the connection as soon as it is made.  Its close goes through
 * conn_closesocket(), which keeps the socket that passed the pre-request
 * check (conn_prereq) open for us instead.  So libcurl holds no state of a
 * connection in use (no cache that could prune it, no descriptor of its
 * own per connection), and the socket is ours to read, write and close.
 * https:// stays with libcurl's transfers (http.c): TLS state lives in
 * libcurl and cannot be handed over so.
 *
 * The sockets (libcurl's while it connects, ours afterwards) sit in an epoll
 * set of our own, watched by http.c's wait (pgcb_http_wait_also).  Only the
 * curl callbacks below run inside libcurl; they neither allocate nor raise.
 * Everything else runs from pgcb_http1_start/poll, where palloc and ereport
 * are as anywhere.
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/hashfn.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "guc.h"
#include "http.h"
#include "http1.h"
#include "http1_response.h"
#include "netpolicy.h"

#define MAX_EPOLL_EVENTS 256
#define IN_CHUNK 16384			/* read buffer; grows only for a long head */
#define IN_MAX (PGCB_HTTP1_HEAD_MAX + IN_CHUNK)
#define ERROR_LEN (CURL_ERROR_SIZE + 128)
#define MAX_TARGETS 1024
#define RECV_LOOPS 64			/* reads per readiness: a fast peer cannot hold the worker */

/*
 * An epoll event names a connection of ours (data.ptr) or a socket libcurl
 * watches while it connects (data.u64: this bit and the descriptor; user
 * space pointers never have it).
 */
#define CURL_SOCKET_TAG (UINT64CONST(1) << 63)

/* Where requests go: connections are shared per origin, as libcurl's are. */
typedef struct Origin
{
	dlist_node	node;			/* in origins */
	char	   *key;			/* "http://host:port" */
	char	   *connect_url;
	dlist_head	idle;			/* its idle connections, the latest first */
	int			users;			/* requests and connections that point to it */
} Origin;

/* A URL parsed once: its request line and Host header, its origin. */
typedef struct Target
{
	uint64		hash;			/* hash key: of url */
	char	   *url;
	char	   *prefix;			/* "POST /path?q HTTP/1.1\r\nHost: h\r\n" */
	int			prefix_len;
	Origin	   *origin;
} Target;

typedef enum ConnState
{
	CONN_CONNECTING,
	CONN_BUSY,
	CONN_IDLE,
	CONN_DEAD
} ConnState;

typedef struct Conn Conn;

typedef struct Exchange
{
	dlist_node	node;			/* in pending or done */
	void	   *owner;
	Origin	   *origin;
	Conn	   *conn;			/* NULL: pending, or finished */
	char	   *out;			/* the whole request */
	int			out_len;
	int			out_sent;
	TimestampTz started_at;
	TimestampTz finished_at;
	TimestampTz deadline;
	int			timeout_ms;
	int			connect_timeout_ms;
	bool		retried;		/* sent again once on a fresh connection */
	PgcbHttp1Response resp;
	int64		got;			/* response bytes received */
	bool		complete;		/* a whole response came; finished without one: failed */
	char		error[ERROR_LEN];
} Exchange;

struct Conn
{
	dlist_node	node;			/* in active, origin->idle or dead */
	dlist_node	lru;			/* in idle_lru while idle */
	ConnState	state;
	Origin	   *origin;
	CURL	   *easy;			/* while connecting */
	bool		passed;			/* connecting: the pre-request check passed */
	int			fd;				/* ours, once connected; -1: none */
	uint32		watched;		/* epoll events registered for fd; 0: none */
	uint64		gen;			/* settings it was made under */
	int			served;			/* requests answered on it */
	Exchange   *ex;				/* connecting or busy: the request it carries */
	char	   *in;
	int			in_len;
	int			in_off;			/* parsed up to here */
	int			in_cap;
	char		why[PGCB_NETPOLICY_WHY_LEN];
	char		errbuf[CURL_ERROR_SIZE];
};

static MemoryContext http1_cxt = NULL;
static int	epoll_fd = -1;
static CURLM *connector = NULL; /* makes the connections */
static TimestampTz connector_deadline = 0;	/* its timer; 0: none */
static HTAB *targets = NULL;
static dlist_head origins = DLIST_STATIC_INIT(origins);
static dlist_head active = DLIST_STATIC_INIT(active);	/* connecting and busy */
static dlist_head idle_lru = DLIST_STATIC_INIT(idle_lru);	/* idle, the oldest first */
static dlist_head dead = DLIST_STATIC_INIT(dead);	/* closed, freed after the poll */
static dlist_head queued = DLIST_STATIC_INIT(queued);	/* started inside a transaction */
static dlist_head pending = DLIST_STATIC_INIT(pending);	/* waiting for a connection */
static dlist_head done = DLIST_STATIC_INIT(done);
static Exchange *returned = NULL;	/* the last one given out, freed at the next */
static int	n_conns = 0;
static int	running = 0;
static uint64 settings_gen = 0;
static TimestampTz next_deadline = 0;	/* no request ends before this; 0: none */

static void conn_close(Conn *conn);
static void exchange_send(Exchange *ex);
static void assign_connections(void);

/* ---------------------------------------------------------------- curl's callbacks */

/* The connector's sockets, watched for it in our epoll set.  No allocation, no error raised. */
static int
connector_socket_callback(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	epoll_data_t data = {.u64 = CURL_SOCKET_TAG | (uint32) s};

	pgcb_http_watch_curl_socket(connector, epoll_fd, s, what, socketp, data);
	return 0;
}

static int
connector_timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	connector_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* The address policy's check of the connected peer; a pass marks the socket to keep. */
static int
conn_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
			int conn_primary_port, int conn_local_port)
{
	Conn	   *conn = (Conn *) clientp;
	int			rc = pgcb_netpolicy_prereq(conn->why, conn_primary_ip, conn_local_ip,
										   conn_primary_port, conn_local_port);

	conn->passed = rc == CURL_PREREQFUNC_OK;
	return rc;
}

/*
 * libcurl closes each socket it made for conn: the losers of a connect race
 * before the pre-request check, the connection itself (FORBID_REUSE) after
 * it.  That one, the first closed after a pass, stays open as conn's.
 */
static int
conn_closesocket(void *clientp, curl_socket_t item)
{
	Conn	   *conn = (Conn *) clientp;

	if (conn->passed && conn->fd < 0)
	{
		conn->fd = item;
		return 0;
	}
	return close(item);
}

/* ---------------------------------------------------------------- set-up */

void
pgcb_http1_init(void)
{
	HASHCTL		info;

	if (epoll_fd >= 0)
		return;
	if (http1_cxt == NULL)
		http1_cxt = AllocSetContextCreate(TopMemoryContext, "pg_callback http1",
										  ALLOCSET_DEFAULT_SIZES);
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		elog(ERROR, "epoll_create1 failed: %m");
	pgcb_http_wait_also(epoll_fd);
	connector = curl_multi_init();
	if (connector == NULL)
		elog(ERROR, "curl_multi_init failed");
	curl_multi_setopt(connector, CURLMOPT_SOCKETFUNCTION, connector_socket_callback);
	curl_multi_setopt(connector, CURLMOPT_TIMERFUNCTION, connector_timer_callback);
	connector_deadline = 0;
	info.keysize = sizeof(uint64);
	info.entrysize = sizeof(Target);
	info.hcxt = http1_cxt;
	targets = hash_create("pg_callback http1 targets", 64, &info,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

bool
pgcb_http1_takes(const char *url)
{
	return pg_strncasecmp(url, "http://", 7) == 0;
}

/* A part of a parsed URL, palloc'd; NULL if curl has none. */
static char *
url_part(CURLU *u, CURLUPart what, unsigned int flags)
{
	char	   *v = NULL;
	char	   *copy;

	if (curl_url_get(u, what, &v, flags) != CURLUE_OK || v == NULL)
		return NULL;
	copy = pstrdup(v);
	curl_free(v);
	return copy;
}

static Origin *
origin_of(const char *host, const char *port)
{
	char	   *key = psprintf("http://%s:%s", host, port);
	dlist_iter	it;
	Origin	   *o;

	dlist_foreach(it, &origins)
	{
		o = dlist_container(Origin, node, it.cur);
		if (strcmp(o->key, key) == 0)
		{
			pfree(key);
			return o;
		}
	}
	o = palloc0(sizeof(Origin));
	o->key = key;
	o->connect_url = psprintf("%s/", key);
	dlist_init(&o->idle);
	dlist_push_tail(&origins, &o->node);
	return o;
}

/*
 * url's request line, Host header and origin, parsed by curl's URL parser
 * (as a transfer would: dot segments removed, the default port left out of
 * Host) once per URL.  NULL, with *error set, for a URL curl cannot parse.
 */
static Target *
target_of(const char *url, const char **error)
{
	uint64		h = hash_bytes_extended((const unsigned char *) url, strlen(url), 0);
	Target	   *t;
	bool		found;
	CURLU	   *u;
	char	   *parts[6];		/* scheme, host, port, the port given, path, query */
	MemoryContext old;

	t = hash_search(targets, &h, HASH_FIND, NULL);
	if (t != NULL && strcmp(t->url, url) == 0)
		return t;
	/*
	 * URLs come from endpoints; a table that keeps growing is started anew,
	 * with the origins nothing uses any more.
	 */
	if (t == NULL && hash_get_num_entries(targets) >= MAX_TARGETS)
	{
		HASH_SEQ_STATUS seq;
		Target	   *e;
		dlist_mutable_iter it;

		hash_seq_init(&seq, targets);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			pfree(e->url);
			pfree(e->prefix);
			hash_search(targets, &e->hash, HASH_REMOVE, NULL);
		}
		dlist_foreach_modify(it, &origins)
		{
			Origin	   *o = dlist_container(Origin, node, it.cur);

			if (o->users == 0)
			{
				dlist_delete(&o->node);
				pfree(o->key);
				pfree(o->connect_url);
				pfree(o);
			}
		}
	}

	u = curl_url();
	if (u == NULL)
	{
		*error = "out of memory parsing the URL";
		return NULL;
	}
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		*error = "the URL could not be parsed";
		return NULL;
	}
	old = MemoryContextSwitchTo(http1_cxt);
	parts[0] = url_part(u, CURLUPART_SCHEME, 0);
	/* an international name as libcurl's transfer sends it: punycode */
#ifdef CURLU_PUNYCODE
	parts[1] = url_part(u, CURLUPART_HOST, CURLU_PUNYCODE);
#else
	parts[1] = url_part(u, CURLUPART_HOST, 0);
#endif
	parts[2] = url_part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT);
	parts[3] = url_part(u, CURLUPART_PORT, 0);
	parts[4] = url_part(u, CURLUPART_PATH, 0);
	parts[5] = url_part(u, CURLUPART_QUERY, 0);
	curl_url_cleanup(u);
	if (parts[0] == NULL || parts[1] == NULL || parts[2] == NULL || strcmp(parts[0], "http") != 0)
	{
		*error = "the URL has no http scheme and host";
		t = NULL;
	}
	else
	{
		bool		default_port = parts[3] == NULL || strcmp(parts[2], "80") == 0;

		t = hash_search(targets, &h, HASH_ENTER, &found);
		if (found)
		{
			/* another URL with the same hash: this one takes the entry */
			pfree(t->url);
			pfree(t->prefix);
		}
		t->url = pstrdup(url);
		t->prefix = psprintf("POST %s%s%s HTTP/1.1\r\nHost: %s%s%s\r\n",
							 parts[4] ? parts[4] : "/", parts[5] ? "?" : "",
							 parts[5] ? parts[5] : "", parts[1],
							 default_port ? "" : ":", default_port ? "" : parts[2]);
		t->prefix_len = strlen(t->prefix);
		t->origin = origin_of(parts[1], parts[2]);
	}
	for (int i = 0; i < lengthof(parts); i++)
		if (parts[i] != NULL)
			pfree(parts[i]);
	MemoryContextSwitchTo(old);
	return t;
}

/* ---------------------------------------------------------------- requests */

/* Whether line (a curl_slist entry) names the header name. */
static bool
line_names(const char *line, const char *name)
{
	size_t		n = strlen(name);

	return pg_strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

/*
 * The header lines as libcurl would send them: "Name: value" as is,
 * "Name:" with nothing after it suppresses that header (and is not sent),
 * "Name;" sends the header empty.
 */
static void
append_header_lines(StringInfo out, const struct curl_slist *headers)
{
	for (const struct curl_slist *h = headers; h != NULL; h = h->next)
	{
		const char *colon = strchr(h->data, ':');
		const char *v;

		/* the framing is ours (the API refuses these names; rows written by hand are not checked) */
		if (line_names(h->data, "Host") || line_names(h->data, "Content-Length") ||
			line_names(h->data, "Transfer-Encoding") || line_names(h->data, "Connection"))
			continue;
		if (colon == NULL)
		{
			size_t		n = strlen(h->data);

			if (n > 0 && h->data[n - 1] == ';')
			{
				appendBinaryStringInfo(out, h->data, n - 1);
				appendStringInfoString(out, ":\r\n");
			}
			continue;
		}
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		if (*v == '\0')
			continue;
		appendStringInfoString(out, h->data);
		appendStringInfoString(out, "\r\n");
	}
}

static bool
headers_name(const struct curl_slist *headers, const char *name)
{
	for (const struct curl_slist *h = headers; h != NULL; h = h->next)
		if (line_names(h->data, name))
			return true;
	return false;
}

static void
note_deadline(TimestampTz when)
{
	if (next_deadline == 0 || when < next_deadline)
		next_deadline = when;
}

/* The request ends with what it has: to the done list, its connection kept or closed. */
static void
exchange_finish(Exchange *ex)
{
	Conn	   *conn = ex->conn;

	ex->finished_at = GetCurrentTimestamp();
	ex->conn = NULL;
	dlist_push_tail(&done, &ex->node);
	if (conn == NULL)
		return;
	conn->ex = NULL;
	if (!ex->complete || ex->resp.close_after || ex->out_sent < ex->out_len ||
		conn->in_off < conn->in_len || conn->gen != settings_gen ||
		n_conns > pgcb_max_connections)
	{
		conn_close(conn);
		return;
	}
	/* kept alive: watched for a close by the server while idle */
	conn->served++;
	conn->state = CONN_IDLE;
	conn->in_len = conn->in_off = 0;
	dlist_delete(&conn->node);
	dlist_push_head(&conn->origin->idle, &conn->node);
	dlist_push_tail(&idle_lru, &conn->lru);
}

static void
exchange_fail(Exchange *ex, const char *fmt,...) pg_attribute_printf(2, 3);

static void
exchange_fail(Exchange *ex, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(ex->error, sizeof(ex->error), fmt, ap);
	va_end(ap);
	exchange_finish(ex);
}

void
pgcb_http1_start(const char *url, const struct curl_slist *headers, const char *user_agent,
				 const char *body, int body_len, int timeout_ms, int connect_timeout_ms,
				 int response_cap, bool want_headers, void *owner)
{
	MemoryContext old = MemoryContextSwitchTo(http1_cxt);
	Exchange   *ex = palloc0(sizeof(Exchange));
	const char *error = NULL;
	Target	   *t = target_of(url, &error);
	StringInfoData out;

	ex->owner = owner;
	ex->timeout_ms = timeout_ms;
	ex->connect_timeout_ms = Min(connect_timeout_ms, timeout_ms);
	pgcb_http1_response_init(&ex->resp, palloc(response_cap + 1), response_cap, want_headers);
	running++;
	if (t == NULL)
	{
		ex->started_at = GetCurrentTimestamp();
		exchange_fail(ex, "%s", error);
		MemoryContextSwitchTo(old);
		return;
	}
	ex->origin = t->origin;
	ex->origin->users++;

	/* the order libcurl uses: Host, User-Agent, Accept, ours, Content-Length */
	initStringInfo(&out);
	enlargeStringInfo(&out, t->prefix_len + body_len + 512);
	appendBinaryStringInfo(&out, t->prefix, t->prefix_len);
	if (!headers_name(headers, "User-Agent"))
		appendStringInfo(&out, "User-Agent: %s\r\n", user_agent);
	if (!headers_name(headers, "Accept"))
		appendStringInfoString(&out, "Accept: */*\r\n");
	append_header_lines(&out, headers);
	appendStringInfo(&out, "Content-Length: %d\r\n\r\n", body_len);
	appendBinaryStringInfo(&out, body, body_len);
	ex->out = out.data;
	ex->out_len = out.len;

	/*
	 * Queued only: the caller's transaction (the claim) commits before
	 * pgcb_http1_poll connects and sends, as libcurl's transfers wait for
	 * pgcb_http_wait; the clock starts there too.
	 */
	dlist_push_tail(&queued, &ex->node);
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------- connections */

/* What epoll reports for conn's socket: always its input, its output while a request waits to go. */
static void
watch(Conn *conn, uint32 events)
{
	struct epoll_event ev;

	if (conn->watched == events)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = conn;
	if (epoll_ctl(epoll_fd, conn->watched == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, conn->fd, &ev) != 0)
		elog(ERROR, "epoll_ctl failed: %m");
	conn->watched = events;
}

/* Close conn now; its memory is freed after the poll (events may still name it). */
static void
conn_close(Conn *conn)
{
	if (conn->state == CONN_DEAD)
		return;
	if (conn->ex != NULL)
	{
		Exchange   *ex = conn->ex;

		/* never a finished one: exchange_finish takes it off first */
		conn->ex = NULL;
		ex->conn = NULL;
		exchange_fail(ex, "the connection was closed");
	}
	if (conn->state == CONN_IDLE)
		dlist_delete(&conn->lru);
	dlist_delete(&conn->node);
	if (conn->easy != NULL)
	{
		/* connecting: libcurl closes what it made (conn_closesocket) */
		(void) curl_multi_remove_handle(connector, conn->easy);
		curl_easy_cleanup(conn->easy);
		conn->easy = NULL;
	}
	if (conn->fd >= 0)
	{
		if (conn->watched != 0)
			(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
		close(conn->fd);
	}
	conn->fd = -1;
	conn->watched = 0;
	conn->state = CONN_DEAD;
	dlist_push_tail(&dead, &conn->node);
	n_conns--;
}

/* Free the connections closed during a poll, once no event of it can name them. */
static void
bury_dead(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &dead)
	{
		Conn	   *conn = dlist_container(Conn, node, it.cur);

		dlist_delete(&conn->node);
		conn->origin->users--;
		if (conn->in != NULL)
			pfree(conn->in);
		pfree(conn);
	}
}

/* A connection is up (or idle and taken): the request goes out on it. */
static void
conn_ready(Conn *conn)
{
	conn->state = CONN_BUSY;
	if (conn->in == NULL)
	{
		conn->in_cap = IN_CHUNK;
		conn->in = MemoryContextAlloc(http1_cxt, conn->in_cap);
	}
	conn->in_len = conn->in_off = 0;
	exchange_send(conn->ex);
}

/* The connector's transfer for conn ended: the socket is ours, or the request fails. */
static void
conn_connected(Conn *conn, CURLcode rc)
{
	Exchange   *ex = conn->ex;

	(void) curl_multi_remove_handle(connector, conn->easy);
	curl_easy_cleanup(conn->easy);
	conn->easy = NULL;
	if (rc == CURLE_OK && conn->fd >= 0)
	{
		watch(conn, EPOLLIN);
		conn_ready(conn);
		return;
	}
	snprintf(ex->error, sizeof(ex->error), "%s",
			 conn->why[0] ? conn->why :
			 conn->errbuf[0] ? conn->errbuf :
			 rc != CURLE_OK ? curl_easy_strerror(rc) : "no socket after connecting");
	exchange_finish(ex);
}

/* Let the connector act on socket s (CURL_SOCKET_TIMEOUT: its timer), then take what it made. */
static void
connector_drive(curl_socket_t s, int flags)
{
	int			still;
	int			left;
	CURLMsg    *msg;

	(void) curl_multi_socket_action(connector, s, flags, &still);
	while ((msg = curl_multi_info_read(connector, &left)) != NULL)
	{
		Conn	   *conn = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &conn);
		if (conn != NULL && conn->state == CONN_CONNECTING)
			conn_connected(conn, msg->data.result);
	}
}

static void
conn_open(Origin *o, Exchange *ex)
{
	Conn	   *conn = MemoryContextAllocZero(http1_cxt, sizeof(Conn));
	long		left_ms = (long) ((ex->deadline - GetCurrentTimestamp()) / 1000);
	CURL	   *easy;

	conn->origin = o;
	o->users++;
	conn->gen = settings_gen;
	conn->fd = -1;
	conn->state = CONN_CONNECTING;
	conn->ex = ex;
	ex->conn = conn;
	dlist_push_tail(&active, &conn->node);
	n_conns++;
	easy = conn->easy = curl_easy_init();
	if (easy == NULL)
	{
		exchange_fail(ex, "out of memory making a connection");
		return;
	}
	left_ms = Max(left_ms, 1);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, conn);
	curl_easy_setopt(easy, CURLOPT_URL, o->connect_url);
	curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L);
	/* made for us alone: libcurl closes it at once, through conn_closesocket */
	curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http");
	/* a proxy from the environment would hide the real peer from the SSRF check */
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, pgcb_netpolicy_opensocket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, (void *) conn->why);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, conn_prereq);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, conn);
	curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, conn_closesocket);
	curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, conn);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, conn->errbuf);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, Min((long) ex->connect_timeout_ms, left_ms));
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, left_ms);
	if (curl_multi_add_handle(connector, easy) != CURLM_OK)
	{
		curl_easy_cleanup(easy);
		conn->easy = NULL;
		exchange_fail(ex, "could not start a connection");
		return;
	}
	connector_drive(CURL_SOCKET_TIMEOUT, 0);
}

/*
 * Give the pending requests connections: an idle one to their origin, or a
 * new one within callback.max_connections (closing the longest idle one of
 * another origin to make room); otherwise they wait, their timeout running.
 */
static void
assign_connections(void)
{
	while (!dlist_is_empty(&pending))
	{
		Exchange   *ex = dlist_head_element(Exchange, node, &pending);
		Origin	   *o = ex->origin;

		/* a request resent after a reused connection failed it goes on a new one */
		if (!ex->retried && !dlist_is_empty(&o->idle))
		{
			Conn	   *conn = dlist_container(Conn, node, dlist_head_node(&o->idle));
			char		b;

			/*
			 * Not one the server closed or spoke on (a 408 before its
			 * close) since the poll looked, or whose event did not fit in
			 * its batch: that would be taken for this request's answer.
			 */
			if (recv(conn->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 ||
				(errno != EAGAIN && errno != EWOULDBLOCK))
			{
				conn_close(conn);
				continue;
			}
			dlist_delete(&conn->node);
			dlist_delete(&conn->lru);
			dlist_delete(&ex->node);
			dlist_push_tail(&active, &conn->node);
			conn->ex = ex;
			ex->conn = conn;
			conn_ready(conn);
			continue;
		}
		if (n_conns >= pgcb_max_connections && !dlist_is_empty(&idle_lru))
			conn_close(dlist_container(Conn, lru, dlist_head_node(&idle_lru)));
		if (n_conns >= pgcb_max_connections)
			return;
		dlist_delete(&ex->node);
		conn_open(o, ex);
	}
}

/* ---------------------------------------------------------------- the exchange */

/* The request failed before a byte of the answer came on a reused connection: once more on a new one. */
static bool
retry_fresh(Conn *conn, Exchange *ex)
{
	if (ex->got > 0 || ex->retried || conn->served == 0)
		return false;
	ex->retried = true;
	conn->ex = NULL;
	ex->conn = NULL;
	ex->out_sent = 0;
	conn_close(conn);
	/* the poll this runs in ends by giving it a connection */
	dlist_push_head(&pending, &ex->node);
	return true;
}

/* Room to read into: the parsed part dropped, grown only while a head is incomplete. */
static int
read_room(Conn *conn)
{
	if (conn->in_off > 0 && (conn->in_off == conn->in_len || conn->in_len == conn->in_cap))
	{
		memmove(conn->in, conn->in + conn->in_off, conn->in_len - conn->in_off);
		conn->in_len -= conn->in_off;
		conn->in_off = 0;
	}
	if (conn->in_len == conn->in_cap && conn->in_cap < IN_MAX)
	{
		conn->in_cap = Min(conn->in_cap * 2, IN_MAX);
		conn->in = repalloc(conn->in, conn->in_cap);
	}
	return conn->in_cap - conn->in_len;
}

/*
 * Read what the socket has (at most RECV_LOOPS reads: the level-triggered
 * set brings us back) and parse it; a whole or failed response ends the
 * exchange.
 */
static void
exchange_recv(Conn *conn)
{
	Exchange   *ex = conn->ex;

	for (int loops = 0; loops < RECV_LOOPS; loops++)
	{
		int			room = read_room(conn);
		ssize_t		n;
		PgcbHttp1Step step;

		if (room == 0)
		{
			/* the parser's limits fail a response before this: never read 0 bytes as a close */
			exchange_fail(ex, "the response does not fit in %d bytes", conn->in_cap);
			return;
		}
		n = recv(conn->fd, conn->in + conn->in_len, room, MSG_DONTWAIT);
		if (n < 0)
		{
			int			err = errno;

			if (err == EINTR)
				continue;
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (!retry_fresh(conn, ex))
				exchange_fail(ex, "receiving the response failed: %s", strerror(err));
			return;
		}
		if (n == 0)
		{
			if (pgcb_http1_response_at_close(&ex->resp))
			{
				ex->complete = true;
				exchange_finish(ex);
			}
			else if (retry_fresh(conn, ex))
				return;
			else if (ex->got == 0)
				exchange_fail(ex, "Empty reply from server");
			else
				exchange_fail(ex, "the connection closed before the response was complete "
							  "(" INT64_FORMAT " bytes received)", ex->got);
			return;
		}
		conn->in_len += (int) n;
		ex->got += n;
		step = pgcb_http1_response_parse(&ex->resp, conn->in, &conn->in_off, conn->in_len);
		if (step == PGCB_HTTP1_DONE)
		{
			ex->complete = true;
			exchange_finish(ex);
			return;
		}
		if (step == PGCB_HTTP1_FAILED)
		{
			exchange_fail(ex, "%s", ex->resp.error);
			return;
		}
		/* a short read emptied the socket: wait for the next readiness */
		if ((int) n < room)
			return;
	}
}

/* Send what the socket takes; the rest waits for EPOLLOUT. */
static void
exchange_send(Exchange *ex)
{
	Conn	   *conn = ex->conn;

	while (ex->out_sent < ex->out_len)
	{
		ssize_t		n = send(conn->fd, ex->out + ex->out_sent, ex->out_len - ex->out_sent,
							 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0)
		{
			int			err = errno;

			if (err == EINTR)
				continue;
			if (err == EAGAIN || err == EWOULDBLOCK)
			{
				watch(conn, EPOLLIN | EPOLLOUT);
				return;
			}
			if (retry_fresh(conn, ex))
				return;
			/* the server may have answered and closed (a 413, say): read it */
			exchange_recv(conn);
			if (conn->ex == ex)
				exchange_fail(ex, "sending the request failed: %s", strerror(err));
			return;
		}
		ex->out_sent += (int) n;
	}
	watch(conn, EPOLLIN);
}

/* ---------------------------------------------------------------- the loop */

/* Fail the requests past their deadline (waiting for a connection, or on one); note the next one. */
static void
expire(TimestampTz now)
{
	dlist_mutable_iter it;

	if (next_deadline == 0 || now < next_deadline)
		return;
	next_deadline = 0;
	dlist_foreach_modify(it, &pending)
	{
		Exchange   *ex = dlist_container(Exchange, node, it.cur);

		if (now >= ex->deadline)
		{
			dlist_delete(&ex->node);
			exchange_fail(ex, "Operation timed out after %ld milliseconds waiting for a connection",
						  (long) ((now - ex->started_at) / 1000));
		}
		else
			note_deadline(ex->deadline);
	}
	dlist_foreach_modify(it, &active)
	{
		Conn	   *conn = dlist_container(Conn, node, it.cur);
		Exchange   *ex = conn->ex;

		if (ex == NULL)
			continue;
		if (now >= ex->deadline)
		{
			exchange_fail(ex, "Operation timed out after %ld milliseconds with " INT64_FORMAT " bytes received",
						  (long) ((now - ex->started_at) / 1000), ex->got);
			conn_close(conn);
		}
		else
			note_deadline(ex->deadline);
	}
}

/*
 * Start the requests queued since (their clock starts now), act on what the
 * sockets report (idle connections the server closed go first, so that no
 * request is assigned to one), drive the connects, expire, and give the
 * waiting requests connections.
 */
void
pgcb_http1_poll(void)
{
	struct epoll_event events[MAX_EPOLL_EVENTS];
	int			n;
	TimestampTz now;
	MemoryContext old;

	if (epoll_fd < 0)
		return;
	/* what a response leaves (its header lines) outlives the caller's context */
	old = MemoryContextSwitchTo(http1_cxt);
	now = GetCurrentTimestamp();
	while (!dlist_is_empty(&queued))
	{
		Exchange   *ex = dlist_container(Exchange, node, dlist_pop_head_node(&queued));

		ex->started_at = now;
		ex->deadline = TimestampTzPlusMilliseconds(now, ex->timeout_ms);
		note_deadline(ex->deadline);
		dlist_push_tail(&pending, &ex->node);
	}
	n = epoll_wait(epoll_fd, events, MAX_EPOLL_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		Conn	   *conn;

		if (events[i].data.u64 & CURL_SOCKET_TAG)
		{
			connector_drive((curl_socket_t) (uint32) events[i].data.u64,
							pgcb_http_curl_flags(events[i].events));
			continue;
		}
		conn = (Conn *) events[i].data.ptr;
		switch (conn->state)
		{
			case CONN_BUSY:
				if (conn->ex->out_sent < conn->ex->out_len &&
					(events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
					exchange_send(conn->ex);
				if (conn->state == CONN_BUSY &&
					(events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
					exchange_recv(conn);
				break;
			case CONN_IDLE:
				/* the server closed it (or spoke out of turn): not to be reused */
				conn_close(conn);
				break;
			case CONN_CONNECTING:
			case CONN_DEAD:
				break;
		}
	}

	now = GetCurrentTimestamp();
	if (connector_deadline != 0 && now >= connector_deadline)
	{
		connector_deadline = 0;
		connector_drive(CURL_SOCKET_TIMEOUT, 0);
	}
	expire(now);
	assign_connections();
	bury_dead();
	MemoryContextSwitchTo(old);
}

bool
pgcb_http1_next_done(PgcbHttp1Result *r)
{
	Exchange   *ex;

	if (returned != NULL)
	{
		if (returned->origin != NULL)
			returned->origin->users--;
		if (returned->out)
			pfree(returned->out);
		if (returned->resp.headers)
			pfree(returned->resp.headers);
		pfree(returned->resp.body);
		pfree(returned);
		returned = NULL;
	}
	if (dlist_is_empty(&done))
		return false;
	ex = dlist_container(Exchange, node, dlist_pop_head_node(&done));
	returned = ex;
	running--;
	r->owner = ex->owner;
	r->status = ex->complete ? ex->resp.status : 0;
	r->error = ex->complete ? NULL : ex->error[0] ? ex->error : "the request failed";
	r->retry_after_ms = ex->complete ? ex->resp.retry_after_ms : -1;
	r->latency_ms = (double) (ex->finished_at - ex->started_at) / 1000.0;
	r->body = ex->resp.body;
	r->body_len = ex->resp.body_len;
	r->headers = ex->complete ? ex->resp.headers : NULL;
	r->headers_len = ex->complete ? ex->resp.headers_len : 0;
	return true;
}

long
pgcb_http1_ms_until_due(void)
{
	TimestampTz first = next_deadline;

	if (!dlist_is_empty(&done) || !dlist_is_empty(&queued))
		return 0;
	if (connector_deadline != 0 && (first == 0 || connector_deadline < first))
		first = connector_deadline;
	if (first == 0)
		return -1;
	return Max((long) ((first - GetCurrentTimestamp() + 999) / 1000), 0);
}

int
pgcb_http1_running(void)
{
	return running;
}

void
pgcb_http1_apply_settings(void)
{
	settings_gen++;
	/* idle connections were let through by the old allowlist */
	while (!dlist_is_empty(&idle_lru))
		conn_close(dlist_container(Conn, lru, dlist_head_node(&idle_lru)));
	bury_dead();
}

void
pgcb_http1_shutdown(void)
{
	while (!dlist_is_empty(&active))
		conn_close(dlist_container(Conn, node, dlist_head_node(&active)));
	while (!dlist_is_empty(&idle_lru))
		conn_close(dlist_container(Conn, lru, dlist_head_node(&idle_lru)));
	if (connector != NULL)
		curl_multi_cleanup(connector);
	connector = NULL;
	connector_deadline = 0;
	if (epoll_fd >= 0)
		close(epoll_fd);
	epoll_fd = -1;
	if (http1_cxt != NULL)
		MemoryContextReset(http1_cxt);
	targets = NULL;
	dlist_init(&origins);
	dlist_init(&active);
	dlist_init(&idle_lru);
	dlist_init(&dead);
	dlist_init(&queued);
	dlist_init(&pending);
	dlist_init(&done);
	returned = NULL;
	n_conns = 0;
	running = 0;
	next_deadline = 0;
}
