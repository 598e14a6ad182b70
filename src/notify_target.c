/*
 * notify_target.c
 *		The notify:<channel> transport: an endpoint whose URL is
 *		notify:orders sends each event body with pg_notify('orders', body).
 *		The delivery engine calls it in the transaction that claims the
 *		delivery and records the attempt (delivery.c), so the notification
 *		and the attempt's record commit together: listeners of the same
 *		database get it once, after that commit, and never for a claim that
 *		rolled back.  No HTTP, no signature (the listener is inside the
 *		database); retries, rate limits, metrics and dead letters are the
 *		engine's, as for HTTP.
 */
#include "postgres.h"

#include "commands/async.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/fmgrprotos.h"

#include "notify_target.h"

#define NOTIFY_PREFIX "notify:"

/*
 * Above this share of the NOTIFY queue in use, attempts wait (retried per
 * policy) rather than fill it: a full queue fails the commit of the worker's
 * transaction, HTTP deliveries and all.  A listener that stops reading holds
 * the queue's tail back, so this is what such a listener costs.
 */
#define NOTIFY_QUEUE_MAX_USAGE 0.5

#define NOTIFY_HINT \
	"Give notify:<channel>, the channel 1 to 63 of a-z 0-9 _ $ starting with a letter or _, " \
	"as LISTEN takes it unquoted, such as notify:orders."

const char *
pgcb_notify_channel(const char *url)
{
	if (pg_strncasecmp(url, NOTIFY_PREFIX, strlen(NOTIFY_PREFIX)) != 0)
		return NULL;
	return url + strlen(NOTIFY_PREFIX);
}

/*
 * Lowercase only: LISTEN folds an unquoted name to lower case and
 * pg_notify() does not, so notify:Orders would never reach LISTEN Orders.
 */
void
pgcb_notify_check_url(const char *url)
{
	const char *channel = pgcb_notify_channel(url);
	size_t		len;
	const char *detail = NULL;

	Assert(channel != NULL);
	len = strlen(channel);
	if (len == 0)
		detail = "The channel is empty.";
	else if (len >= NAMEDATALEN)
		detail = psprintf("The channel is %zu bytes long; the limit is %d.", len, NAMEDATALEN - 1);
	else if (!((channel[0] >= 'a' && channel[0] <= 'z') || channel[0] == '_'))
		detail = "The channel does not start with a lowercase letter or _.";
	else
	{
		for (size_t i = 1; i < len; i++)
		{
			char		c = channel[i];

			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$'))
			{
				detail = "The channel holds a character other than a-z 0-9 _ $.";
				break;
			}
		}
	}
	if (detail != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid notify channel in callback URL \"%.*s\"",
						NAMEDATALEN + (int) strlen(NOTIFY_PREFIX), url),
				 errhidestmt(true),
				 errdetail("%s", detail),
				 errhint(NOTIFY_HINT)));
}

/*
 * How full the NOTIFY queue is, looked at once per transaction: the function
 * behind pg_notification_queue_usage() first advances the queue's tail, and
 * one transaction adds at most a claim's worth (callback.batch_size bodies
 * of under 8 kB) to a queue of 8 GB.
 */
static double
queue_usage(void)
{
	static LocalTransactionId seen_lxid = InvalidLocalTransactionId;
	static double usage = 0;

	if (MyProc->lxid != seen_lxid)
	{
		LOCAL_FCINFO(fcinfo, 0);

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		usage = DatumGetFloat8(pg_notification_queue_usage(fcinfo));
		seen_lxid = MyProc->lxid;
	}
	return usage;
}

char *
pgcb_notify_send(const char *channel, const char *body, int body_len, bool *permanent)
{
	double		usage;

	*permanent = false;
	if (body_len >= PGCB_NOTIFY_PAYLOAD_MAX)
	{
		*permanent = true;
		return psprintf("event body of %d bytes exceeds the NOTIFY payload limit of %d bytes",
						body_len, PGCB_NOTIFY_PAYLOAD_MAX - 1);
	}
	usage = queue_usage();
	if (usage > NOTIFY_QUEUE_MAX_USAGE)
		return psprintf("the NOTIFY queue is %.0f%% full: a listening session is not reading",
						usage * 100);
	Async_Notify(channel, body);
	return NULL;
}
