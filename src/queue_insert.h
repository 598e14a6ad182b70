/*
 * queue_insert.h
 *		Inserting deliveries into callback.callback_queue without SPI.
 */
#ifndef PGCB_QUEUE_INSERT_H
#define PGCB_QUEUE_INSERT_H

#include "datatype/timestamp.h"
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

/*
 * inbox.c's move: one delivery that waited in callback_inbox, written into
 * callback_queue whatever callback.inbox says, with the created_at it had
 * there (the event's time); the key is stored where ordered.  Buffered in
 * an open batch like any other row.
 */
extern void pgcb_queue_insert_moved(const PgcbEventRow *ev, int32 endpoint_id, bool ordered,
									TimestampTz created_at);

/*
 * A batch: until pgcb_queue_batch_end, the rows pgcb_queue_insert is given
 * in this subtransaction and trigger call are buffered and written together
 * (table_multi_insert), at the latest by pgcb_queue_batch_end, which must
 * be called before the trigger call returns.  begin returns false when a
 * batch is open already (then do not call end).  An error needs no call:
 * the (sub)transaction's abort forgets what was buffered.
 */
extern bool pgcb_queue_batch_begin(void);
extern void pgcb_queue_batch_end(void);

/*
 * Whether this backend is writing queue rows now: a batch open, rows
 * buffered or packed, a row being formed.  SQL run meanwhile (a cast
 * called to build an event's body) must not move the inbox (inbox.c): its
 * rows would go where the open batch writes, the inbox among them.
 */
extern bool pgcb_queue_busy(void);

/*
 * Whether an event queued now goes into the inbox in the open batch, where
 * it is packed (inbox_pack.h).
 */
extern bool pgcb_queue_batch_packs(void);

#endif							/* PGCB_QUEUE_INSERT_H */
