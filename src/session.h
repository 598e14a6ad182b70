/*
 * session.h
 *		How pg_callback runs its own SQL safely: as the extension's owner,
 *		in a security-restricted operation, with search_path pinned to
 *		pg_catalog, whatever the calling session has set.
 */
#ifndef PGCB_SESSION_H
#define PGCB_SESSION_H

/* The only search_path pg_callback's own statements ever run with. */
#define PGCB_SAFE_SEARCH_PATH	"pg_catalog, pg_temp"

/* What pgcb_session_enter() changed, for pgcb_session_leave() to restore. */
typedef struct PgcbSession
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} PgcbSession;

/* For the worker, before any SQL: its whole session keeps the safe path. */
extern void pgcb_session_pin_search_path(void);

/* The oid of one of the extension's tables; an error if it is not installed. */
extern Oid	pgcb_session_relid(const char *relname);

/* The extension's owner (the owner of callback.callback_queue). */
extern Oid	pgcb_session_owner(void);

/*
 * Around SPI in a session that is not ours (the trigger, enqueue(),
 * process_callbacks()) and in the worker.  An error in between needs no
 * cleanup: (sub)transaction abort restores the user and the settings.
 */
extern void pgcb_session_enter(PgcbSession *s);
extern void pgcb_session_leave(PgcbSession *s);

#endif							/* PGCB_SESSION_H */
