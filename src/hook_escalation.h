/*
 * hook_escalation.h
 *		The worker's last resort against a hook that catches its own cancel:
 *		it ends itself, leaving word in shared memory, and for 10 minutes
 *		every call of that hook in the database fails with what happened
 *		instead of running (see hook_escalation.c).
 */
#ifndef PGCB_HOOK_ESCALATION_H
#define PGCB_HOOK_ESCALATION_H

#include "utils/timestamp.h"

extern Size pgcb_hookesc_shmem_size(void);
extern void pgcb_hookesc_shmem_startup(void);

/* This process is the delivery worker: escalate here (once, at start). */
extern void pgcb_hookesc_enable(void);

/*
 * A hook (kind "transform" or "on_response", fn as stored, fnoid what it
 * names) is about to run for delivery_id; past die_at, still running, the
 * process ends itself.
 */
extern void pgcb_hookesc_arm(const char *kind, const char *fn, Oid fnoid, int64 delivery_id,
							 TimestampTz die_at);
extern void pgcb_hookesc_disarm(void);

/* From the hook's timer (a signal handler): end the process if past die_at. */
extern void pgcb_hookesc_tick(void);

/*
 * Whether a process of this database ended itself running this hook (same
 * kind, same function) lately; *until: when it may be called again.
 */
extern bool pgcb_hookesc_set_aside(const char *kind, Oid fnoid, TimestampTz *until);

#endif							/* PGCB_HOOK_ESCALATION_H */
