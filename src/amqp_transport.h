/*
 * amqp_transport.h
 *		amqp:// and amqps:// endpoints: each attempt is one publish to
 *		RabbitMQ with publisher confirms, on a connection per endpoint kept
 *		open and watched from the worker's wait loop.
 */
#ifndef PGCB_AMQP_TRANSPORT_H
#define PGCB_AMQP_TRANSPORT_H

#include "utils/timestamp.h"

#define PGCB_AMQP_ERROR_LEN 256

/* One event to publish; strings are read during pgcb_amqp_publish only. */
typedef struct PgcbAmqpMessage
{
	const char *body;
	int			body_len;
	const char *event_type;		/* the routing key unless the URL names one */
	const char *webhook_id;
	int64		timestamp;
	const char *signature;		/* the webhook-signature value */
	char	  **headers;		/* the endpoint's own "Name: value" headers */
	int			n_headers;
} PgcbAmqpMessage;

/* What became of a publish. */
typedef struct PgcbAmqpResult
{
	bool		ok;				/* confirmed (basic.ack, and not returned) */
	bool		permanent;		/* cannot succeed as configured: no retry */
	double		latency_ms;
	char		error[PGCB_AMQP_ERROR_LEN];	/* when not ok; never a secret */
} PgcbAmqpResult;

/* Whether url's scheme is amqp or amqps (any case). */
extern bool pgcb_amqp_is_url(const char *url);

/*
 * ereport(ERROR) with SQLSTATE 22023 (or 42501 for a forbidden address)
 * unless url is an amqp URL that librabbitmq parses, with a host and known
 * query parameters.  Messages show only shown, the redacted URL.
 */
extern void pgcb_amqp_check_url(const char *url, const char *shown);

/* Set up the connection table and the descriptor the wait loop watches (idempotent). */
extern void pgcb_amqp_init(void);

/*
 * Publish msg for owner on endpoint_id's connection (made, or made again
 * if the URL changed).  Never waits for the confirm; the outcome comes out
 * of pgcb_amqp_next_done (at once, for a publish that could not be sent).
 */
extern void pgcb_amqp_publish(int endpoint_id, const char *url, int timeout_ms,
							  const PgcbAmqpMessage *msg, void *owner);

/* Read what the brokers sent (confirms, returns, closes) and expire late confirms; never waits. */
extern void pgcb_amqp_poll(void);

/* The owner of the next finished publish, or NULL. */
extern void *pgcb_amqp_next_done(PgcbAmqpResult *result);

/* Milliseconds until pgcb_amqp_poll has work (0: now); -1: nothing to wait for. */
extern long pgcb_amqp_ms_until_due(void);

/* Close every connection and forget every publish in flight (process_callbacks' error path). */
extern void pgcb_amqp_shutdown(void);

#endif							/* PGCB_AMQP_TRANSPORT_H */
