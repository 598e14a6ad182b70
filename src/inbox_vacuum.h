/*
 * inbox_vacuum.h
 *		The worker's vacuum of callback_inbox (inbox_vacuum.c).
 */
#ifndef PGCB_INBOX_VACUUM_H
#define PGCB_INBOX_VACUUM_H

/*
 * After a cycle that moved this many events out of the inbox, with no
 * transaction open: VACUUM callback_inbox once enough has moved since the
 * last one; after a cycle that moved nothing, now and then, truncate it.
 */
extern void pgcb_inbox_vacuum_after(uint64 moved);

#endif							/* PGCB_INBOX_VACUUM_H */
