/*
 * attempt_history.h
 *		Which attempts leave a callback_attempts row (callback.attempt_history).
 */
#ifndef PGCB_ATTEMPT_HISTORY_H
#define PGCB_ATTEMPT_HISTORY_H

/*
 * Whether the attempt just written to its queue row also needs its
 * callback_attempts row: delivered or not, its number (from 1), whether the
 * row shows an earlier attempt (its last_attempt_at, which a redrive
 * keeps), and its error (NULL: none).
 */
extern bool pgcb_attempt_history_keeps(bool delivered, int attempt, bool attempted_before,
									   const char *error);

#endif							/* PGCB_ATTEMPT_HISTORY_H */
