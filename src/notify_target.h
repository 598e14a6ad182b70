/*
 * notify_target.h
 *		Endpoints whose URL is notify:<channel>: events go to LISTEN sessions
 *		of the same database through pg_notify, sent when the delivering
 *		transaction commits.
 */
#ifndef PGCB_NOTIFY_TARGET_H
#define PGCB_NOTIFY_TARGET_H

/*
 * NOTIFY's payload limit (async.c's NOTIFY_PAYLOAD_MAX_LENGTH): a body must
 * be shorter than this, 8000 bytes with the default block size.
 */
#define PGCB_NOTIFY_PAYLOAD_MAX	(BLCKSZ - NAMEDATALEN - 128)

/* The channel of a notify: URL, or NULL when url is not one. */
extern const char *pgcb_notify_channel(const char *url);

/* ereport(ERROR) with SQLSTATE and hint unless the notify: URL names a valid channel. */
extern void pgcb_notify_check_url(const char *url);

/*
 * Queue body as a notification on channel, sent at commit.  Returns NULL
 * when queued, else why not (palloc'd); *permanent then says that retrying
 * cannot help (the body is too large).
 */
extern char *pgcb_notify_send(const char *channel, const char *body, int body_len,
							  bool *permanent);

#endif							/* PGCB_NOTIFY_TARGET_H */
