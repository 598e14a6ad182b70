#!/usr/bin/env node
/*
 * verify.js
 *		An independent check of pg_callback's signatures with the official
 *		Standard Webhooks library (npm "standardwebhooks"), unchanged.
 *
 * Reads JSON Lines on stdin, one delivery per line:
 *
 *   {"headers": {"webhook-id": "...", "webhook-timestamp": "...",
 *                "webhook-signature": "v1,... v1,..."},
 *    "body": "<exact body string>", "secret": "whsec_..."}
 *
 * verifies each with new Webhook(secret).verify(body, headers), prints
 * "verified N of M" on stdout, the reason for each failure on stderr, and
 * exits 1 if any record fails or none was read.
 *
 * The library refuses a timestamp more than 5 minutes from its clock and has
 * no option to change that.  Recorded deliveries are often older, so by
 * default its clock is set to each record's own timestamp while it verifies
 * (the timestamp still counts: it is part of the signed content).  Give
 * --check-timestamp to verify against the real clock instead.
 */
'use strict';

const readline = require('readline');
const { Webhook } = require('standardwebhooks');

const checkTimestamp = process.argv.includes('--check-timestamp');

function verifyRecord(record) {
	const headers = record.headers || {};
	let ts = NaN;

	for (const [name, value] of Object.entries(headers)) {
		if (name.toLowerCase() === 'webhook-timestamp')
			ts = parseInt(value, 10);
	}

	const wh = new Webhook(record.secret);
	const realNow = Date.now;

	/* Only the timestamp check reads Date.now; the library is not changed. */
	if (!checkTimestamp && Number.isFinite(ts))
		Date.now = () => ts * 1000;
	try {
		wh.verify(record.body, headers);
	} finally {
		Date.now = realNow;
	}
}

async function main() {
	const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
	let total = 0;
	let verified = 0;
	let lineNo = 0;

	for await (const line of rl) {
		lineNo++;
		if (line.trim() === '')
			continue;
		total++;
		try {
			verifyRecord(JSON.parse(line));
			verified++;
		} catch (err) {
			/* Never print the record: it holds the secret. */
			process.stderr.write(`line ${lineNo}: ${err.name}: ${err.message}\n`);
		}
	}

	process.stdout.write(`verified ${verified} of ${total}\n`);
	if (total === 0)
		process.stderr.write('no records read\n');
	process.exitCode = total > 0 && verified === total ? 0 : 1;
}

main().catch((err) => {
	process.stderr.write(`${err.stack || err}\n`);
	process.exitCode = 2;
});
