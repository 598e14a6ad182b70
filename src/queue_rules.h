/*
 * queue_rules.h
 *		Whether an operator put rules on the tables the worker writes.
 */
#ifndef PGCB_QUEUE_RULES_H
#define PGCB_QUEUE_RULES_H

/*
 * The extension's tables that the worker writes and that have rules (a
 * comma-separated list, palloc'd), or NULL when none has.  Call inside a
 * transaction.
 */
extern char *pgcb_queue_tables_with_rules(void);

/* Into buf: that the engine does not deliver while those tables have rules. */
extern void pgcb_queue_rules_message(char *buf, Size len, const char *tables);

/* Report that message at elevel (LOG in the worker, ERROR in SQL), with what to do. */
extern void pgcb_queue_rules_report(int elevel, const char *tables);

#endif							/* PGCB_QUEUE_RULES_H */
