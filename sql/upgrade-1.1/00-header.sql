/*
 * pg_callback--1.0--1.1.sql: from 1.0 (shipped) to 1.1.
 *
 * Built by `make` from the parts in sql/upgrade-1.1 (NN-name.sql), in name order, one part per
 * change.  A fresh CREATE EXTENSION runs pg_callback--1.0.sql and then this
 * script, so an upgraded database and a new one run the same statements.
 */

\echo Use "ALTER EXTENSION pg_callback UPDATE TO '1.1'" to load this file. \quit
