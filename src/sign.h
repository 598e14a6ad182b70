/*
 * sign.h
 *		Standard Webhooks v1 signatures (HMAC-SHA256) and endpoint secrets.
 *
 * sign.c is the only file that includes OpenSSL.
 */
#ifndef PGCB_SIGN_H
#define PGCB_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define PGCB_SECRET_PREFIX		"whsec_"
#define PGCB_SECRET_MIN_BYTES	24
#define PGCB_SECRET_MAX_BYTES	64
#define PGCB_SECRET_GEN_BYTES	32
/* "v1," + base64 of 32 bytes (44 chars) + NUL */
#define PGCB_SIGNATURE_LEN		48

/* A decoded endpoint secret: the HMAC key. */
typedef struct PgcbKey
{
	unsigned char bytes[PGCB_SECRET_MAX_BYTES];
	int			len;
} PgcbKey;

/*
 * Decode "whsec_<base64>" into *key.  Returns false (and sets *why to a
 * static message) when the secret is malformed or its key is not 24 to 64
 * bytes long.
 */
extern bool pgcb_secret_decode(const char *secret, PgcbKey *key, const char **why);

/* A new secret from the CSPRNG, palloc'd: "whsec_" + base64(32 bytes). */
extern char *pgcb_secret_generate(void);

/*
 * Write "v1,<base64 HMAC-SHA256(key, msg_id + '.' + timestamp + '.' + body)>"
 * into out (PGCB_SIGNATURE_LEN bytes, NUL-terminated).  Never fails for a
 * decoded key; cheap enough to call once per request.  cache_key: keep the
 * keyed HMAC state for the next signature with this key (the worker, which
 * holds its endpoints' keys anyway); false leaves no copy of the key behind.
 */
extern void pgcb_sign(const PgcbKey *key, const char *msg_id, int64_t timestamp,
					  const char *body, size_t body_len, char *out, bool cache_key);

#endif							/* PGCB_SIGN_H */
