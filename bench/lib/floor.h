/*
 * floor.h
 *		What the drain's floors (curl_floor.c, raw_floor.c) share: the HMAC
 *		context keyed once, the timed window and its one-line JSON report.
 *		A header of static functions: each floor is one file built alone
 *		by bench/parts/drain.py.
 */
#ifndef PGCB_BENCH_FLOOR_H
#define PGCB_BENCH_FLOOR_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>

static const char floor_secret[] = "bench-floor-secret-0123456789abcdef";

/*
 * One HMAC context keyed once, reset per request (EVP_MAC_init with no
 * key): what src/sign.c does for a key it signed with lately.
 */
static EVP_MAC_CTX *
floor_key_once(const char *who)
{
	EVP_MAC    *impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
	char		digest[] = "SHA256";
	OSSL_PARAM	params[2];
	EVP_MAC_CTX *keyed;

	params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	keyed = impl ? EVP_MAC_CTX_new(impl) : NULL;
	if (keyed == NULL ||
		!EVP_MAC_init(keyed, (const unsigned char *) floor_secret, sizeof(floor_secret) - 1, params))
	{
		fprintf(stderr, "%s: HMAC set-up failed\n", who);
		exit(2);
	}
	EVP_MAC_free(impl);
	return keyed;
}

/* The timed window: wall clock and this process's CPU (getrusage). */
typedef struct FloorWindow
{
	struct rusage ru;
	struct timespec t;
} FloorWindow;

static void
floor_mark(FloorWindow *w)
{
	getrusage(RUSAGE_SELF, &w->ru);
	clock_gettime(CLOCK_MONOTONIC, &w->t);
}

static double
floor_usec(struct timeval tv)
{
	return tv.tv_sec * 1e6 + tv.tv_usec;
}

/*
 * The floor's one JSON line: requests, failures, seconds, per_s,
 * cpu_us_per_request (user + system), user_us, sys_us.
 */
static void
floor_report(const FloorWindow *from, const FloorWindow *to, long done, long failures)
{
	double		seconds = (to->t.tv_sec - from->t.tv_sec) + (to->t.tv_nsec - from->t.tv_nsec) / 1e9;
	double		user_us = floor_usec(to->ru.ru_utime) - floor_usec(from->ru.ru_utime);
	double		sys_us = floor_usec(to->ru.ru_stime) - floor_usec(from->ru.ru_stime);

	printf("{\"requests\": %ld, \"failures\": %ld, \"seconds\": %.3f, \"per_s\": %.1f, "
		   "\"cpu_us_per_request\": %.2f, \"user_us\": %.0f, \"sys_us\": %.0f}\n",
		   done, failures, seconds, done / seconds, (user_us + sys_us) / done, user_us, sys_us);
}

#endif							/* PGCB_BENCH_FLOOR_H */
