/*
 * retry.c
 *		The retry policy.  Network errors, timeouts, 408, 429 and 5xx are
 *		retried on the endpoint's schedule, stretched or shrunk at random by
 *		callback.retry_jitter so that many failed deliveries do not all come
 *		back at once, and never sooner than the endpoint's Retry-After
 *		(clamped to callback.retry_after_max).  A 2xx is delivered; 3xx
 *		(redirects are not followed) and other 4xx are dead at once; 410
 *		also disables the endpoint.  The last allowed attempt that fails is
 *		dead.
 */
#include "postgres.h"

#include <ctype.h>
#include <curl/curl.h>
#include <math.h>
#include <time.h>

#include "common/pg_prng.h"

#include "guc.h"
#include "retry.h"

static bool
is_retryable(long status_code)
{
	return status_code == 0 || status_code == 408 || status_code == 429 ||
		(status_code >= 500 && status_code <= 599);
}

PgcbDecision
pgcb_retry_decide(long status_code, long retry_after_ms, int attempt,
				  int max_attempts, const int64 *schedule_ms, int n_schedule)
{
	PgcbDecision d;

	memset(&d, 0, sizeof(d));
	if (status_code >= 200 && status_code <= 299)
	{
		d.verdict = PGCB_DELIVERED;
		return d;
	}
	d.counts_as_failure = is_retryable(status_code);
	if (status_code == 410)
	{
		d.verdict = PGCB_DEAD;
		d.endpoint_gone = true;
		d.reason = "endpoint answered 410 Gone; it was disabled";
		return d;
	}
	if (!is_retryable(status_code))
	{
		d.verdict = PGCB_DEAD;
		d.reason = (status_code >= 300 && status_code <= 399) ?
			"redirects are not followed" : "client error; not retried";
		return d;
	}
	if (attempt >= max_attempts)
	{
		d.verdict = PGCB_DEAD;
		d.reason = "no attempts left";
		return d;
	}

	d.verdict = PGCB_RETRY;
	{
		int64		base = n_schedule > 0 ?
			schedule_ms[Min(attempt - 1, n_schedule - 1)] : 0;
		double		jitter = pgcb_retry_jitter * (2.0 * pg_prng_double(&pg_global_prng_state) - 1.0);
		int64		delay = (int64) llround((double) base * (1.0 + jitter));

		if (retry_after_ms >= 0)
			delay = Max(delay, Min(retry_after_ms, (int64) pgcb_retry_after_max_ms));
		d.delay_ms = Max(delay, 0);
	}
	return d;
}

long
pgcb_retry_parse_retry_after(const char *value)
{
	const char *p = value;
	time_t		when;
	time_t		now;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0')
		return -1;
	if (isdigit((unsigned char) *p))
	{
		long		secs = 0;

		for (; isdigit((unsigned char) *p); p++)
		{
			if (secs > 100000000L)
				return (long) pgcb_retry_after_max_ms;
			secs = secs * 10 + (*p - '0');
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '\0')
			return -1;
		return (long) Min((int64) secs * 1000, (int64) LONG_MAX / 2);
	}
	when = curl_getdate(p, NULL);
	if (when == (time_t) -1)
		return -1;
	now = time(NULL);
	/* compared before subtracting: curl gives far dates as TIME_T_MIN/MAX */
	if (when <= now)
		return 0;
	if (when - now > 100000000L)
		return (long) pgcb_retry_after_max_ms;
	return (long) (when - now) * 1000;
}
