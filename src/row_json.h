/*
 * row_json.h
 *		A table row as JSON, byte for byte what row_to_json() gives.
 */
#ifndef PGCB_ROW_JSON_H
#define PGCB_ROW_JSON_H

#include "access/htup.h"
#include "lib/stringinfo.h"
#include "utils/rel.h"

/* Append tuple (a row of rel, in rel's format) as JSON; "null" for NULL. */
extern void pgcb_row_json_append(StringInfo buf, Relation rel, HeapTuple tuple);

#endif							/* PGCB_ROW_JSON_H */
