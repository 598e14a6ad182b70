/*
 * 98-queue-storage: what a queue row costs on its way in and through its
 * transitions.
 *
 * callback_queue_finished was a BRIN index on finished_at.  BRIN takes an
 * entry for every new row version, so the trigger's insert, the claim and
 * the write-back each paid for one (8.7k of the 60k instructions the
 * trigger added to an insert, by callgrind), although only purge() reads
 * it, and only for finished rows.  A partial btree over the finished rows
 * takes one entry per delivery, when it finishes, and none on the way in.
 */
DROP INDEX callback.callback_queue_finished;
CREATE INDEX callback_queue_finished ON callback.callback_queue (finished_at)
    WHERE status IN ('delivered', 'dead');
