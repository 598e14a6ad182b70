/*
 * curl_floor.c
 *		The least a libcurl client pays per signed webhook request: the
 *		drain's baseline for "what is not PostgreSQL's" (bench part 1).
 *
 * It does what the worker does around each request, and nothing of the
 * queue: one curl multi handle driven by socket callbacks and epoll (as
 * src/http.c), easy handles reused with their fixed options set once,
 * connections kept alive, up to `inflight` requests at a time, and each
 * request signed per Standard Webhooks (HMAC-SHA256 of id.timestamp.body,
 * base64) with the same headers.  It prints the CPU it used per request
 * (user + system, getrusage).  A lower bound for the worker's HTTP part: it
 * leaves out what the worker adds around libcurl (the network policy's
 * socket hooks, the WaitEventSet over the multi's sockets, reading and
 * keeping the response) and sends one fixed body.
 *
 *	  curl_floor URL REQUESTS INFLIGHT BODY
 *
 * Output, one JSON line: requests, failures, seconds, per_s,
 * cpu_us_per_request (user + system), user_us, sys_us.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "floor.h"

#define MAX_EVENTS 256

typedef struct Request
{
	CURL	   *easy;
	struct curl_slist hdr[5];	/* no malloc per request, as the worker */
	char		id[64];
	char		ts[64];
	char		sig[128];
} Request;

static CURLM *multi;
static int	epfd;
static long timeout_ms = -1;

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	(void) easy;
	(void) userp;
	if (what == CURL_POLL_REMOVE)
	{
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;
	if (socketp == NULL)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(multi, s, (void *) 1);
	}
	else if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int
on_timer(CURLM *m, long ms, void *userp)
{
	(void) m;
	(void) userp;
	timeout_ms = ms;
	return 0;
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void) ptr;
	(void) userdata;
	return size * nmemb;
}

static void
set_header(struct curl_slist *node, char *text, struct curl_slist *next)
{
	node->data = text;
	node->next = next;
}

/* keyed once (floor.h) */
static EVP_MAC_CTX *keyed;

/* Sign and start request number seq on r's handle. */
static void
start(Request *r, long seq, const char *url, const char *body, size_t body_len)
{
	unsigned char mac[32];
	size_t		mac_len = 0;
	char		b64[64];
	int			id_at = (int) strlen("webhook-id: ");
	int			ts_at = (int) strlen("webhook-timestamp: ");
	int			id_len = snprintf(r->id, sizeof(r->id), "webhook-id: msg_%032lx", seq);
	int			ts_len = snprintf(r->ts, sizeof(r->ts), "webhook-timestamp: %ld", (long) time(NULL));

	/* HMAC-SHA256 over "id.timestamp.body", base64 */
	if (!EVP_MAC_init(keyed, NULL, 0, NULL) ||
		!EVP_MAC_update(keyed, (const unsigned char *) r->id + id_at, id_len - id_at) ||
		!EVP_MAC_update(keyed, (const unsigned char *) ".", 1) ||
		!EVP_MAC_update(keyed, (const unsigned char *) r->ts + ts_at, ts_len - ts_at) ||
		!EVP_MAC_update(keyed, (const unsigned char *) ".", 1) ||
		!EVP_MAC_update(keyed, (const unsigned char *) body, body_len) ||
		!EVP_MAC_final(keyed, mac, &mac_len, sizeof(mac)))
	{
		fprintf(stderr, "curl_floor: HMAC failed\n");
		exit(2);
	}
	EVP_EncodeBlock((unsigned char *) b64, mac, (int) mac_len);
	snprintf(r->sig, sizeof(r->sig), "webhook-signature: v1,%s", b64);

	set_header(&r->hdr[4], r->sig, NULL);
	set_header(&r->hdr[3], r->ts, &r->hdr[4]);
	set_header(&r->hdr[2], r->id, &r->hdr[3]);
	set_header(&r->hdr[1], "Expect:", &r->hdr[2]);
	set_header(&r->hdr[0], "Content-Type: application/json", &r->hdr[1]);

	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long) body_len);
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, &r->hdr[0]);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	if (curl_multi_add_handle(multi, r->easy) != CURLM_OK)
	{
		fprintf(stderr, "curl_floor: curl_multi_add_handle failed\n");
		exit(2);
	}
}

int
main(int argc, char **argv)
{
	const char *url;
	long		total;
	int			inflight;
	const char *body;
	size_t		body_len;
	Request    *reqs;
	long		started = 0;
	long		done = 0;
	long		failures = 0;
	int			still;
	FloorWindow from,
				to;

	if (argc != 5 || (total = atol(argv[2])) <= 0 || (inflight = atoi(argv[3])) <= 0)
	{
		fprintf(stderr, "usage: curl_floor URL REQUESTS INFLIGHT BODY\n");
		return 2;
	}
	url = argv[1];
	body = argv[4];
	body_len = strlen(body);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	keyed = floor_key_once("curl_floor");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) inflight);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) inflight);

	reqs = calloc(inflight, sizeof(Request));
	for (int i = 0; i < inflight; i++)
	{
		CURL	   *e = curl_easy_init();

		/* the worker's fixed options (src/delivery.c, set_fixed_options) */
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_USERAGENT, "pg_callback/1.0");
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
		reqs[i].easy = e;
	}

	floor_mark(&from);
	for (int i = 0; i < inflight && started < total; i++)
		start(&reqs[i], started++, url, body, body_len);
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);

	while (done < total)
	{
		struct epoll_event evs[MAX_EVENTS];
		int			n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms < 0 ? 1000 : (int) timeout_ms);
		CURLMsg    *msg;
		int			left;

		if (n == 0)
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
		for (int i = 0; i < n; i++)
		{
			int			flags = 0;

			if (evs[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, evs[i].data.fd, flags, &still);
		}
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			Request    *r;
			long		code = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			if (msg->data.result != CURLE_OK || code < 200 || code > 299)
				failures++;
			curl_multi_remove_handle(multi, r->easy);
			done++;
			if (started < total)
				start(r, started++, url, body, body_len);
		}
	}
	floor_mark(&to);
	floor_report(&from, &to, done, failures);

	for (int i = 0; i < inflight; i++)
		curl_easy_cleanup(reqs[i].easy);
	curl_multi_cleanup(multi);
	EVP_MAC_CTX_free(keyed);
	curl_global_cleanup();
	free(reqs);
	return failures > 0 ? 1 : 0;
}
