/*
 * tracecontext.h
 *		W3C Trace Context for events: the checks of a traceparent and a
 *		tracestate, where an event takes them from, and the traceparent each
 *		attempt sends.
 */
#ifndef PGCB_TRACECONTEXT_H
#define PGCB_TRACECONTEXT_H

/* A version-00 traceparent: 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags> */
#define PGCB_TRACEPARENT_LEN	55
/* Longest traceparent stored (later versions may append fields) and tracestate. */
#define PGCB_TRACEPARENT_MAX	512
#define PGCB_TRACESTATE_MAX		512
#define PGCB_TRACESTATE_MEMBERS	32

/* What to give instead of a malformed value (errhint) */
#define PGCB_TRACEPARENT_HINT \
	"Give 00-<trace-id: 32 lowercase hex digits>-<parent-id: 16 lowercase hex digits>-<flags: 2 lowercase hex digits>, " \
	"such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; neither id may be all zeros."
#define PGCB_TRACESTATE_HINT \
	"Give up to 32 comma-separated key=value members, 512 characters in all, such as congo=t61rcWkgMzE,rojo=00f067aa0ba902b7; " \
	"a key is lowercase (a-z 0-9 _ - * /, tenant@system allowed), a value printable ASCII without ',' or '='."

/* Whether s is a traceparent we take; if not, *why says what is wrong (static text). */
extern bool pgcb_trace_parent_valid(const char *s, const char **why);

/* Whether s is a tracestate we take (empty is); if not, *why says what is wrong. */
extern bool pgcb_trace_state_valid(const char *s, const char **why);

/*
 * The trace context of an event: the arguments given (NULL: not given),
 * checked here (22023 when malformed), else callback.traceparent and
 * callback.tracestate as set in the session.  NULL when none.
 */
extern void pgcb_trace_for_event(const char *traceparent_arg, const char *tracestate_arg,
								 const char **traceparent, const char **tracestate);

/*
 * The traceparent one attempt sends (out: PGCB_TRACEPARENT_LEN + 1 bytes):
 * version 00 with the stored trace-id and flags and a new random parent-id.
 */
extern void pgcb_trace_attempt_parent(const char *stored, char *out);

#endif							/* PGCB_TRACECONTEXT_H */
