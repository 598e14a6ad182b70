SET client_min_messages = warning;
\set VERBOSITY default

--
-- Standard Webhooks v1 signatures: callback.sign(), callback.verify_signature(),
-- callback.generate_secret(), callback.validate_secret().  Assumes pg_callback
-- is installed in this database.  Never prints a random value.
--
\set secret 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
\set msg_id 'msg_p5jXN8AQM9LWM0D4loKWxJek'
\set body '{"test": 2432232314}'
\set good 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='

-- The official test vector of the Standard Webhooks libraries.
SELECT callback.sign(:'secret', :'msg_id', 1614265330, :'body');
SELECT callback.sign(:'secret', :'msg_id', 1614265330, :'body') = :'good' AS matches_vector;

-- More vectors, computed independently (Python hmac): empty body, timestamp 0,
-- a negative timestamp, newlines and quotes in the body.
SELECT callback.sign(:'secret', 'msg_x', 0, '')
       = 'v1,s7gmYAvVmW26hPfw/Vq2odZlnzz7iOWrMg687lYghMI=' AS empty_body;
SELECT callback.sign(:'secret', 'msg_x', -1, E'a\nb "c"')
       = 'v1,kc/DRcth2kzgPoqOl+3Nd3Ybr9lfRjfyTJ37Z16er1A=' AS newline_body;

-- verify_signature: the vector is years old, so it needs a huge tolerance.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 '100 years') AS accepted;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 '178000000 years') AS accepted_largest_tolerance;
-- ... and is outside the default 5 minutes, or a day.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good')
    AS outside_default_tolerance;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 '1 day') AS outside_one_day;

-- Tampering with the body, the id, the timestamp or the secret.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, '{"test": 2432232315}',
                                 :'good', '100 years') AS tampered_body;
SELECT callback.verify_signature(:'secret', 'msg_p5jXN8AQM9LWM0D4loKWxJeK', 1614265330,
                                 :'body', :'good', '100 years') AS tampered_id;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265331, :'body', :'good',
                                 '100 years') AS tampered_timestamp;
SELECT callback.verify_signature('whsec_' || translate(encode(decode(repeat('ab', 32), 'hex'),
                                                              'base64'), E'\n', ''),
                                 :'msg_id', 1614265330, :'body', :'good',
                                 '100 years') AS other_secret;
SELECT callback.verify_signature(:'secret', '', 1614265330, :'body', :'good',
                                 '100 years') AS empty_id;

-- Several space-separated signatures, as while a secret is rotated.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body',
                                 'v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= ' || :'good',
                                 '100 years') AS good_second;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body',
                                 :'good' || ' v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
                                 '100 years') AS good_first;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body',
                                 'v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= '
                                 'v1,BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=',
                                 '100 years') AS neither_good;
-- Malformed entries do not match, and do not hide a good one.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body',
                                 'garbage  v2,xyz , v1, ' || :'good',
                                 '100 years') AS good_after_garbage;
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', h,
                                 '100 years') AS malformed_only
FROM unnest(ARRAY['', ' ', 'v1,', 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE',
                  'v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
                  'g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
                  :'good' || 'x']) AS h;

-- The tolerance is measured from the transaction start (now()), both ways.
SELECT callback.verify_signature(:'secret', 'msg_now', t, 'b',
                                 callback.sign(:'secret', 'msg_now', t, 'b')) AS now_default
FROM (SELECT extract(epoch FROM now())::bigint AS t) AS n;
SELECT d AS offset_s,
       callback.verify_signature(:'secret', 'msg_now', t + d, 'b',
                                 callback.sign(:'secret', 'msg_now', t + d, 'b')) AS default_5min,
       callback.verify_signature(:'secret', 'msg_now', t + d, 'b',
                                 callback.sign(:'secret', 'msg_now', t + d, 'b'),
                                 '15 minutes') AS within_15min
FROM (SELECT floor(extract(epoch FROM now()))::bigint AS t) AS n,
     unnest(ARRAY[-600, -240, 240, 600]) AS d
ORDER BY d;
-- Timestamps at the ends of bigint are simply out of tolerance.
SELECT callback.verify_signature(:'secret', 'msg_x', t, 'b',
                                 callback.sign(:'secret', 'msg_x', t, 'b'),
                                 '178000000 years') AS extreme_timestamp
FROM unnest(ARRAY[9223372036854775807, -9223372036854775808]) AS t;

-- A negative tolerance is an error.
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 '-1 second');
SELECT callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 '1 day -25 hours');

-- sign() refuses ids that are empty or would make "id.timestamp.body" ambiguous.
SELECT callback.sign(:'secret', '', 1614265330, :'body');
SELECT callback.sign(:'secret', 'msg.1', 1614265330, :'body');

-- generate_secret(): "whsec_" + base64 of 32 bytes, new each call.
SELECT s LIKE 'whsec\_%' AS has_prefix,
       length(s) AS length,
       length(decode(substr(s, 7), 'base64')) AS key_bytes
FROM callback.generate_secret() AS s;
SELECT callback.generate_secret() <> callback.generate_secret() AS two_calls_differ;
SELECT count(DISTINCT callback.generate_secret()) AS distinct_of_100
FROM generate_series(1, 100);
SELECT callback.validate_secret(s) FROM callback.generate_secret() AS s;
SELECT callback.verify_signature(s, 'msg_1', 1614265330, 'x',
                                 callback.sign(s, 'msg_1', 1614265330, 'x'),
                                 '100 years') AS round_trip
FROM callback.generate_secret() AS s;

-- validate_secret(): keys of 24 and 64 bytes are the bounds.
SELECT callback.validate_secret(:'secret');
SELECT callback.validate_secret('whsec_' || translate(encode(decode(repeat('ab', 64), 'hex'),
                                                             'base64'), E'\n', ''));
-- Malformed secrets, each an error that does not echo the secret.
SELECT callback.validate_secret('');
SELECT callback.validate_secret('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT callback.validate_secret('WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT callback.validate_secret('whsec_');
SELECT callback.validate_secret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!');
SELECT callback.validate_secret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS');
SELECT callback.validate_secret('whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw');
SELECT callback.validate_secret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa=w');
SELECT callback.validate_secret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw_-==');
SELECT callback.validate_secret('whsec_' || translate(encode(decode(repeat('ab', 23), 'hex'),
                                                             'base64'), E'\n', ''));
SELECT callback.validate_secret('whsec_' || translate(encode(decode(repeat('ab', 65), 'hex'),
                                                             'base64'), E'\n', ''));
SELECT callback.validate_secret('whsec_' || repeat('A', 1000));
-- sign() and verify_signature() give the same error for a malformed secret.
SELECT callback.sign('whsec_c2hvcnQ=', :'msg_id', 1614265330, :'body');
SELECT callback.verify_signature('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', :'msg_id', 1614265330,
                                 :'body', :'good');

-- STRICT: any NULL argument gives NULL.
SELECT callback.validate_secret(NULL) IS NULL AS validate_null;
SELECT callback.sign(NULL, :'msg_id', 1614265330, :'body') IS NULL AS sign_null_secret,
       callback.sign(:'secret', NULL, 1614265330, :'body') IS NULL AS sign_null_id,
       callback.sign(:'secret', :'msg_id', NULL, :'body') IS NULL AS sign_null_timestamp,
       callback.sign(:'secret', :'msg_id', 1614265330, NULL) IS NULL AS sign_null_body;
SELECT callback.verify_signature(NULL, :'msg_id', 1614265330, :'body', :'good') IS NULL AS v_secret,
       callback.verify_signature(:'secret', NULL, 1614265330, :'body', :'good') IS NULL AS v_id,
       callback.verify_signature(:'secret', :'msg_id', NULL, :'body', :'good') IS NULL AS v_ts,
       callback.verify_signature(:'secret', :'msg_id', 1614265330, NULL, :'good') IS NULL AS v_body,
       callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', NULL) IS NULL AS v_header,
       callback.verify_signature(:'secret', :'msg_id', 1614265330, :'body', :'good',
                                 NULL) IS NULL AS v_tolerance;
