/*
 * hooks.h
 *		An endpoint's SQL hooks: transform (the body sent, made from the
 *		event) and on_response (run after each final outcome).  Each call
 *		runs as the endpoint's owner, never as a superuser, in a
 *		security-restricted subtransaction with search_path pinned and
 *		callback.hook_timeout (the worker ends itself if a hook ignores the
 *		cancel: hook_escalation.h); any failure comes back as text, never
 *		as an error thrown at the caller.
 */
#ifndef PGCB_HOOKS_H
#define PGCB_HOOKS_H

/*
 * Apply the transform fn (as stored: "schema.name") as role owner to the
 * body of delivery_id (a batch's first delivery).  True: *body / *body_len
 * are the new body (palloc'd in the current context).  False: *error says
 * why (palloc'd likewise).
 */
extern bool pgcb_hooks_transform(const char *fn, const char *owner, int64 delivery_id,
								 char **body, int *body_len, char **error);

/*
 * Run the on_response fn as role owner after a final outcome.  status 0:
 * no response (then headers and response_body are NULL too).  Returns NULL
 * when it ran, else why it failed (palloc'd in the current context).
 */
extern char *pgcb_hooks_on_response(const char *fn, const char *owner, int64 delivery_id,
									const char *event, int status, const char *headers,
									const char *response_body);

/*
 * True while a hook runs: the delivery engine is in the middle of a cycle
 * and must not be entered again (process_callbacks() from a hook).
 */
extern bool pgcb_hooks_running(void);

#endif							/* PGCB_HOOKS_H */
