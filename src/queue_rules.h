/*
 * queue_rules.h
 *		Whether an operator put rules on the tables the worker writes.
 */
#ifndef PGCB_QUEUE_RULES_H
#define PGCB_QUEUE_RULES_H

typedef enum PgcbRulesLook
{
	PGCB_RULES_NONE,			/* no table we write has a rule that fires */
	PGCB_RULES_FOUND,			/* *tables names them */
	PGCB_RULES_UNKNOWN			/* a table was locked: keep the last answer */
} PgcbRulesLook;

/*
 * Look at the extension's tables that the worker writes; with
 * PGCB_RULES_FOUND, *tables is a comma-separated list (palloc'd).  Call
 * inside a transaction.
 */
extern PgcbRulesLook pgcb_queue_rules_look(char **tables);

/*
 * Whether one of those tables' relcache entries was invalidated since the
 * last look (CREATE RULE invalidates it): the look is due again.
 */
extern bool pgcb_queue_rules_changed(void);

/* Into buf: that the engine does not deliver while those tables have rules. */
extern void pgcb_queue_rules_message(char *buf, Size len, const char *tables);

/*
 * Report it at elevel (LOG in the worker, saying the deliveries wait;
 * ERROR in process_callbacks()), with what to do.
 */
extern void pgcb_queue_rules_report(int elevel, const char *tables);

#endif							/* PGCB_QUEUE_RULES_H */
