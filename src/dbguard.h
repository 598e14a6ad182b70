/*
 * dbguard.h
 *		Keeps DROP DATABASE from waiting on (or failing because of) the
 *		delivery worker connected to that database.
 */
#ifndef PGCB_DBGUARD_H
#define PGCB_DBGUARD_H

extern void pgcb_dbguard_init(void);

#endif							/* PGCB_DBGUARD_H */
