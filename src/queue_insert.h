/*
 * queue_insert.h
 *		Inserting deliveries into callback.callback_queue without SPI.
 */
#ifndef PGCB_QUEUE_INSERT_H
#define PGCB_QUEUE_INSERT_H

#include "event.h"

/*
 * Insert one pending delivery of the event per endpoint id: the event's
 * id, type, body and attributes given (NULL attributes stay NULL), every
 * other column its default.  Runs as the queue's owner in a
 * security-restricted operation; the caller needs no rights on the queue.
 * The ordering key is stored only where ordered[i] (ordered NULL: nowhere).
 */
extern void pgcb_queue_insert(const PgcbEventRow *ev, const int32 *endpoint_ids,
							  const bool *ordered, int n_endpoints);

#endif							/* PGCB_QUEUE_INSERT_H */
