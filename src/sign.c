/*
 * sign.c
 *		Standard Webhooks v1 signatures and endpoint secrets.
 *
 * Owns the secret format ("whsec_" + standard base64 of a 24 to 64 byte
 * key), secret generation, the HMAC-SHA256 signature of
 * "msg_id.timestamp.body" sent as "webhook-signature: v1,<base64>", and the
 * SQL functions generate_secret(), validate_secret(), sign() and
 * verify_signature().  See https://www.standardwebhooks.com/.
 *
 * This is the only file of pg_callback that includes OpenSSL headers, so the
 * crypto library can be swapped (or a fork's API followed) here alone.
 */
#include "postgres.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "access/xact.h"
#include "common/base64.h"
#include "common/int128.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "sign.h"

/* "v1," + base64 of a SHA-256 digest, without the NUL. */
#define SIGNATURE_CHARS		(PGCB_SIGNATURE_LEN - 1)
#define SIGNATURE_VERSION	"v1,"

/* Longest base64 text a 64-byte key can have: 4 * ceil(64 / 3). */
#define SECRET_MAX_B64		(4 * ((PGCB_SECRET_MAX_BYTES + 2) / 3))

/* How much of a message the MAC takes between two interrupt checks. */
#define MAC_SLICE_BYTES		((size_t) 1024 * 1024)

#define SECRET_HINT \
	"A secret is \"whsec_\" followed by the base64 of 24 to 64 random bytes; omit it to have one generated."

PG_FUNCTION_INFO_V1(generate_secret);
PG_FUNCTION_INFO_V1(validate_secret);
PG_FUNCTION_INFO_V1(sign);
PG_FUNCTION_INFO_V1(verify_signature);

/*
 * The HMAC implementation, fetched once per process: fetching walks
 * OpenSSL's provider tables, too slow to repeat for every request.
 */
static EVP_MAC *hmac_impl = NULL;

/*
 * HMAC contexts already keyed, one per recent key, for the worker (see
 * pgcb_sign's cache_key): keying (the digest
 * fetched by name, the key hashed into the inner and outer pads) cost
 * three quarters of a signature; resetting a keyed context costs little.
 * A handful of keys covers the endpoints a worker signs for in a burst;
 * beyond, the oldest entry is freed (OpenSSL clears it).
 */
#define KEYED_SLOTS 16

typedef struct KeyedMac
{
	PgcbKey		key;
	EVP_MAC_CTX *ctx;			/* NULL: free slot */
} KeyedMac;

static KeyedMac keyed[KEYED_SLOTS];
static int	keyed_next = 0;

/*
 * True when b64[0..len) is canonical standard base64 (alphabet A-Z a-z 0-9
 * + /, padded to a multiple of 4, '=' only at the end).  pg_b64_decode()
 * alone would accept characters after a '=', which no encoder writes.
 */
static bool
b64_is_well_formed(const char *b64, size_t len)
{
	size_t		pad = 0;

	if (len == 0 || len % 4 != 0)
		return false;
	while (pad < 2 && b64[len - 1 - pad] == '=')
		pad++;
	for (size_t i = 0; i < len - pad; i++)
	{
		char		c = b64[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return false;
	}
	return true;
}

bool
pgcb_secret_decode(const char *secret, PgcbKey *key, const char **why)
{
	const size_t prefix_len = strlen(PGCB_SECRET_PREFIX);
	const char *b64;
	size_t		b64_len;
	char		buf[SECRET_MAX_B64 / 4 * 3];
	int			n;

	key->len = 0;
	if (strncmp(secret, PGCB_SECRET_PREFIX, prefix_len) != 0)
	{
		*why = "The secret does not start with \"whsec_\".";
		return false;
	}
	b64 = secret + prefix_len;
	b64_len = strlen(b64);
	if (b64_len == 0)
	{
		*why = "Nothing follows \"whsec_\".";
		return false;
	}
	/*
	 * Checked before decoding so that buf can have a fixed size, and before
	 * the scan below so that a 1 GB argument is not read through.
	 */
	if (b64_len > SECRET_MAX_B64)
	{
		*why = "The key is longer than 64 bytes.";
		return false;
	}
	if (!b64_is_well_formed(b64, b64_len))
	{
		*why = "The part after \"whsec_\" is not valid standard base64.";
		return false;
	}
	n = pg_b64_decode(b64, (int) b64_len, buf, sizeof(buf));
	if (n < 0)
	{
		explicit_bzero(buf, sizeof(buf));
		*why = "The part after \"whsec_\" is not valid standard base64.";
		return false;
	}
	if (n < PGCB_SECRET_MIN_BYTES || n > PGCB_SECRET_MAX_BYTES)
	{
		explicit_bzero(buf, sizeof(buf));
		*why = n < PGCB_SECRET_MIN_BYTES ?
			"The key is shorter than 24 bytes." :
			"The key is longer than 64 bytes.";
		return false;
	}
	memcpy(key->bytes, buf, n);
	key->len = n;
	explicit_bzero(buf, sizeof(buf));
	return true;
}

char *
pgcb_secret_generate(void)
{
	unsigned char bytes[PGCB_SECRET_GEN_BYTES];
	size_t		prefix_len = strlen(PGCB_SECRET_PREFIX);
	int			b64_len = pg_b64_enc_len(PGCB_SECRET_GEN_BYTES);
	char	   *result = palloc(prefix_len + b64_len + 1);
	int			n;

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random secret"),
				 errdetail("The strong random number generator failed.")));
	memcpy(result, PGCB_SECRET_PREFIX, prefix_len);
	n = pg_b64_encode((const char *) bytes, sizeof(bytes),
					  result + prefix_len, b64_len);
	explicit_bzero(bytes, sizeof(bytes));
	if (n < 0)
		elog(ERROR, "could not base64-encode a generated secret");
	result[prefix_len + n] = '\0';
	return result;
}

/*
 * Feed data to the MAC in slices, checking for interrupts between them, so
 * that signing a body of up to 1 GB from SQL still honours a cancel or
 * statement_timeout.  Not before the first slice: the worker signs bodies
 * of ordinary size without a new point where it could be stopped.  Runs
 * inside the PG_TRY of pgcb_sign.
 */
static bool
mac_update_sliced(EVP_MAC_CTX *ctx, const char *data, size_t len)
{
	bool		first = true;

	while (len > 0)
	{
		size_t		n = Min(len, MAC_SLICE_BYTES);

		if (!first)
			CHECK_FOR_INTERRUPTS();
		first = false;
		if (!EVP_MAC_update(ctx, (const unsigned char *) data, n))
			return false;
		data += n;
		len -= n;
	}
	return true;
}

/* A new HMAC-SHA256 context keyed with key, for the caller to free. */
static EVP_MAC_CTX *
new_keyed_mac(const PgcbKey *key)
{
	char		digest_name[] = "SHA256";
	OSSL_PARAM	params[2];
	EVP_MAC_CTX *ctx;

	if (hmac_impl == NULL)
	{
		hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
		if (hmac_impl == NULL)
			elog(ERROR, "OpenSSL has no HMAC implementation");
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0);
	params[1] = OSSL_PARAM_construct_end();
	ctx = EVP_MAC_CTX_new(hmac_impl);
	if (ctx == NULL)
		elog(ERROR, "HMAC-SHA256 failed in OpenSSL");
	if (!EVP_MAC_init(ctx, key->bytes, key->len, params))
	{
		EVP_MAC_CTX_free(ctx);
		elog(ERROR, "HMAC-SHA256 failed in OpenSSL");
	}
	return ctx;
}

/* An HMAC-SHA256 context keyed with key, from the cache (not to be freed). */
static EVP_MAC_CTX *
keyed_mac(const PgcbKey *key)
{
	EVP_MAC_CTX *ctx;
	KeyedMac   *slot;

	for (int i = 0; i < KEYED_SLOTS; i++)
	{
		if (keyed[i].ctx != NULL && keyed[i].key.len == key->len &&
			CRYPTO_memcmp(keyed[i].key.bytes, key->bytes, key->len) == 0)
			return keyed[i].ctx;
	}
	ctx = new_keyed_mac(key);
	slot = &keyed[keyed_next];
	keyed_next = (keyed_next + 1) % KEYED_SLOTS;
	if (slot->ctx != NULL)
		EVP_MAC_CTX_free(slot->ctx);
	explicit_bzero(&slot->key, sizeof(slot->key));
	memcpy(&slot->key, key, sizeof(PgcbKey));
	slot->ctx = ctx;
	return ctx;
}

void
pgcb_sign(const PgcbKey *key, const char *msg_id, int64_t timestamp,
		  const char *body, size_t body_len, char *out, bool cache_key)
{
	char		ts[24];
	int			ts_len;
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t		mac_len = 0;
	EVP_MAC_CTX *volatile ctx;
	volatile bool ok = false;
	int			n;

	ts_len = snprintf(ts, sizeof(ts), "%lld", (long long) timestamp);

	/*
	 * Streamed rather than concatenated, so a large body is not copied.
	 * OpenSSL memory is not palloc'd: the context is freed on the way out of
	 * an interrupt too.
	 */
	if (cache_key)
	{
		/*
		 * The cached context itself, reset to its keyed state (init without
		 * a key keeps the key): a copy and a free per signature cost as
		 * much as the hashing (callgrind, drain).
		 */
		ctx = keyed_mac(key);
		if (!EVP_MAC_init(ctx, NULL, 0, NULL))
			elog(ERROR, "HMAC-SHA256 failed in OpenSSL");
	}
	else
		ctx = new_keyed_mac(key);
	PG_TRY();
	{
		ok = mac_update_sliced(ctx, msg_id, strlen(msg_id)) &&
			EVP_MAC_update(ctx, (const unsigned char *) ".", 1) &&
			EVP_MAC_update(ctx, (const unsigned char *) ts, ts_len) &&
			EVP_MAC_update(ctx, (const unsigned char *) ".", 1) &&
			mac_update_sliced(ctx, body, body_len) &&
			EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac));
	}
	PG_FINALLY();
	{
		if (!cache_key)
			EVP_MAC_CTX_free(ctx);
	}
	PG_END_TRY();
	if (!ok || mac_len != 32)
		elog(ERROR, "HMAC-SHA256 failed in OpenSSL");

	memcpy(out, SIGNATURE_VERSION, 3);
	n = pg_b64_encode((const char *) mac, (int) mac_len, out + 3,
					  PGCB_SIGNATURE_LEN - 4);
	if (n != SIGNATURE_CHARS - 3)
		elog(ERROR, "could not base64-encode a signature");
	out[SIGNATURE_CHARS] = '\0';
}

/*
 * Decode a secret given to a SQL function, or raise the error every such
 * function shares.  The secret itself is never put in a message.
 */
static void
decode_secret_arg(text *secret, PgcbKey *key)
{
	char	   *s = text_to_cstring(secret);
	const char *why = NULL;
	bool		ok = pgcb_secret_decode(s, key, &why);

	explicit_bzero(s, strlen(s));
	pfree(s);
	/* nor in the log: the caller's statement holds it, so hide that too */
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed webhook secret"),
				 errhidestmt(true),
				 errdetail("%s", why),
				 errhint(SECRET_HINT)));
}

/* generate_secret() returns text */
Datum
generate_secret(PG_FUNCTION_ARGS)
{
	char	   *s = pgcb_secret_generate();
	text	   *result = cstring_to_text(s);

	(void) fcinfo;
	explicit_bzero(s, strlen(s));
	pfree(s);
	PG_RETURN_TEXT_P(result);
}

/* validate_secret(secret text) returns void: an error when malformed */
Datum
validate_secret(PG_FUNCTION_ARGS)
{
	PgcbKey		key;

	decode_secret_arg(PG_GETARG_TEXT_PP(0), &key);
	explicit_bzero(&key, sizeof(key));
	PG_RETURN_VOID();
}

/*
 * sign(secret text, msg_id text, "timestamp" bigint, body text) returns text
 *
 * The id is refused when empty, and when it holds a '.': the signed content
 * "id.timestamp.body" is only unambiguous if the id has no dot, and the ids
 * pg_callback itself sends never do.
 */
Datum
sign(PG_FUNCTION_ARGS)
{
	text	   *msg_id_t = PG_GETARG_TEXT_PP(1);
	int64		timestamp = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	PgcbKey		key;
	char	   *msg_id;
	char		out[PGCB_SIGNATURE_LEN];

	decode_secret_arg(PG_GETARG_TEXT_PP(0), &key);
	msg_id = text_to_cstring(msg_id_t);
	if (msg_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("msg_id must not be empty"),
				 errhidestmt(true),
				 errhint("Standard Webhooks message ids look like \"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W\".")));
	if (strchr(msg_id, '.') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("msg_id must not contain \".\""),
				 errhidestmt(true),
				 errdetail("The signed content is \"msg_id.timestamp.body\"; a dot in the id makes it ambiguous."),
				 errhint("Standard Webhooks message ids look like \"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W\".")));

	pgcb_sign(&key, msg_id, timestamp, VARDATA_ANY(body),
			  VARSIZE_ANY_EXHDR(body), out, false);
	explicit_bzero(&key, sizeof(key));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * An interval as microseconds, months counted as 30 days like interval
 * comparison does; 128 bits, so no interval can overflow.
 */
static INT128
interval_usecs(const Interval *iv)
{
	INT128		us = int64_to_int128(iv->time);

	int128_add_int64_mul_int64(&us, (int64) iv->month * DAYS_PER_MONTH + iv->day,
							   USECS_PER_DAY);
	return us;
}

/*
 * True when |now - timestamp seconds| <= tolerance microseconds.  Computed in
 * 128 bits, so no timestamp can overflow into a false "in time".
 */
static bool
timestamp_within(int64 timestamp, INT128 tolerance, TimestampTz now)
{
	/* now is at most a few centuries from 2000: no overflow here. */
	int64		now_unix_us = now +
		(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	INT128		ahead = int64_to_int128(0);
	INT128		behind = int64_to_int128(0);

	/* ahead = now - timestamp, behind = timestamp - now */
	int128_add_int64_mul_int64(&ahead, now_unix_us, 1);
	int128_add_int64_mul_int64(&ahead, timestamp, -USECS_PER_SEC);
	int128_add_int64_mul_int64(&behind, timestamp, USECS_PER_SEC);
	int128_add_int64_mul_int64(&behind, now_unix_us, -1);

	return int128_compare(ahead, tolerance) <= 0 &&
		int128_compare(behind, tolerance) <= 0;
}

/*
 * verify_signature(secret text, msg_id text, "timestamp" bigint, body text,
 *					signature_header text, tolerance interval) returns boolean
 *
 * "now" is the transaction start time (now()), which matches the function's
 * STABLE marking: every call in a transaction judges the timestamp against
 * the same instant.  Entries of the header that are not "v1,<base64>" are
 * simply not matches, as Standard Webhooks libraries treat them; an empty
 * msg_id never matches.  Ids with a dot are verified like any other, so that
 * senders other than pg_callback are accepted.
 */
Datum
verify_signature(PG_FUNCTION_ARGS)
{
	text	   *msg_id_t = PG_GETARG_TEXT_PP(1);
	int64		timestamp = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	text	   *header_t = PG_GETARG_TEXT_PP(4);
	INT128		tol = interval_usecs(PG_GETARG_INTERVAL_P(5));
	PgcbKey		key;
	char	   *msg_id;
	const char *p;
	const char *end;
	char		expected[PGCB_SIGNATURE_LEN];
	bool		match = false;

	decode_secret_arg(PG_GETARG_TEXT_PP(0), &key);

	if (int128_compare(tol, int64_to_int128(0)) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tolerance must not be negative"),
				 errhidestmt(true),
				 errhint("Give how far the timestamp may lie from now, such as '5 minutes'.")));

	msg_id = text_to_cstring(msg_id_t);
	if (msg_id[0] == '\0' ||
		!timestamp_within(timestamp, tol, GetCurrentTransactionStartTimestamp()))
	{
		explicit_bzero(&key, sizeof(key));
		PG_RETURN_BOOL(false);
	}

	pgcb_sign(&key, msg_id, timestamp, VARDATA_ANY(body),
			  VARSIZE_ANY_EXHDR(body), expected, false);
	explicit_bzero(&key, sizeof(key));

	/* Several signatures, space-separated, while a secret is rotated. */
	p = VARDATA_ANY(header_t);
	end = p + VARSIZE_ANY_EXHDR(header_t);
	while (p < end && !match)
	{
		const char *tok;

		CHECK_FOR_INTERRUPTS();
		while (p < end && *p == ' ')
			p++;
		tok = p;
		while (p < end && *p != ' ')
			p++;
		if (p - tok == SIGNATURE_CHARS &&
			CRYPTO_memcmp(tok, expected, SIGNATURE_CHARS) == 0)
			match = true;
	}
	PG_RETURN_BOOL(match);
}
