/*
 * inbox.h
 *		callback_inbox: deliveries written with no index entries
 *		(callback.inbox on), moved into callback_queue by the worker.
 */
#ifndef PGCB_INBOX_H
#define PGCB_INBOX_H

/* Up to this many waiting events move at once; a backlog moves by halves. */
#define PGCB_INBOX_MOVE_MAX 2000

/* The inbox's OID: an error when the schema predates it (1.0). */
extern Oid	pgcb_inbox_relid(void);
/* The inbox's OID, or InvalidOid when the schema predates it. */
extern Oid	pgcb_inbox_relid_if_any(void);

/*
 * Whether the inbox has no page (or is locked by TRUNCATE: not now);
 * looked at under ACCESS SHARE, taken without waiting.
 */
extern bool pgcb_inbox_surely_empty(Oid relid);

/*
 * Move committed inbox rows into callback_queue, oldest first, in the
 * caller's transaction: all of them when they carry up to max events, else
 * about half (callback._move_inbox); returns how many events moved (0 also
 * when another process is moving, or the schema has no inbox).  The caller
 * runs in a transaction with a snapshot, as the worker's cycle does.
 */
extern uint64 pgcb_inbox_move(int max);

#endif							/* PGCB_INBOX_H */
