/*
 * delivery.h
 *		The delivery engine shared by the background worker and
 *		callback.process_callbacks(): claim due deliveries, send them signed
 *		and concurrently, decide each outcome, write the outcomes back.
 */
#ifndef PGCB_DELIVERY_H
#define PGCB_DELIVERY_H

#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "endpoint.h"
#include "shmem.h"

/*
 * Start the engine.  slot is the worker's shared-memory slot (NULL from a
 * backend); claimed_by is what claimed rows are marked with (the slot
 * number, or -1 for a backend, whose claims die with its transaction).
 */
extern void pgcb_delivery_init(PgcbWorkerSlot *slot, int claimed_by);

/* This process is a delivery worker (its engine was started with a slot). */
extern bool pgcb_delivery_in_worker(void);

/*
 * Inside a transaction: write back finished outcomes, reload endpoints,
 * claim up to max_new due deliveries (within per-endpoint, rate and breaker
 * limits) and start them.  Returns the number started.
 */
extern int	pgcb_delivery_cycle(int max_new);

/* Outside any transaction: wait for I/O, the latch or a timer; collect finished attempts. */
extern bool pgcb_delivery_wait(long timeout_ms);

/* Inside a transaction: write back finished outcomes only. */
extern void pgcb_delivery_flush(void);

extern int	pgcb_delivery_inflight(void);
extern int	pgcb_delivery_unflushed(void);

/* Milliseconds until something is due (a retry, a token, a breaker probe); -1: nothing known. */
extern long pgcb_delivery_ms_until_due(void);

/* True when the last claim suggests more is due right now. */
extern bool pgcb_delivery_more_due(void);

/* Release this claimer's leftover claims (worker start) and expired leases. */
extern void pgcb_delivery_release_claims(bool mine, bool expired);

/* Apply reload settings that live in the engine (after ProcessConfigFile). */
extern void pgcb_delivery_apply_settings(void);

/* Abandon everything in flight, freeing every handle (backend error path). */
extern void pgcb_delivery_shutdown(void);

#endif							/* PGCB_DELIVERY_H */
