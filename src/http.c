/*
 * http.c
 *		Owns the curl multi handle, the pool of easy handles and the wait.
 *
 * curl tells us which sockets it wants watched (socket callback) and when
 * it next needs to run (timer callback).  The sockets go into an epoll set
 * of our own; that one descriptor joins the latch and postmaster death in a
 * WaitEventSet built once, so no set is rebuilt as connections come and go.
 * Connections are kept in the multi handle's cache and reused.
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "guc.h"
#include "http.h"
#include "http1_response.h"

#define MAX_EPOLL_EVENTS 256

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static WaitEventSet *wait_set = NULL;
static int	running = 0;			/* transfers added, not yet handed back */
static TimestampTz curl_deadline = 0;	/* 0: curl wants no timer */

/* Free easy handles; CURL pointers are malloc'd by curl, the array by us. */
static CURL **pool = NULL;
static int	pool_len = 0;
static int	pool_cap = 0;

/*
 * Bumped by each pgcb_http_apply_settings(): a handle lent out before it
 * (a request in flight across a reload) keeps the old callback.ca_file and
 * is freed when given back, not pooled.
 */
static uint64 settings_gen = 0;

/*
 * Watch s in epfd as curl asks (what), its events carrying data: for the
 * socket callbacks of both multi handles (here and http1.c's connector), so
 * it never allocates or raises.  curl_multi_assign marks a socket we added.
 */
void
pgcb_http_watch_curl_socket(CURLM *m, int epfd, curl_socket_t s, int what, void *socketp,
							epoll_data_t data)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* curl may already have closed it; ENOENT/EBADF are fine */
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		return;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data = data;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;
	if (socketp == NULL)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(m, s, (void *) 1);
	}
	else if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
}

static int
socket_callback(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	epoll_data_t data = {.fd = s};

	pgcb_http_watch_curl_socket(multi, epoll_fd, s, what, socketp, data);
	return 0;
}

static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		curl_deadline = 0;
	else
		curl_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static void
http_atexit(int code, Datum arg)
{
	pgcb_http_shutdown();
}

void
pgcb_http_init(void)
{
	static bool global_done = false;

	if (multi != NULL)
		return;
	if (!global_done)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			elog(ERROR, "curl_global_init failed");
		global_done = true;
		on_proc_exit(http_atexit, (Datum) 0);
	}
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		elog(ERROR, "epoll_create1 failed: %m");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback);
	pgcb_http_apply_settings();

	/* then other transports' descriptors (pgcb_http_wait_also): http1.c, amqp */
	wait_set = CreateWaitEventSet(TopMemoryContext, 5);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	/* none in single-user mode, as WaitLatch leaves it out there */
	if (IsUnderPostmaster)
		AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, epoll_fd, NULL, NULL);
	running = 0;
	curl_deadline = 0;
}

/*
 * Wake the wait for fd too: another transport (amqp.c) watches its own
 * sockets through one descriptor, as curl's sit behind epoll_fd.  Once per
 * pgcb_http_init; the caller polls its descriptor after each wait.
 */
void
pgcb_http_wait_also(int fd)
{
	Assert(wait_set != NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, fd, NULL, NULL);
}

/*
 * callback.max_connections is a reload setting: the worker calls this after
 * each reload, process_callbacks() at each call.
 */
void
pgcb_http_apply_settings(void)
{
	/* pooled handles keep their options (callback.ca_file): start anew */
	for (int i = 0; i < pool_len; i++)
		curl_easy_cleanup(pool[i]);
	pool_len = 0;
	settings_gen++;
	if (multi == NULL)
		return;
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) pgcb_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) pgcb_max_connections);
}

/*
 * Drop a transfer still in flight and free its handle.  For shutdown only:
 * curl_multi_cleanup() leaves attached easy handles (and their buffers)
 * allocated, so each one must be removed and cleaned up before it.
 */
void
pgcb_http_abandon(CURL *easy)
{
	if (easy == NULL)
		return;
	if (multi != NULL)
		(void) curl_multi_remove_handle(multi, easy);
	curl_easy_cleanup(easy);
}

void
pgcb_http_shutdown(void)
{
	if (multi != NULL)
	{
		/*
		 * The caller has abandoned the transfers in flight (their rows come
		 * back by lease or with the caller's rollback); this closes the
		 * cached connections.
		 */
		curl_multi_cleanup(multi);
		multi = NULL;
	}
	for (int i = 0; i < pool_len; i++)
		curl_easy_cleanup(pool[i]);
	pool_len = 0;
	if (wait_set != NULL)
	{
		FreeWaitEventSet(wait_set);
		wait_set = NULL;
	}
	if (epoll_fd >= 0)
	{
		close(epoll_fd);
		epoll_fd = -1;
	}
	running = 0;
}

CURL *
pgcb_http_easy_get(bool *fresh, uint64 *gen)
{
	CURL	   *easy;

	*gen = settings_gen;
	*fresh = pool_len == 0;
	if (pool_len > 0)
		easy = pool[--pool_len];
	else
	{
		easy = curl_easy_init();
		if (easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a curl handle")));
	}
	return easy;
}

void
pgcb_http_easy_put(CURL *easy, uint64 gen)
{
	if (gen != settings_gen)
	{
		curl_easy_cleanup(easy);
		return;
	}
	/* its request's memory is freed next: let nothing write there meanwhile */
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	if (pool_len == pool_cap)
	{
		int			newcap = Max(64, pool_cap * 2);

		if (pool == NULL)
			pool = MemoryContextAlloc(TopMemoryContext, newcap * sizeof(CURL *));
		else
			pool = repalloc(pool, newcap * sizeof(CURL *));
		pool_cap = newcap;
	}
	pool[pool_len++] = easy;
}

void
pgcb_http_start(CURL *easy)
{
	CURLMcode	rc = curl_multi_add_handle(multi, easy);

	if (rc != CURLM_OK)
		elog(ERROR, "curl_multi_add_handle failed: %s", curl_multi_strerror(rc));
	running++;
}

static void
drive_sockets(void)
{
	struct epoll_event events[MAX_EPOLL_EVENTS];
	int			n;
	int			still;

	n = epoll_wait(epoll_fd, events, MAX_EPOLL_EVENTS, 0);
	for (int i = 0; i < n; i++)
		curl_multi_socket_action(multi, events[i].data.fd,
								 pgcb_http_curl_flags(events[i].events), &still);
}

/* What epoll reported, as curl_multi_socket_action's flags. */
int
pgcb_http_curl_flags(uint32 events)
{
	int			flags = 0;

	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	return flags;
}

static void
drive_timer_if_due(void)
{
	int			still;

	if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
}

bool
pgcb_http_wait(long timeout_ms)
{
	WaitEvent	events[5];
	int			nevents;
	bool		latch_set = false;
	bool		sockets_ready = false;

	if (curl_deadline != 0)
	{
		long		curl_ms = (long) ((curl_deadline - GetCurrentTimestamp()) / 1000);

		curl_ms = Max(curl_ms, 0);
		if (timeout_ms < 0 || curl_ms < timeout_ms)
			timeout_ms = curl_ms;
	}

	nevents = WaitEventSetWait(wait_set, timeout_ms, events, lengthof(events), PGCB_WAIT_EVENT);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			sockets_ready = true;
	}

	/*
	 * A set latch makes WaitEventSetWait return before it polls the sockets:
	 * under a stream of commits it is always set, so look at curl's sockets
	 * then too, or responses would wait for curl's timer.
	 */
	if (sockets_ready || (latch_set && running > 0))
		drive_sockets();
	drive_timer_if_due();
	return latch_set;
}

CURL *
pgcb_http_next_done(CURLcode *result)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
		{
			CURL	   *easy = msg->easy_handle;

			*result = msg->data.result;
			curl_multi_remove_handle(multi, easy);
			running--;
			return easy;
		}
	}
	return NULL;
}

int
pgcb_http_running(void)
{
	return running;
}

/*
 * The headers of the last response on a finished transfer as a JSON object
 * text (names lower-cased; of a repeated name the last wins), keeping at
 * most cap bytes of names and values: what an on_response hook is given.
 * Read after the transfer, with curl's header API, so that nothing is
 * allocated inside a curl callback.
 */
char *
pgcb_http_headers_json(CURL *easy, int cap)
{
	StringInfoData buf;
	struct curl_header *h = NULL;
	struct curl_header *prev = NULL;
	int			used = 0;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	while ((h = curl_easy_nextheader(easy, CURLH_HEADER, -1, prev)) != NULL)
	{
		int			nlen = (int) strlen(h->name);
		int			vlen = (int) strlen(h->value);

		prev = h;
		if (used + nlen + vlen > cap)
			break;
		used += nlen + vlen;
		pgcb_http_json_header(&buf, h->name, nlen, h->value, vlen, &first);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}
