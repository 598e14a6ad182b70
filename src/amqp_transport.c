/*
 * amqp_transport.c
 *		The AMQP transport: amqp:// and amqps:// endpoints publish each
 *		attempt to RabbitMQ through librabbitmq.  Owns the URL's parsing,
 *		one connection per endpoint (kept open, made again after a failure),
 *		and turning publisher confirms into outcomes.  The queue, retry
 *		policy, limits, breaker, metrics and dead letters are delivery.c's,
 *		the same as for HTTP.
 *
 * How it stays out of the way of HTTP deliveries: a publish only writes
 * its frames (and only when the socket's send buffer has room for them, so
 * the write cannot wait on a broker that stopped reading); the confirm is
 * read later, when the connection's socket, which sits in an epoll set of
 * ours that the worker's WaitEventSet watches, becomes readable.  The one
 * blocking step is making a connection (TCP, TLS, login, channel,
 * confirm.select): each step waits at most min(callback.connect_timeout,
 * the endpoint's timeout), and after a failed connection the endpoint's
 * publishes fail at once for RECONNECT_MS before the next try, twice as
 * long after each further failure, up to RECONNECT_MAX_MS: a broker that
 * does not answer costs the other endpoints one connect bound at most
 * every RECONNECT_MAX_MS.
 *
 * A publish is delivered when the broker acks it; a nack, a basic.return
 * (unroutable; mandatory is on unless the URL says mandatory=false), a
 * closed channel or connection, or no confirm within the endpoint's
 * timeout is a failed attempt, retried per policy.  Any of the last three
 * closes the connection: the publishes still unconfirmed on it fail too.
 *
 * A connection unused for IDLE_CLOSE_MS is closed: heartbeats are off
 * (they would need a timer of their own in the wait loop), so a long-idle
 * connection may be dead without our knowing; and a dropped endpoint's
 * connection is let go.
 *
 * Nothing here puts the URL in a message: errors name the host and port.
 */
#include "postgres.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ilist.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "amqp_transport.h"
#include "guc.h"
#include "http.h"
#include "netpolicy.h"

#define CHANNEL 1
#define FRAME_MAX 131072
#define RECONNECT_MS 1000		/* after one failed connection; doubled ... */
#define RECONNECT_MAX_MS 8000	/* ... up to this, while they keep failing */
/* a connection unused this long is closed (a dropped endpoint's too) */
#define IDLE_CLOSE_MS (5 * 60 * 1000)
#define MAX_EXCHANGE_LEN 127	/* AMQP 0-9-1: exchange names */
#define MAX_SHORTSTR 255		/* routing keys */
#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define AMQP_HINT_URL \
	"Give amqp://user:password@host:port/vhost?exchange=name&routing_key=key (amqps:// for TLS); percent-encode '@', ':' and '/' inside the user, password and vhost."

/* Where an amqp URL points and what it publishes to. */
typedef struct AmqpTarget
{
	char	   *host;
	int			port;
	bool		ssl;
	char	   *user;
	char	   *password;
	char	   *vhost;
	char	   *exchange;		/* "" is the default exchange */
	char	   *routing_key;	/* NULL: the event type */
	bool		mandatory;
} AmqpTarget;

/* A publish waiting for its confirm. */
typedef struct AmqpPublish
{
	dlist_node	node;
	uint64		tag;			/* delivery tag on the channel, from 1 */
	void	   *owner;
	TimestampTz started_at;
	TimestampTz deadline;
	bool		returned;		/* basic.return came: fail at the ack */
	char		webhook_id[48];
} AmqpPublish;

typedef enum ReturnState
{
	RETURN_NONE,
	RETURN_HEADER,				/* basic.return read, its content header next */
	RETURN_BODY					/* its body frames next */
} ReturnState;

/* An endpoint's connection. */
typedef struct AmqpLink
{
	int			endpoint_id;	/* hash key */
	char	   *url;			/* what target was parsed from (link_cxt) */
	MemoryContext link_cxt;
	AmqpTarget	t;
	bool		bad_url;
	amqp_connection_state_t conn;	/* NULL: not connected */
	int			fd;
	bool		ready;			/* its socket was readable at the last poll */
	uint64		next_tag;
	TimestampTz last_publish_at;
	dlist_head	pending;		/* AmqpPublish, in tag order */
	TimestampTz retry_connect_at;
	int			connect_failures;	/* in a row */
	char		down_why[PGCB_AMQP_ERROR_LEN];
	ReturnState return_state;
	uint64		return_left;	/* body bytes of the returned message still to read */
	char		return_why[PGCB_AMQP_ERROR_LEN];
} AmqpLink;

typedef struct AmqpDone
{
	void	   *owner;
	PgcbAmqpResult result;
} AmqpDone;

static MemoryContext amqp_cxt = NULL;
static HTAB *links = NULL;
static int	epoll_fd = -1;
static AmqpDone *done = NULL;
static int	n_done = 0;
static int	cap_done = 0;
static int	next_done_at = 0;

bool
pgcb_amqp_is_url(const char *url)
{
	return pg_strncasecmp(url, "amqp:", 5) == 0 || pg_strncasecmp(url, "amqps:", 6) == 0;
}

/* %XX decoding of a query value in place; false on a bad escape or a NUL. */
static bool
percent_decode(char *s)
{
	char	   *out = s;

	for (char *p = s; *p; p++)
	{
		if (*p == '%')
		{
			int			v;

			if (!isxdigit((unsigned char) p[1]) || !isxdigit((unsigned char) p[2]))
				return false;
			sscanf(p + 1, "%2x", &v);
			if (v == 0)
				return false;
			*out++ = (char) v;
			p += 2;
		}
		else
			*out++ = *p;
	}
	*out = '\0';
	return true;
}

static bool
valid_exchange(const char *name)
{
	if (strlen(name) > MAX_EXCHANGE_LEN)
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char) *p) && strchr("-_.:", *p) == NULL)
			return false;
	return true;
}

/*
 * Parse url with librabbitmq's own parser (so that what is checked is what
 * it connects to), after taking off the query, which it does not read.
 * Strings go to the current memory context.  On failure *detail says why,
 * in words that never repeat the URL's parts.
 */
static bool
parse_target(const char *url, AmqpTarget *t, const char **detail)
{
	char	   *copy = pstrdup(url);
	char	   *query;
	char	   *authority;
	char	   *host_start;
	char	   *at;
	size_t		auth_len;
	struct amqp_connection_info ci;

	memset(t, 0, sizeof(*t));
	t->mandatory = true;
	/* librabbitmq knows the scheme in lower case only */
	for (char *p = copy; *p && *p != ':'; p++)
		*p = pg_ascii_tolower((unsigned char) *p);
	if (strncmp(copy, "amqp://", 7) != 0 && strncmp(copy, "amqps://", 8) != 0)
	{
		*detail = "It is not of the form amqp://host/ or amqps://host/.";
		return false;
	}
	if (strchr(copy, '#') != NULL)
	{
		*detail = "It has a fragment (#...).";
		return false;
	}
	query = strchr(copy, '?');
	if (query != NULL)
		*query++ = '\0';

	/* librabbitmq would take an empty host for localhost: say it */
	authority = strstr(copy, "://") + 3;
	auth_len = strcspn(authority, "/");
	at = NULL;
	for (size_t i = 0; i < auth_len; i++)
		if (authority[i] == '@')
			at = authority + i;
	host_start = at ? at + 1 : authority;
	if (host_start == authority + auth_len || *host_start == ':')
	{
		*detail = "It has no host.";
		return false;
	}

	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK || ci.port <= 0 || ci.port > 65535)
	{
		*detail = "librabbitmq cannot parse its user, password, host, port or vhost.";
		return false;
	}
	t->host = ci.host;
	t->port = ci.port;
	t->ssl = ci.ssl != 0;
	t->user = ci.user;
	t->password = ci.password;
	/* "amqp://host/" names the empty vhost, which RabbitMQ has not: take "/" */
	t->vhost = ci.vhost[0] == '\0' ? "/" : ci.vhost;
	t->exchange = "";

	while (query != NULL && *query != '\0')
	{
		char	   *item = query;
		char	   *amp = strchr(item, '&');
		char	   *value;
		bool		seen_before = false;

		query = amp ? amp + 1 : NULL;
		if (amp)
			*amp = '\0';
		value = strchr(item, '=');
		if (value == NULL)
		{
			*detail = "A query parameter has no value (name=value).";
			return false;
		}
		*value++ = '\0';
		if (!percent_decode(value))
		{
			*detail = "A query value has a bad percent-escape or a NUL.";
			return false;
		}
		if (strcmp(item, "exchange") == 0)
		{
			seen_before = t->exchange[0] != '\0';
			if (!valid_exchange(value))
			{
				*detail = "Its exchange is longer than 127 bytes or holds a character other than letters, digits, '-', '_', '.' and ':'.";
				return false;
			}
			t->exchange = value;
		}
		else if (strcmp(item, "routing_key") == 0)
		{
			seen_before = t->routing_key != NULL;
			if (strlen(value) > MAX_SHORTSTR)
			{
				*detail = "Its routing_key is longer than 255 bytes.";
				return false;
			}
			t->routing_key = value;
		}
		else if (strcmp(item, "mandatory") == 0)
		{
			if (strcmp(value, "true") == 0)
				t->mandatory = true;
			else if (strcmp(value, "false") == 0)
				t->mandatory = false;
			else
			{
				*detail = "Its mandatory is neither true nor false.";
				return false;
			}
		}
		else
		{
			*detail = "Its query has a parameter other than exchange, routing_key and mandatory.";
			return false;
		}
		if (seen_before)
		{
			*detail = "Its query repeats a parameter.";
			return false;
		}
	}
	return true;
}

void
pgcb_amqp_check_url(const char *url, const char *shown)
{
	AmqpTarget	t;
	const char *detail = NULL;

	if (!parse_target(url, &t, &detail))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("%s", detail),
				 errhint(AMQP_HINT_URL)));
	pgcb_netpolicy_check_host(t.host, shown);
}

void
pgcb_amqp_init(void)
{
	HASHCTL		info;

	if (amqp_cxt != NULL)
		return;
	amqp_cxt = AllocSetContextCreate(TopMemoryContext, "pg_callback amqp",
									 ALLOCSET_DEFAULT_SIZES);
	info.keysize = sizeof(int);
	info.entrysize = sizeof(AmqpLink);
	info.hcxt = amqp_cxt;
	links = hash_create("pg_callback amqp links", 16, &info,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		elog(ERROR, "epoll_create1 failed: %m");
	pgcb_http_wait_also(epoll_fd);
	n_done = next_done_at = 0;
}

static void
add_done(void *owner, bool ok, bool permanent, TimestampTz started_at, const char *why)
{
	AmqpDone   *d;

	if (n_done == cap_done)
	{
		int			newcap = Max(64, cap_done * 2);

		done = done == NULL ? MemoryContextAlloc(amqp_cxt, newcap * sizeof(AmqpDone)) :
			repalloc(done, newcap * sizeof(AmqpDone));
		cap_done = newcap;
	}
	d = &done[n_done++];
	d->owner = owner;
	d->result.ok = ok;
	d->result.permanent = permanent;
	d->result.latency_ms = (double) (GetCurrentTimestamp() - started_at) / 1000.0;
	strlcpy(d->result.error, why ? why : "", sizeof(d->result.error));
}

static void
complete(AmqpLink *l, AmqpPublish *p, bool ok, const char *why)
{
	if (ok && p->returned)
		add_done(p->owner, false, false, p->started_at, l->return_why);
	else
		add_done(p->owner, ok, false, p->started_at, why);
	dlist_delete(&p->node);
	pfree(p);
}

/* Fail what waits on l's connection and close it. */
static void
link_down(AmqpLink *l, const char *why)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &l->pending)
		complete(l, dlist_container(AmqpPublish, node, it.cur), false, why);
	if (l->conn != NULL)
	{
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, l->fd, NULL);
		/* closes the socket; the broker sees the connection drop */
		amqp_destroy_connection(l->conn);
		l->conn = NULL;
	}
	l->fd = -1;
	l->ready = false;
	l->return_state = RETURN_NONE;
}

/* A broker's reply to an RPC, in words (its own reply text: no secret of ours). */
static void
describe_reply(amqp_rpc_reply_t r, char *out, size_t len)
{
	switch (r.reply_type)
	{
		case AMQP_RESPONSE_NORMAL:
			snprintf(out, len, "no error");
			break;
		case AMQP_RESPONSE_NONE:
			snprintf(out, len, "no reply");
			break;
		case AMQP_RESPONSE_LIBRARY_EXCEPTION:
			snprintf(out, len, "%s", amqp_error_string2(r.library_error));
			break;
		case AMQP_RESPONSE_SERVER_EXCEPTION:
			if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
			{
				amqp_connection_close_t *m = r.reply.decoded;

				snprintf(out, len, "connection closed by the broker: %u %.*s", m->reply_code,
						 (int) m->reply_text.len, (char *) m->reply_text.bytes);
			}
			else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
			{
				amqp_channel_close_t *m = r.reply.decoded;

				snprintf(out, len, "channel closed by the broker: %u %.*s", m->reply_code,
						 (int) m->reply_text.len, (char *) m->reply_text.bytes);
			}
			else
				snprintf(out, len, "unexpected method 0x%08X from the broker", r.reply.id);
			break;
	}
}

/*
 * Whether the address the socket reached is allowed: the same policy as
 * HTTP (callback.ssrf_allowlist), judged after the name was resolved, so
 * that DNS rebinding cannot slip through, and before any AMQP byte is sent.
 */
static bool
peer_allowed(int fd, char *why, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t	sl = sizeof(ss);
	char		reason[PGCB_NETPOLICY_WHY_LEN];

	if (getpeername(fd, (struct sockaddr *) &ss, &sl) != 0)
	{
		snprintf(why, len, "could not read the broker's address: %s", strerror(errno));
		return false;
	}
	if (!pgcb_netpolicy_address_allowed((struct sockaddr *) &ss, reason, sizeof(reason)))
	{
		snprintf(why, len, "connection refused by the address policy: %s; "
				 "add the address to callback.ssrf_allowlist to allow it", reason);
		return false;
	}
	return true;
}

/* Connect, log in, open the channel and put it in confirm mode; false with l->down_why set. */
static bool
link_connect(AmqpLink *l, int timeout_ms)
{
	int			step_ms = Min(pgcb_connect_timeout_ms, timeout_ms);
	struct timeval tv;
	amqp_socket_t *sock;
	amqp_rpc_reply_t r;
	int			rc;
	char		why[PGCB_AMQP_ERROR_LEN];
	char		name[64];
	amqp_table_entry_t prop;
	amqp_table_t props;

	tv.tv_sec = step_ms / 1000;
	tv.tv_usec = (step_ms % 1000) * 1000;
	l->conn = amqp_new_connection();
	if (l->conn == NULL)
	{
		snprintf(l->down_why, sizeof(l->down_why), "out of memory making an AMQP connection");
		return false;
	}
	sock = l->t.ssl ? amqp_ssl_socket_new(l->conn) : amqp_tcp_socket_new(l->conn);
	if (sock == NULL)
	{
		snprintf(why, sizeof(why), "could not create the socket");
		goto fail;
	}
	if (l->t.ssl)
	{
		const char *ca = (pgcb_ca_file != NULL && pgcb_ca_file[0] != '\0') ?
			pgcb_ca_file : SYSTEM_CA_FILE;

		amqp_ssl_socket_set_verify_peer(sock, 1);
		amqp_ssl_socket_set_verify_hostname(sock, 1);
		rc = amqp_ssl_socket_set_cacert(sock, ca);
		if (rc != AMQP_STATUS_OK)
		{
			snprintf(why, sizeof(why), "could not read the CA file: %s", amqp_error_string2(rc));
			goto fail;
		}
	}
	rc = amqp_socket_open_noblock(sock, l->t.host, l->t.port, &tv);
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(why, sizeof(why), "%s", amqp_error_string2(rc));
		goto fail;
	}
	l->fd = amqp_get_sockfd(l->conn);
	if (!peer_allowed(l->fd, why, sizeof(why)))
		goto fail;

	amqp_set_handshake_timeout(l->conn, &tv);
	amqp_set_rpc_timeout(l->conn, &tv);
	/* the broker's management UI names the connection after the endpoint */
	snprintf(name, sizeof(name), "pg_callback endpoint %d", l->endpoint_id);
	prop.key = amqp_cstring_bytes("connection_name");
	prop.value.kind = AMQP_FIELD_KIND_UTF8;
	prop.value.value.bytes = amqp_cstring_bytes(name);
	props.num_entries = 1;
	props.entries = &prop;
	r = amqp_login_with_properties(l->conn, l->t.vhost, 0, FRAME_MAX, 0, &props,
								   AMQP_SASL_METHOD_PLAIN, l->t.user, l->t.password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		describe_reply(r, why, sizeof(why));
		goto fail;
	}
	amqp_channel_open(l->conn, CHANNEL);
	r = amqp_get_rpc_reply(l->conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		describe_reply(r, why, sizeof(why));
		goto fail;
	}
	amqp_confirm_select(l->conn, CHANNEL);
	r = amqp_get_rpc_reply(l->conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		describe_reply(r, why, sizeof(why));
		goto fail;
	}
	amqp_maybe_release_buffers(l->conn);

	{
		struct epoll_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.u32 = (uint32) l->endpoint_id;
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, l->fd, &ev) != 0)
		{
			snprintf(why, sizeof(why), "epoll_ctl failed: %s", strerror(errno));
			goto fail;
		}
	}
	l->next_tag = 1;
	l->return_state = RETURN_NONE;
	return true;

fail:
	snprintf(l->down_why, sizeof(l->down_why), "could not connect to the AMQP broker at %s:%d: %s",
			 l->t.host, l->t.port, why);
	amqp_destroy_connection(l->conn);
	l->conn = NULL;
	l->fd = -1;
	return false;
}

/*
 * Whether the socket's send buffer has room for need bytes more, so that
 * the publish writes without waiting.  A broker that blocks publishers
 * (a memory or disk alarm) stops reading, and the buffer fills.  An empty
 * buffer always has room: a body larger than the buffer may then wait for
 * the broker to read the rest.
 */
static bool
room_to_send(AmqpLink *l, size_t need)
{
	int			queued = 0;
	int			sndbuf = 0;
	socklen_t	sl = sizeof(sndbuf);

	if (ioctl(l->fd, TIOCOUTQ, &queued) != 0 ||
		getsockopt(l->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) != 0)
		return true;			/* cannot tell: write as before */
	return queued == 0 || (size_t) queued + need <= (size_t) sndbuf / 2;
}

/* A header of the message: a long string. */
static void
set_entry(amqp_table_entry_t *e, const char *key, int key_len, const char *value)
{
	e->key.bytes = (void *) key;
	e->key.len = key_len;
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(value);
}

void
pgcb_amqp_publish(int endpoint_id, const char *url, int timeout_ms,
				  const PgcbAmqpMessage *msg, void *owner)
{
	AmqpLink   *l;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();
	const char *routing_key;
	amqp_basic_properties_t props;
	amqp_bytes_t body;
	amqp_table_entry_t *entries;
	int			n_entries = 0;
	int			rc;
	AmqpPublish *p;
	char		why[PGCB_AMQP_ERROR_LEN];

	l = hash_search(links, &endpoint_id, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) l) + sizeof(int), 0, sizeof(AmqpLink) - sizeof(int));
		l->fd = -1;
		dlist_init(&l->pending);
		l->link_cxt = AllocSetContextCreate(amqp_cxt, "pg_callback amqp link",
											ALLOCSET_SMALL_SIZES);
	}
	if (l->url == NULL || strcmp(l->url, url) != 0)
	{
		MemoryContext old;
		const char *detail;

		link_down(l, "the endpoint's URL changed");
		MemoryContextReset(l->link_cxt);
		old = MemoryContextSwitchTo(l->link_cxt);
		l->url = pstrdup(url);
		l->bad_url = !parse_target(url, &l->t, &detail);
		MemoryContextSwitchTo(old);
		l->retry_connect_at = 0;
		l->connect_failures = 0;
	}
	if (l->bad_url)
	{
		add_done(owner, false, true, now, "the URL is not a valid amqp URL");
		return;
	}
	routing_key = l->t.routing_key ? l->t.routing_key : msg->event_type;
	if (strlen(routing_key) > MAX_SHORTSTR)
	{
		add_done(owner, false, true, now,
				 "the event type is longer than 255 bytes, too long for a routing key; "
				 "name one with routing_key= in the URL");
		return;
	}

	if (l->conn == NULL)
	{
		if (now < l->retry_connect_at)
		{
			add_done(owner, false, false, now, l->down_why);
			return;
		}
		if (!link_connect(l, timeout_ms))
		{
			int			wait_ms = RECONNECT_MS << Min(l->connect_failures, 3);

			l->connect_failures++;
			l->retry_connect_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  Min(wait_ms, RECONNECT_MAX_MS));
			add_done(owner, false, false, now, l->down_why);
			return;
		}
		l->connect_failures = 0;
	}
	if (!room_to_send(l, (size_t) msg->body_len + 1024))
	{
		snprintf(why, sizeof(why), "the AMQP broker at %s:%d is not reading (the socket's send buffer is full)",
				 l->t.host, l->t.port);
		add_done(owner, false, false, now, why);
		return;
	}

	entries = palloc(sizeof(amqp_table_entry_t) * (3 + msg->n_headers));
	set_entry(&entries[n_entries++], "webhook-id", 10, msg->webhook_id);
	{
		char	   *ts = psprintf(INT64_FORMAT, msg->timestamp);

		set_entry(&entries[n_entries++], "webhook-timestamp", 17, ts);
	}
	set_entry(&entries[n_entries++], "webhook-signature", 17, msg->signature);
	for (int i = 0; i < msg->n_headers; i++)
	{
		const char *h = msg->headers[i];
		const char *colon = strchr(h, ':');
		const char *v;

		if (colon == NULL)
			continue;
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		set_entry(&entries[n_entries++], h, (int) (colon - h), v);
	}

	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
		AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG |
		AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(msg->webhook_id);
	props.timestamp = (uint64_t) msg->timestamp;
	props.type = amqp_cstring_bytes(msg->event_type);
	props.app_id = amqp_cstring_bytes("pg_callback");
	props.headers.num_entries = n_entries;
	props.headers.entries = entries;

	body.len = (size_t) msg->body_len;
	body.bytes = (void *) msg->body;
	rc = amqp_basic_publish(l->conn, CHANNEL, amqp_cstring_bytes(l->t.exchange),
							amqp_cstring_bytes(routing_key), l->t.mandatory ? 1 : 0, 0,
							&props, body);
	pfree(entries);
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(why, sizeof(why), "publishing to the AMQP broker at %s:%d failed: %s",
				 l->t.host, l->t.port, amqp_error_string2(rc));
		link_down(l, why);
		add_done(owner, false, false, now, why);
		return;
	}

	l->last_publish_at = now;
	p = MemoryContextAllocZero(amqp_cxt, sizeof(AmqpPublish));
	p->tag = l->next_tag++;
	p->owner = owner;
	p->started_at = now;
	p->deadline = TimestampTzPlusMilliseconds(now, timeout_ms);
	strlcpy(p->webhook_id, msg->webhook_id, sizeof(p->webhook_id));
	dlist_push_tail(&l->pending, &p->node);
}

/* basic.ack / basic.nack: settle the publishes the confirm covers. */
static bool
confirm(AmqpLink *l, uint64 tag, bool multiple, bool ok)
{
	dlist_mutable_iter it;
	char		why[PGCB_AMQP_ERROR_LEN];
	bool		matched = false;

	snprintf(why, sizeof(why), "the AMQP broker at %s:%d refused the message (basic.nack)",
			 l->t.host, l->t.port);
	dlist_foreach_modify(it, &l->pending)
	{
		AmqpPublish *p = dlist_container(AmqpPublish, node, it.cur);

		if (p->tag > tag)
			break;
		if (multiple || p->tag == tag)
		{
			complete(l, p, ok, why);
			matched = true;
		}
	}
	return matched;
}

/*
 * A confirm for a tag never published on the channel: the broker does not
 * follow the protocol, and the connection is dropped (its publishes fail
 * and are retried) rather than read on.  A late confirm of a publish that
 * already timed out is only ignored.
 */
static void
unknown_tag(AmqpLink *l, uint64 tag)
{
	char		why[PGCB_AMQP_ERROR_LEN];

	snprintf(why, sizeof(why),
			 "the AMQP broker at %s:%d confirmed delivery tag %llu, which no message waits for",
			 l->t.host, l->t.port, (unsigned long long) tag);
	link_down(l, why);
}

/* The content of a basic.return: its header names the message that came back. */
static void
returned_content(AmqpLink *l, amqp_frame_t *f)
{
	if (f->frame_type == AMQP_FRAME_HEADER && l->return_state == RETURN_HEADER)
	{
		amqp_basic_properties_t *props = f->payload.properties.decoded;
		dlist_iter it;

		if (props != NULL && (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG))
		{
			dlist_foreach(it, &l->pending)
			{
				AmqpPublish *p = dlist_container(AmqpPublish, node, it.cur);

				if (strlen(p->webhook_id) == props->message_id.len &&
					memcmp(p->webhook_id, props->message_id.bytes, props->message_id.len) == 0)
					p->returned = true;
			}
		}
		l->return_left = f->payload.properties.body_size;
		l->return_state = l->return_left > 0 ? RETURN_BODY : RETURN_NONE;
	}
	else if (f->frame_type == AMQP_FRAME_BODY && l->return_state == RETURN_BODY)
	{
		size_t		n = f->payload.body_fragment.len;

		l->return_left = n >= l->return_left ? 0 : l->return_left - n;
		if (l->return_left == 0)
			l->return_state = RETURN_NONE;
	}
}

/*
 * At most this many frames per read: a broker that floods frames must not
 * hold the worker (the socket stays readable, so the wait comes back).
 */
#define MAX_FRAMES_PER_READ 1024

/* Read the frames that have arrived on l, without waiting. */
static void
link_read(AmqpLink *l)
{
	char		why[PGCB_AMQP_ERROR_LEN];
	int			frames = 0;

	while (l->conn != NULL && frames++ < MAX_FRAMES_PER_READ)
	{
		amqp_frame_t f;
		struct timeval zero = {0, 0};
		int			rc = amqp_simple_wait_frame_noblock(l->conn, &f, &zero);

		if (rc == AMQP_STATUS_TIMEOUT)
			break;
		if (rc != AMQP_STATUS_OK)
		{
			snprintf(why, sizeof(why), "connection to the AMQP broker at %s:%d lost: %s",
					 l->t.host, l->t.port, amqp_error_string2(rc));
			link_down(l, why);
			return;
		}
		if (f.frame_type != AMQP_FRAME_METHOD)
		{
			returned_content(l, &f);
			continue;
		}
		switch (f.payload.method.id)
		{
			case AMQP_BASIC_ACK_METHOD:
				{
					amqp_basic_ack_t *m = f.payload.method.decoded;

					if (!confirm(l, m->delivery_tag, m->multiple != 0, true) &&
						(m->delivery_tag == 0 || m->delivery_tag >= l->next_tag))
					{
						unknown_tag(l, m->delivery_tag);
						return;
					}
					break;
				}
			case AMQP_BASIC_NACK_METHOD:
				{
					amqp_basic_nack_t *m = f.payload.method.decoded;

					if (!confirm(l, m->delivery_tag, m->multiple != 0, false) &&
						(m->delivery_tag == 0 || m->delivery_tag >= l->next_tag))
					{
						unknown_tag(l, m->delivery_tag);
						return;
					}
					break;
				}
			case AMQP_BASIC_RETURN_METHOD:
				{
					amqp_basic_return_t *m = f.payload.method.decoded;

					snprintf(l->return_why, sizeof(l->return_why),
							 "the AMQP broker at %s:%d returned the message: %u %.*s (exchange \"%.*s\", routing key \"%.*s\")",
							 l->t.host, l->t.port, m->reply_code,
							 (int) m->reply_text.len, (char *) m->reply_text.bytes,
							 (int) m->exchange.len, (char *) m->exchange.bytes,
							 (int) m->routing_key.len, (char *) m->routing_key.bytes);
					l->return_state = RETURN_HEADER;
					break;
				}
			case AMQP_CHANNEL_CLOSE_METHOD:
				{
					amqp_channel_close_t *m = f.payload.method.decoded;

					snprintf(why, sizeof(why), "the AMQP broker at %s:%d closed the channel: %u %.*s",
							 l->t.host, l->t.port, m->reply_code,
							 (int) m->reply_text.len, (char *) m->reply_text.bytes);
					link_down(l, why);
					return;
				}
			case AMQP_CONNECTION_CLOSE_METHOD:
				{
					amqp_connection_close_t *m = f.payload.method.decoded;

					snprintf(why, sizeof(why), "the AMQP broker at %s:%d closed the connection: %u %.*s",
							 l->t.host, l->t.port, m->reply_code,
							 (int) m->reply_text.len, (char *) m->reply_text.bytes);
					link_down(l, why);
					return;
				}
			default:
				/* connection.blocked and the like: the send-buffer check covers them */
				break;
		}
		/* the frame's memory, before the next one: flat however many come */
		amqp_maybe_release_buffers(l->conn);
	}
	if (l->conn != NULL)
		amqp_maybe_release_buffers(l->conn);
}

void
pgcb_amqp_poll(void)
{
	struct epoll_event events[64];
	int			n;
	HASH_SEQ_STATUS seq;
	AmqpLink   *l;
	TimestampTz now;

	if (links == NULL)
		return;
	n = epoll_wait(epoll_fd, events, lengthof(events), 0);
	for (int i = 0; i < n; i++)
	{
		int			id = (int) events[i].data.u32;

		l = hash_search(links, &id, HASH_FIND, NULL);
		if (l != NULL)
			l->ready = true;
	}
	now = GetCurrentTimestamp();
	hash_seq_init(&seq, links);
	while ((l = hash_seq_search(&seq)) != NULL)
	{
		dlist_iter	it;

		if (l->conn == NULL)
			continue;
		/* frames already read into librabbitmq's buffer raise no epoll event */
		if (l->ready || amqp_data_in_buffer(l->conn) || amqp_frames_enqueued(l->conn))
		{
			l->ready = false;
			link_read(l);
		}
		if (l->conn != NULL && dlist_is_empty(&l->pending) &&
			now - l->last_publish_at > (TimestampTz) IDLE_CLOSE_MS * 1000)
			link_down(l, NULL);
		dlist_foreach(it, &l->pending)
		{
			AmqpPublish *p = dlist_container(AmqpPublish, node, it.cur);

			if (p->deadline <= now)
			{
				char		why[PGCB_AMQP_ERROR_LEN];

				snprintf(why, sizeof(why), "no confirm from the AMQP broker at %s:%d within %ld ms",
						 l->t.host, l->t.port,
						 (long) ((p->deadline - p->started_at) / 1000));
				link_down(l, why);
				break;
			}
		}
	}
}

void *
pgcb_amqp_next_done(PgcbAmqpResult *result)
{
	void	   *owner;

	if (next_done_at >= n_done)
	{
		n_done = next_done_at = 0;
		return NULL;
	}
	owner = done[next_done_at].owner;
	*result = done[next_done_at].result;
	next_done_at++;
	return owner;
}

long
pgcb_amqp_ms_until_due(void)
{
	HASH_SEQ_STATUS seq;
	AmqpLink   *l;
	TimestampTz first = 0;
	long		ms;

	if (links == NULL)
		return -1;
	if (next_done_at < n_done)
		return 0;
	hash_seq_init(&seq, links);
	while ((l = hash_seq_search(&seq)) != NULL)
	{
		dlist_iter	it;

		if (l->conn != NULL && (amqp_data_in_buffer(l->conn) || amqp_frames_enqueued(l->conn)))
		{
			hash_seq_term(&seq);
			return 0;
		}
		dlist_foreach(it, &l->pending)
		{
			AmqpPublish *p = dlist_container(AmqpPublish, node, it.cur);

			if (first == 0 || p->deadline < first)
				first = p->deadline;
		}
	}
	if (first == 0)
		return -1;
	ms = (long) ((first - GetCurrentTimestamp()) / 1000);
	return Max(ms, 0) + 1;
}

void
pgcb_amqp_shutdown(void)
{
	HASH_SEQ_STATUS seq;
	AmqpLink   *l;

	if (amqp_cxt == NULL)
		return;
	if (links != NULL)			/* NULL: its set-up failed before it */
	{
		hash_seq_init(&seq, links);
		while ((l = hash_seq_search(&seq)) != NULL)
			if (l->conn != NULL)
				amqp_destroy_connection(l->conn);
	}
	if (epoll_fd >= 0)
		close(epoll_fd);
	epoll_fd = -1;
	MemoryContextDelete(amqp_cxt);
	amqp_cxt = NULL;
	links = NULL;
	done = NULL;
	n_done = cap_done = next_done_at = 0;
}
