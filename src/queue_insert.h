/*
 * queue_insert.h
 *		Inserting deliveries into callback.callback_queue without SPI.
 */
#ifndef PGCB_QUEUE_INSERT_H
#define PGCB_QUEUE_INSERT_H

#include "utils/uuid.h"

/*
 * Insert one pending delivery per endpoint id: event_id, endpoint_id,
 * event_type and body given, every other column its default.  Runs as the
 * queue's owner in a security-restricted operation; the caller needs no
 * rights on the queue.
 */
extern void pgcb_queue_insert(const pg_uuid_t *event_id, const char *event_type,
							  const char *body, int body_len,
							  const int32 *endpoint_ids, int n_endpoints);

#endif							/* PGCB_QUEUE_INSERT_H */
