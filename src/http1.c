/*
 * http1.c
 *		HTTP/1.1 requests written and responses read by pg_callback itself,
 *		on connections libcurl makes.
 *
 * Why: libcurl's transfer machinery (set-up, URL parsing, header printing,
 * its internal polls and socket-callback churn) costs about 40 us of CPU
 * per request here, the same request written in one buffer and answered in
 * one read about 15 (bench/results/drain-raw-floor.md).  So libcurl keeps
 * what it is for (DNS, connect, TLS, the address policy's socket hook) and
 * this file writes each request with one curl_easy_send() and parses the
 * response read with curl_easy_recv(): status, headers, a Content-Length,
 * chunked or read-to-close body, 1xx, Connection: close, keep-alive.
 *
 * Each connection is a CURLOPT_CONNECT_ONLY easy handle in a multi handle
 * of its own.  curl_easy_send/recv find the connection in that multi's
 * cache; a cache that holds only it is never pruned under us (a shared
 * cache closes idle-looking connections with unread input, which ours are
 * while a response arrives), and the multi is never driven again once the
 * connection is up.
 *
 * The sockets sit in an epoll set of our own, watched by http.c's wait
 * (pgcb_http_wait_also).  Only the two curl callbacks below run inside
 * libcurl; they neither allocate nor raise.  Everything else runs from
 * pgcb_http1_start/poll, where palloc and ereport are as anywhere.
 */
#include "postgres.h"

#include <ctype.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/hashfn.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "guc.h"
#include "http.h"
#include "http1.h"
#include "netpolicy.h"
#include "retry.h"

#define MAX_EPOLL_EVENTS 256
#define IN_CHUNK 16384			/* read buffer; grows only for a long head */
#define HEAD_MAX (100 * 1024)	/* a response's head, as libcurl allows */
#define CHUNK_LINE_MAX 1024
#define ERROR_LEN (CURL_ERROR_SIZE + 128)
#define MAX_TARGETS 1024

/* Where requests go: connections are shared per origin, as libcurl's are. */
typedef struct Origin
{
	dlist_node	node;			/* in origins */
	char	   *key;			/* "scheme://host:port" */
	char	   *connect_url;
	bool		tls;
	dlist_head	idle;			/* its idle connections, the latest first */
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

typedef enum ConnState
{
	CONN_CONNECTING,
	CONN_BUSY,
	CONN_IDLE,
	CONN_DEAD
} ConnState;

typedef struct Conn Conn;

/*
 * What an epoll event points to: a connection (its own socket, once up), or
 * one of the sockets curl watches while it makes the connection.
 */
typedef enum WatchKind
{
	WATCH_CONN,
	WATCH_CURL_SOCKET
} WatchKind;

#define CURL_SOCKETS 6			/* happy eyeballs' two, the resolver's, room */

typedef struct CurlSocket
{
	WatchKind	kind;			/* WATCH_CURL_SOCKET; first, as in Conn */
	Conn	   *conn;
	curl_socket_t fd;			/* CURL_SOCKET_BAD: a free slot */
} CurlSocket;

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
	TimestampTz deadline;
	int			connect_timeout_ms;
	bool		retried;		/* sent again once on a fresh connection */
	bool		want_headers;
	/* the response */
	Phase		phase;
	int			scan;			/* PH_HEAD, PH_TRAILER: where the next line starts */
	int64		remaining;		/* body or chunk bytes still to come */
	int64		got;			/* response bytes received */
	long		status;
	bool		close_after;
	long		retry_after_ms;
	char	   *headers;
	int			headers_len;
	char	   *body;
	int			body_len;
	int			body_cap;
	bool		failed;
	char		error[ERROR_LEN];
} Exchange;

struct Conn
{
	WatchKind	kind;			/* WATCH_CONN; first, as in CurlSocket */
	dlist_node	node;			/* in active, origin->idle or dead */
	dlist_node	lru;			/* in idle_lru while idle */
	ConnState	state;
	Origin	   *origin;
	CURLM	   *multi;			/* its own: see the header comment */
	CURL	   *easy;
	curl_socket_t fd;			/* once connected */
	uint32		watched;		/* epoll events registered for fd; 0: none */
	uint64		gen;			/* settings it was made under */
	int			served;			/* requests answered on it */
	TimestampTz curl_deadline;	/* connecting: curl's timer; 0: none */
	Exchange   *ex;				/* connecting or busy: the request it carries */
	char	   *in;
	int			in_len;
	int			in_off;			/* parsed up to here */
	int			in_cap;
	CurlSocket	sockets[CURL_SOCKETS];	/* connecting: what curl watches */
	char		why[PGCB_NETPOLICY_WHY_LEN];
	char		errbuf[CURL_ERROR_SIZE];
};

static MemoryContext http1_cxt = NULL;
static int	epoll_fd = -1;
static HTAB *targets = NULL;
static dlist_head origins = DLIST_STATIC_INIT(origins);
static dlist_head active = DLIST_STATIC_INIT(active);	/* connecting and busy */
static dlist_head idle_lru = DLIST_STATIC_INIT(idle_lru);	/* idle, the oldest first */
static dlist_head dead = DLIST_STATIC_INIT(dead);	/* closed, freed after the poll */
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

/*
 * A connection being made: curl says which sockets to watch (its resolver's
 * too).  Each gets a slot of conn's, which its epoll events point to, so
 * that the poll can tell curl which socket is ready.  No allocation, no
 * error raised.
 */
static int
conn_socket_callback(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	Conn	   *conn = (Conn *) userp;
	CurlSocket *slot = NULL;
	struct epoll_event ev;

	for (int i = 0; i < CURL_SOCKETS && slot == NULL; i++)
		if (conn->sockets[i].fd == s)
			slot = &conn->sockets[i];
	if (what == CURL_POLL_REMOVE)
	{
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
		if (slot != NULL)
			slot->fd = CURL_SOCKET_BAD;
		return 0;
	}
	for (int i = 0; i < CURL_SOCKETS && slot == NULL; i++)
		if (conn->sockets[i].fd == CURL_SOCKET_BAD)
			slot = &conn->sockets[i];
	if (slot == NULL)
		return -1;				/* curl fails the connect */
	slot->fd = s;
	memset(&ev, 0, sizeof(ev));
	ev.data.ptr = slot;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int
conn_timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	Conn	   *conn = (Conn *) userp;

	conn->curl_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
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
	info.keysize = sizeof(uint64);
	info.entrysize = sizeof(Target);
	info.hcxt = http1_cxt;
	targets = hash_create("pg_callback http1 targets", 64, &info,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
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
origin_of(const char *scheme, const char *host, const char *port)
{
	char	   *key = psprintf("%s://%s:%s", scheme, host, port);
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
	o->tls = strcmp(scheme, "https") == 0;
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
	char	   *scheme,
			   *host,
			   *port,
			   *given_port,
			   *path,
			   *query;
	bool		default_port;
	MemoryContext old;

	t = hash_search(targets, &h, HASH_FIND, NULL);
	if (t != NULL && strcmp(t->url, url) == 0)
		return t;
	/* URLs come from endpoints; a table that keeps growing is started anew */
	if (t == NULL && hash_get_num_entries(targets) >= MAX_TARGETS)
	{
		HASH_SEQ_STATUS seq;
		Target	   *e;

		hash_seq_init(&seq, targets);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			pfree(e->url);
			pfree(e->prefix);
			hash_search(targets, &e->hash, HASH_REMOVE, NULL);
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
	scheme = url_part(u, CURLUPART_SCHEME, 0);
	host = url_part(u, CURLUPART_HOST, 0);
	port = url_part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT);
	given_port = url_part(u, CURLUPART_PORT, 0);
	path = url_part(u, CURLUPART_PATH, 0);
	query = url_part(u, CURLUPART_QUERY, 0);
	curl_url_cleanup(u);
	if (scheme == NULL || host == NULL || port == NULL ||
		(strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
	{
		MemoryContextSwitchTo(old);
		*error = "the URL has no http or https scheme and host";
		return NULL;
	}

	t = hash_search(targets, &h, HASH_ENTER, &found);
	if (found)
	{
		/* another URL with the same hash: this one takes the entry */
		pfree(t->url);
		pfree(t->prefix);
	}
	t->url = pstrdup(url);
	default_port = given_port == NULL ||
		(strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0) ||
		(strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0);
	t->prefix = psprintf("POST %s%s%s HTTP/1.1\r\nHost: %s%s%s\r\n",
						 path ? path : "/", query ? "?" : "", query ? query : "",
						 host, default_port ? "" : ":", default_port ? "" : port);
	t->prefix_len = strlen(t->prefix);
	t->origin = origin_of(scheme, host, port);
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

/* The request ends with what it has: to the done list, its connection freed or closed. */
static void
exchange_finish(Exchange *ex)
{
	Conn	   *conn = ex->conn;

	if (ex->phase != PH_DONE)
		ex->failed = true;
	ex->conn = NULL;
	dlist_push_tail(&done, &ex->node);
	if (conn == NULL)
		return;
	conn->ex = NULL;
	if (ex->failed || ex->close_after || ex->out_sent < ex->out_len ||
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
	if (conn->watched != EPOLLIN)
	{
		struct epoll_event ev = {.events = EPOLLIN,.data.ptr = conn};

		(void) epoll_ctl(epoll_fd, EPOLL_CTL_MOD, conn->fd, &ev);
		conn->watched = EPOLLIN;
	}
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
	ex->failed = true;
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
	ex->started_at = GetCurrentTimestamp();
	ex->deadline = TimestampTzPlusMilliseconds(ex->started_at, timeout_ms);
	ex->connect_timeout_ms = Min(connect_timeout_ms, timeout_ms);
	ex->want_headers = want_headers;
	ex->retry_after_ms = -1;
	ex->body_cap = response_cap;
	ex->body = palloc(response_cap + 1);
	running++;
	if (t == NULL)
	{
		exchange_fail(ex, "%s", error);
		MemoryContextSwitchTo(old);
		return;
	}
	ex->origin = t->origin;

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

	note_deadline(ex->deadline);
	dlist_push_tail(&pending, &ex->node);
	assign_connections();
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------- connections */

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
	{
		/* curl's connect left it registered (ADD), or not (MOD) */
		if (epoll_ctl(epoll_fd, conn->watched == 0 ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
					  conn->fd, &ev) != 0)
			elog(ERROR, "epoll_ctl failed: %m");
	}
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

		conn->ex = NULL;
		ex->conn = NULL;
		if (!ex->failed && ex->phase != PH_DONE)
			exchange_fail(ex, "the connection was closed");
	}
	if (conn->state == CONN_IDLE)
		dlist_delete(&conn->lru);
	dlist_delete(&conn->node);
	if (conn->watched != 0)
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
	conn->watched = 0;
	if (conn->multi != NULL)
	{
		if (conn->easy != NULL)
			(void) curl_multi_remove_handle(conn->multi, conn->easy);
		/* closes the connection in its cache */
		curl_multi_cleanup(conn->multi);
	}
	if (conn->easy != NULL)
		curl_easy_cleanup(conn->easy);
	conn->multi = NULL;
	conn->easy = NULL;
	conn->state = CONN_DEAD;
	dlist_push_tail(&dead, &conn->node);
	n_conns--;
}

static void
bury_dead(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &dead)
	{
		Conn	   *conn = dlist_container(Conn, node, it.cur);

		dlist_delete(&conn->node);
		if (conn->in != NULL)
			pfree(conn->in);
		pfree(conn);
	}
}

/* A connection is up: the request goes out on it. */
static void
conn_ready(Conn *conn)
{
	conn->state = CONN_BUSY;
	conn->curl_deadline = 0;
	if (conn->in == NULL)
	{
		conn->in_cap = IN_CHUNK;
		conn->in = MemoryContextAlloc(http1_cxt, conn->in_cap);
	}
	conn->in_len = conn->in_off = 0;
	exchange_send(conn->ex);
}

/*
 * Let a connecting conn's multi act on socket s (CURL_SOCKET_TIMEOUT: its
 * timer); when the connect ends, the request goes out or fails.
 */
static void
conn_drive_connect(Conn *conn, curl_socket_t s, int flags)
{
	int			still;
	int			left;
	CURLMsg    *msg;

	(void) curl_multi_socket_action(conn->multi, s, flags, &still);
	while ((msg = curl_multi_info_read(conn->multi, &left)) != NULL)
	{
		curl_socket_t fd = CURL_SOCKET_BAD;
		CURLcode	rc;

		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		if (rc == CURLE_OK &&
			curl_easy_getinfo(conn->easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
			fd != CURL_SOCKET_BAD)
		{
			conn->fd = fd;
			/* curl may have left it in the set for conn, or taken it out */
			conn->watched = 0;
			watch(conn, EPOLLIN | EPOLLOUT);
			conn_ready(conn);
		}
		else if (conn->ex != NULL)
		{
			Exchange   *ex = conn->ex;

			snprintf(ex->error, sizeof(ex->error), "%s",
					 conn->why[0] ? conn->why :
					 conn->errbuf[0] ? conn->errbuf :
					 rc != CURLE_OK ? curl_easy_strerror(rc) : "no socket after connecting");
			ex->failed = true;
			conn->ex = NULL;
			ex->conn = NULL;
			exchange_finish(ex);
			conn_close(conn);
		}
		else
			conn_close(conn);
		return;
	}
}

static void
conn_open(Origin *o, Exchange *ex)
{
	Conn	   *conn = MemoryContextAllocZero(http1_cxt, sizeof(Conn));
	long		left_ms = (long) ((ex->deadline - GetCurrentTimestamp()) / 1000);

	conn->origin = o;
	conn->gen = settings_gen;
	conn->fd = CURL_SOCKET_BAD;
	conn->kind = WATCH_CONN;
	conn->state = CONN_CONNECTING;
	for (int i = 0; i < CURL_SOCKETS; i++)
	{
		conn->sockets[i].kind = WATCH_CURL_SOCKET;
		conn->sockets[i].conn = conn;
		conn->sockets[i].fd = CURL_SOCKET_BAD;
	}
	conn->ex = ex;
	ex->conn = conn;
	dlist_push_tail(&active, &conn->node);
	n_conns++;
	conn->multi = curl_multi_init();
	conn->easy = curl_easy_init();
	if (conn->multi == NULL || conn->easy == NULL)
	{
		exchange_fail(ex, "out of memory making a connection");
		conn_close(conn);
		return;
	}
	left_ms = Max(left_ms, 1);
	curl_multi_setopt(conn->multi, CURLMOPT_SOCKETFUNCTION, conn_socket_callback);
	curl_multi_setopt(conn->multi, CURLMOPT_SOCKETDATA, conn);
	curl_multi_setopt(conn->multi, CURLMOPT_TIMERFUNCTION, conn_timer_callback);
	curl_multi_setopt(conn->multi, CURLMOPT_TIMERDATA, conn);
	curl_easy_setopt(conn->easy, CURLOPT_URL, o->connect_url);
	curl_easy_setopt(conn->easy, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(conn->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	/* a proxy from the environment would hide the real peer from the SSRF check */
	curl_easy_setopt(conn->easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(conn->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(conn->easy, CURLOPT_OPENSOCKETFUNCTION, pgcb_netpolicy_opensocket);
	curl_easy_setopt(conn->easy, CURLOPT_OPENSOCKETDATA, (void *) conn->why);
	curl_easy_setopt(conn->easy, CURLOPT_ERRORBUFFER, conn->errbuf);
	curl_easy_setopt(conn->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(conn->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	/* ALPN offers http/1.1 only: see "On the wire" in the README */
	curl_easy_setopt(conn->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	if (pgcb_ca_file != NULL && pgcb_ca_file[0] != '\0')
		curl_easy_setopt(conn->easy, CURLOPT_CAINFO, pgcb_ca_file);
	curl_easy_setopt(conn->easy, CURLOPT_CONNECTTIMEOUT_MS,
					 Min((long) ex->connect_timeout_ms, left_ms));
	curl_easy_setopt(conn->easy, CURLOPT_TIMEOUT_MS, left_ms);
	if (curl_multi_add_handle(conn->multi, conn->easy) != CURLM_OK)
	{
		exchange_fail(ex, "could not start a connection");
		conn_close(conn);
		return;
	}
	conn_drive_connect(conn, CURL_SOCKET_TIMEOUT, 0);
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

		if (!dlist_is_empty(&o->idle))
		{
			Conn	   *conn = dlist_container(Conn, node, dlist_pop_head_node(&o->idle));

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

/* ---------------------------------------------------------------- the response */

static void
keep_body(Exchange *ex, const char *p, int64 n)
{
	int64		room = ex->body_cap - ex->body_len;

	if (room > 0)
	{
		int			k = (int) Min(n, room);

		memcpy(ex->body + ex->body_len, p, k);
		ex->body_len += k;
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

/*
 * A whole head at [start, end): status line and header lines.  Sets how the
 * body is framed (RFC 9112, 6.3).  Returns false on a malformed head, with
 * the error set.
 */
static bool
parse_head(Exchange *ex, const char *buf, int start, int end)
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
	int			lines_start;

	if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char) line[7]) ||
		line[8] != ' ' || !isdigit((unsigned char) line[9]) ||
		!isdigit((unsigned char) line[10]) || !isdigit((unsigned char) line[11]) ||
		(len > 12 && line[12] != ' '))
	{
		snprintf(ex->error, sizeof(ex->error), "malformed HTTP/1.x status line in the response: \"%.*s\"",
				 (int) Min(len < 0 ? 0 : len, 60), line);
		return false;
	}
	minor = line[7] - '0';
	ex->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
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
		else if (nlen == 11 && pg_strncasecmp(line, "Retry-After", 11) == 0)
		{
			char	   *value = pnstrdup(v, vlen);

			ex->retry_after_ms = pgcb_retry_parse_retry_after(value);
			pfree(value);
		}
	}
	if (ex->status >= 100 && ex->status < 200)
		return true;			/* the caller reads the next head */
	if (ex->want_headers)
	{
		ex->headers_len = end - lines_start;
		ex->headers = pnstrdup(buf + lines_start, ex->headers_len);
	}
	ex->close_after = close || (minor == 0 && !keep_alive);
	if (ex->status == 204 || ex->status == 304)
		ex->phase = PH_DONE;
	else if (has_te && chunked)
		ex->phase = PH_CHUNK_SIZE;
	else if (has_te || content_length < 0)
	{
		/* no length: the body runs to the close */
		ex->phase = PH_BODY_EOF;
		ex->close_after = true;
	}
	else
	{
		ex->remaining = content_length;
		ex->phase = content_length == 0 ? PH_DONE : PH_BODY_LEN;
	}
	return true;

bad_length:
	snprintf(ex->error, sizeof(ex->error), "invalid Content-Length in the response");
	return false;
}

/*
 * Parse what conn has read.  Returns true when the response is complete or
 * found malformed (ex->failed); false when more is needed.
 */
static bool
parse_response(Conn *conn, Exchange *ex)
{
	const char *buf = conn->in;

	for (;;)
	{
		int			avail = conn->in_len - conn->in_off;
		const char *line;
		int			len;

		switch (ex->phase)
		{
			case PH_HEAD:
				{
					int			pos = conn->in_off + ex->scan;

					/* find the empty line that ends the head */
					while ((len = next_line(buf, &pos, conn->in_len, &line)) > 0)
						ex->scan = pos - conn->in_off;
					if (len < 0)
					{
						if (conn->in_len - conn->in_off > HEAD_MAX)
						{
							snprintf(ex->error, sizeof(ex->error),
									 "the response's head exceeds %d bytes", HEAD_MAX);
							ex->failed = true;
							return true;
						}
						return false;
					}
					if (ex->scan == 0)
					{
						/* an empty line before the status line (RFC 9112, 2.2) */
						conn->in_off = pos;
						continue;
					}
					if (!parse_head(ex, buf, conn->in_off, pos))
					{
						ex->failed = true;
						return true;
					}
					conn->in_off = pos;
					ex->scan = 0;
					if (ex->phase == PH_HEAD)
					{
						/* a 1xx: the real response follows */
						if (ex->status == 101)
						{
							snprintf(ex->error, sizeof(ex->error),
									 "the server switched protocols (101)");
							ex->failed = true;
							return true;
						}
						ex->status = 0;
						ex->retry_after_ms = -1;
					}
					break;
				}
			case PH_BODY_LEN:
			case PH_CHUNK_DATA:
				{
					int64		n = Min((int64) avail, ex->remaining);

					if (n == 0)
						return false;
					keep_body(ex, buf + conn->in_off, n);
					conn->in_off += (int) n;
					ex->remaining -= n;
					if (ex->remaining == 0)
						ex->phase = ex->phase == PH_BODY_LEN ? PH_DONE : PH_CHUNK_END;
					break;
				}
			case PH_CHUNK_SIZE:
				{
					int			pos = conn->in_off;
					int64		size = 0;
					int			i;

					len = next_line(buf, &pos, conn->in_len, &line);
					if (len < 0)
					{
						if (avail > CHUNK_LINE_MAX)
							goto bad_chunk;
						return false;
					}
					for (i = 0; i < len && isxdigit((unsigned char) line[i]); i++)
					{
						if (size > (INT64CONST(1) << 56))
							goto bad_chunk;
						size = size * 16 + (isdigit((unsigned char) line[i]) ? line[i] - '0' :
											(pg_ascii_tolower((unsigned char) line[i]) - 'a' + 10));
					}
					if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
						goto bad_chunk;
					conn->in_off = pos;
					ex->remaining = size;
					ex->phase = size == 0 ? PH_TRAILER : PH_CHUNK_DATA;
					break;
				}
			case PH_CHUNK_END:
				if (avail < 1 || (buf[conn->in_off] == '\r' && avail < 2))
					return false;
				if (buf[conn->in_off] == '\n')
					conn->in_off += 1;
				else if (buf[conn->in_off] == '\r' && buf[conn->in_off + 1] == '\n')
					conn->in_off += 2;
				else
					goto bad_chunk;
				ex->phase = PH_CHUNK_SIZE;
				break;
			case PH_TRAILER:
				{
					int			pos = conn->in_off;

					len = next_line(buf, &pos, conn->in_len, &line);
					if (len < 0)
					{
						if (avail > HEAD_MAX)
							goto bad_chunk;
						return false;
					}
					conn->in_off = pos;
					if (len == 0)
						ex->phase = PH_DONE;
					break;
				}
			case PH_BODY_EOF:
				keep_body(ex, buf + conn->in_off, avail);
				conn->in_off = conn->in_len;
				return false;
			case PH_DONE:
				return true;
		}
	}

bad_chunk:
	snprintf(ex->error, sizeof(ex->error), "malformed chunked body in the response");
	ex->failed = true;
	return true;
}

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
	dlist_push_head(&pending, &ex->node);
	assign_connections();
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
	if (conn->in_len == conn->in_cap && conn->in_cap < HEAD_MAX + IN_CHUNK)
	{
		conn->in_cap = Min(conn->in_cap * 2, HEAD_MAX + IN_CHUNK);
		conn->in = repalloc(conn->in, conn->in_cap);
	}
	return conn->in_cap - conn->in_len;
}

static void
exchange_recv(Conn *conn)
{
	Exchange   *ex = conn->ex;

	for (;;)
	{
		int			room = read_room(conn);
		size_t		n = 0;
		CURLcode	rc;

		rc = curl_easy_recv(conn->easy, conn->in + conn->in_len, room, &n);
		if (rc == CURLE_AGAIN)
			return;
		if (rc != CURLE_OK)
		{
			if (!retry_fresh(conn, ex))
				exchange_fail(ex, "receiving the response failed: %s",
							  conn->errbuf[0] ? conn->errbuf : curl_easy_strerror(rc));
			return;
		}
		if (n == 0)
		{
			if (ex->phase == PH_BODY_EOF)
			{
				ex->phase = PH_DONE;
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
		if (parse_response(conn, ex))
		{
			exchange_finish(ex);
			return;
		}

		/*
		 * Plain TCP: a short read emptied the socket.  TLS may hold
		 * decrypted bytes the socket no longer shows: read to CURLE_AGAIN.
		 */
		if (!conn->origin->tls && (int) n < room)
			return;
	}
}

static void
exchange_send(Exchange *ex)
{
	Conn	   *conn = ex->conn;

	while (ex->out_sent < ex->out_len)
	{
		size_t		n = 0;
		CURLcode	rc = curl_easy_send(conn->easy, ex->out + ex->out_sent,
										ex->out_len - ex->out_sent, &n);

		if (rc == CURLE_AGAIN)
		{
			watch(conn, EPOLLIN | EPOLLOUT);
			return;
		}
		if (rc != CURLE_OK)
		{
			if (retry_fresh(conn, ex))
				return;
			/* the server may have answered and closed (a 413, say): read it */
			exchange_recv(conn);
			if (conn->ex == ex)
				exchange_fail(ex, "sending the request failed: %s",
							  conn->errbuf[0] ? conn->errbuf : curl_easy_strerror(rc));
			return;
		}
		ex->out_sent += (int) n;
	}
	watch(conn, EPOLLIN);
}

/* ---------------------------------------------------------------- the loop */

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

void
pgcb_http1_poll(void)
{
	struct epoll_event events[MAX_EPOLL_EVENTS];
	int			n;
	TimestampTz now;
	dlist_mutable_iter it;

	MemoryContext old;

	if (epoll_fd < 0)
		return;
	/* what a response leaves (its header lines) outlives the caller's context */
	old = MemoryContextSwitchTo(http1_cxt);
	n = epoll_wait(epoll_fd, events, MAX_EPOLL_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		Conn	   *conn;

		if (*(WatchKind *) events[i].data.ptr == WATCH_CURL_SOCKET)
		{
			CurlSocket *cs = (CurlSocket *) events[i].data.ptr;
			int			flags = 0;

			if (cs->conn->state != CONN_CONNECTING || cs->fd == CURL_SOCKET_BAD)
				continue;
			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			conn_drive_connect(cs->conn, cs->fd, flags);
			continue;
		}
		conn = (Conn *) events[i].data.ptr;
		switch (conn->state)
		{
			case CONN_CONNECTING:
				break;			/* its sockets are curl's until it is up */
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
			case CONN_DEAD:
				break;
		}
	}

	/* curl's timers of the connections being made */
	now = GetCurrentTimestamp();
	dlist_foreach_modify(it, &active)
	{
		Conn	   *conn = dlist_container(Conn, node, it.cur);

		if (conn->state == CONN_CONNECTING && conn->curl_deadline != 0 &&
			now >= conn->curl_deadline)
		{
			conn->curl_deadline = 0;
			conn_drive_connect(conn, CURL_SOCKET_TIMEOUT, 0);
		}
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
		if (returned->out)
			pfree(returned->out);
		if (returned->headers)
			pfree(returned->headers);
		pfree(returned->body);
		pfree(returned);
		returned = NULL;
	}
	if (dlist_is_empty(&done))
		return false;
	ex = dlist_container(Exchange, node, dlist_pop_head_node(&done));
	returned = ex;
	running--;
	r->owner = ex->owner;
	r->status = ex->failed ? 0 : ex->status;
	r->error = ex->failed ? (ex->error[0] ? ex->error : "the request failed") : NULL;
	r->retry_after_ms = ex->failed ? -1 : ex->retry_after_ms;
	r->latency_ms = (double) (GetCurrentTimestamp() - ex->started_at) / 1000.0;
	r->body = ex->body;
	r->body_len = ex->body_len;
	r->headers = ex->failed ? NULL : ex->headers;
	r->headers_len = ex->failed ? 0 : ex->headers_len;
	return true;
}

long
pgcb_http1_ms_until_due(void)
{
	TimestampTz first = next_deadline;
	dlist_iter	it;

	if (!dlist_is_empty(&done))
		return 0;
	dlist_foreach(it, &active)
	{
		Conn	   *conn = dlist_container(Conn, node, it.cur);

		if (conn->state == CONN_CONNECTING && conn->curl_deadline != 0 &&
			(first == 0 || conn->curl_deadline < first))
			first = conn->curl_deadline;
	}
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
	/* idle connections were made under the old callback.ca_file or allowlist */
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
	dlist_init(&pending);
	dlist_init(&done);
	returned = NULL;
	n_conns = 0;
	running = 0;
	next_deadline = 0;
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
		char	   *name;
		char	   *value;

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
		name = pnstrdup(line, pg_encoding_verifymbstr(GetDatabaseEncoding(), line, nlen));
		value = pnstrdup(v, pg_encoding_verifymbstr(GetDatabaseEncoding(), v, vlen));
		for (char *p = name; *p; p++)
			*p = pg_ascii_tolower((unsigned char) *p);
		if (!first)
			appendStringInfoString(&buf, ", ");
		first = false;
		escape_json(&buf, name);
		appendStringInfoString(&buf, ": ");
		escape_json(&buf, value);
		pfree(name);
		pfree(value);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}
