/*
 * raw_floor.c
 *		What a signed webhook request costs a client without libcurl: the
 *		drain's second floor (bench part 1), beside curl_floor.c.
 *
 * curl_floor.c measures what one request costs any libcurl client; this
 * measures what it costs at all.  The same requests, byte for byte as
 * libcurl sends them (request line, Host, User-Agent, Accept, the same
 * five headers, Content-Length, the body), signed the same way (one HMAC
 * context keyed once), over the same number of kept-alive connections,
 * driven by epoll; but each request is formatted into one buffer and sent
 * with one write(), and each response read with one read() and parsed for
 * its status line and Content-Length only.  So the gap between the two
 * floors is libcurl's own work per request (its transfer set-up, URL
 * parsing, header printf, internal polls and socket-callback churn), and
 * the gap between this floor and wrk is signing and formatting.
 *
 * With --curl-connections, libcurl makes the connections
 * (CURLOPT_CONNECT_ONLY, so that its socket options and callbacks, DNS and
 * TLS would be the worker's as today) and each request goes through
 * curl_easy_send() and each response through curl_easy_recv(), still one
 * call each: what a worker that wrote its own HTTP/1.1 on libcurl's
 * connections would pay.
 *
 * Its connections are made before the timed window, where curl_floor.c's
 * first transfers connect inside it (about 0.2-0.3 us per request over
 * 100,000 requests, measured).  It reads once per readiness: on a TLS
 * connection a worker would read until CURLE_AGAIN.
 *
 * It is a measurement, not an HTTP client: it talks to the bench's nginx
 * (`return 204`, keep-alive without limit) and stops with an error on
 * anything else (a closed connection, a chunked or oversized response, a
 * short write).
 *
 *	  raw_floor [--curl-connections] URL REQUESTS INFLIGHT BODY
 *
 * URL is http://IPv4:PORT/PATH.  Output, one JSON line, as curl_floor's:
 * requests, failures, seconds, per_s, cpu_us_per_request (user + system),
 * user_us, sys_us.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "floor.h"

#define MAX_EVENTS 256
#define RESPONSE_MAX 8192

typedef struct Conn
{
	int			fd;
	CURL	   *easy;			/* with --curl-connections: its connection */
	int			have;			/* bytes of response read so far */
	char		in[RESPONSE_MAX];
} Conn;

static EVP_MAC_CTX *keyed;		/* keyed once (floor.h) */
static char host[64];			/* "IPv4:PORT", as libcurl writes Host */
static char path[256];
static bool via_curl;

static void
fail(const char *what)
{
	fprintf(stderr, "raw_floor: %s\n", what);
	exit(2);
}

/* Sign request number seq and send it on c with one write() or curl_easy_send(). */
static void
send_request(Conn *c, long seq, const char *body, size_t body_len)
{
	char		id[64];
	char		ts[32];
	unsigned char mac[32];
	size_t		mac_len = 0;
	char		b64[64];
	char		req[8192];
	int			id_len = snprintf(id, sizeof(id), "msg_%032lx", seq);
	int			ts_len = snprintf(ts, sizeof(ts), "%ld", (long) time(NULL));
	int			head;

	if (!EVP_MAC_init(keyed, NULL, 0, NULL) ||
		!EVP_MAC_update(keyed, (const unsigned char *) id, id_len) ||
		!EVP_MAC_update(keyed, (const unsigned char *) ".", 1) ||
		!EVP_MAC_update(keyed, (const unsigned char *) ts, ts_len) ||
		!EVP_MAC_update(keyed, (const unsigned char *) ".", 1) ||
		!EVP_MAC_update(keyed, (const unsigned char *) body, body_len) ||
		!EVP_MAC_final(keyed, mac, &mac_len, sizeof(mac)))
		fail("HMAC failed");
	EVP_EncodeBlock((unsigned char *) b64, mac, (int) mac_len);

	/* the header order libcurl 7.88 writes for curl_floor.c's options */
	head = snprintf(req, sizeof(req),
					"POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pg_callback/1.0\r\nAccept: */*\r\n"
					"Content-Type: application/json\r\nwebhook-id: %s\r\nwebhook-timestamp: %s\r\n"
					"webhook-signature: v1,%s\r\nContent-Length: %zu\r\n\r\n",
					path, host, id, ts, b64, body_len);
	if (head < 0 || (size_t) head + body_len > sizeof(req))
		fail("request too long");
	memcpy(req + head, body, body_len);
	if (via_curl)
	{
		size_t		sent = 0;

		if (curl_easy_send(c->easy, req, head + body_len, &sent) != CURLE_OK || sent != head + body_len)
			fail("short curl_easy_send (the floor sends each request with one call)");
	}
	else if (write(c->fd, req, head + body_len) != (ssize_t) (head + body_len))
		fail("short write (the floor sends each request with one write)");
}

/*
 * Length of the complete response at the start of c->in, 0 if more is
 * needed; *status gets its status code.
 */
static int
response_length(Conn *c, int *status)
{
	char	   *end = memmem(c->in, c->have, "\r\n\r\n", 4);
	int			head;
	long		content_length = 0;

	if (end == NULL)
	{
		if (c->have == RESPONSE_MAX)
			fail("response head too long");
		return 0;
	}
	head = (int) (end - c->in) + 4;
	if (head < 12 || strncmp(c->in, "HTTP/1.1 ", 9) != 0)
		fail("not an HTTP/1.1 response");
	*status = atoi(c->in + 9);
	for (char *line = memmem(c->in, head, "\r\n", 2); line && line < end; line = memmem(line + 2, end - line, "\r\n", 2))
	{
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
			content_length = atol(line + 17);
		else if (strncasecmp(line + 2, "Transfer-Encoding:", 18) == 0)
			fail("chunked response (the floor expects nginx's return 204)");
		else if (strncasecmp(line + 2, "Connection: close", 17) == 0)
			fail("the server closes the connection (the floor expects keep-alive)");
	}
	if (content_length < 0 || head + content_length > RESPONSE_MAX)
		fail("response too long");
	return c->have >= head + content_length ? head + (int) content_length : 0;
}

int
main(int argc, char **argv)
{
	const char *url;
	long		total;
	int			inflight;
	const char *body;
	size_t		body_len;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	char		ip[32];
	int			port;
	int			epfd;
	Conn	   *conns;
	long		started = 0;
	long		done = 0;
	long		failures = 0;
	FloorWindow from,
				to;

	if (argc > 1 && strcmp(argv[1], "--curl-connections") == 0)
	{
		via_curl = true;
		argv++;
		argc--;
	}
	if (argc != 5 || (total = atol(argv[2])) <= 0 || (inflight = atoi(argv[3])) <= 0)
	{
		fprintf(stderr, "usage: raw_floor [--curl-connections] URL REQUESTS INFLIGHT BODY\n");
		return 2;
	}
	url = argv[1];
	if (sscanf(argv[1], "http://%31[0-9.]:%d%255s", ip, &port, path) != 3 ||
		inet_pton(AF_INET, ip, &addr.sin_addr) != 1 || port <= 0 || port > 65535 || path[0] != '/')
		fail("URL must be http://IPv4:PORT/PATH");
	addr.sin_port = htons(port);
	snprintf(host, sizeof(host), "%s:%d", ip, port);
	body = argv[4];
	body_len = strlen(body);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	keyed = floor_key_once("raw_floor");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc(inflight, sizeof(Conn));
	if (epfd < 0 || conns == NULL)
		fail("out of resources");
	/* connections first, as libcurl's are once its first requests are done */
	for (int i = 0; i < inflight; i++)
	{
		int			one = 1;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};

		if (via_curl)
		{
			curl_socket_t s = CURL_SOCKET_BAD;

			conns[i].easy = curl_easy_init();
			if (conns[i].easy == NULL)
				fail("curl_easy_init failed");
			curl_easy_setopt(conns[i].easy, CURLOPT_URL, url);
			curl_easy_setopt(conns[i].easy, CURLOPT_CONNECT_ONLY, 1L);
			curl_easy_setopt(conns[i].easy, CURLOPT_NOSIGNAL, 1L);
			curl_easy_setopt(conns[i].easy, CURLOPT_NOPROXY, "*");
			if (curl_easy_perform(conns[i].easy) != CURLE_OK ||
				curl_easy_getinfo(conns[i].easy, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK ||
				s == CURL_SOCKET_BAD)
				fail("libcurl could not connect");
			conns[i].fd = (int) s;
		}
		else
		{
			conns[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (conns[i].fd < 0 || connect(conns[i].fd, (struct sockaddr *) &addr, sizeof(addr)) != 0)
				fail(strerror(errno));
			setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0)
			fail(strerror(errno));
	}

	floor_mark(&from);
	for (int i = 0; i < inflight && started < total; i++)
		send_request(&conns[i], started++, body, body_len);
	while (done < total)
	{
		struct epoll_event evs[MAX_EVENTS];
		int			n = epoll_wait(epfd, evs, MAX_EVENTS, 30000);

		if (n == 0)
			fail("no response within 30 s");
		if (n < 0 && errno != EINTR)
			fail(strerror(errno));
		for (int i = 0; i < n; i++)
		{
			Conn	   *c = evs[i].data.ptr;
			ssize_t		got;
			int			len;
			int			status = 0;

			if (via_curl)
			{
				size_t		n_read = 0;
				CURLcode	rc = curl_easy_recv(c->easy, c->in + c->have, RESPONSE_MAX - c->have, &n_read);

				if (rc == CURLE_AGAIN)
					continue;
				if (rc != CURLE_OK)
					fail(curl_easy_strerror(rc));
				got = (ssize_t) n_read;
			}
			else
				got = read(c->fd, c->in + c->have, RESPONSE_MAX - c->have);
			if (got == 0)
				fail("the server closed a connection");
			if (got < 0)
			{
				if (errno == EAGAIN || errno == EINTR)
					continue;
				fail(strerror(errno));
			}
			c->have += (int) got;
			/* one request in flight per connection: at most one response */
			if ((len = response_length(c, &status)) == 0)
				continue;
			if (len != c->have)
				fail("bytes after the response (one request in flight per connection)");
			c->have = 0;
			if (status < 200 || status > 299)
				failures++;
			done++;
			if (started < total)
				send_request(c, started++, body, body_len);
		}
	}
	floor_mark(&to);
	floor_report(&from, &to, done, failures);
	return failures > 0 ? 1 : 0;
}
