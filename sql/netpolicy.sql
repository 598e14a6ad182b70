-- netpolicy: URL, header and address checks (SSRF protection).
-- Runs against a cluster with callback.ssrf_allowlist = '127.0.0.0/8, ::1/128'
-- in postgresql.conf: loopback is allowed, every other local range refused.
SET client_min_messages = warning;
\set VERBOSITY default

SHOW callback.ssrf_allowlist;

-- The setting is reloadable only; its check hook still vets ALTER SYSTEM.
SET callback.ssrf_allowlist = '';
ALTER SYSTEM SET callback.ssrf_allowlist = '127.0.0.0/8, garbage';
ALTER SYSTEM SET callback.ssrf_allowlist = '10.0.0.0/33';
ALTER SYSTEM SET callback.ssrf_allowlist = '0x7f.1/8';

-- SSRF: every spelling of a refused address
SELECT callback.validate_url('http://10.0.0.1/hook');
SELECT callback.validate_url('http://172.16.5.4/');
SELECT callback.validate_url('http://192.168.1.1/');
SELECT callback.validate_url('http://169.254.169.254/latest/meta-data/');
SELECT callback.validate_url('http://100.64.0.1/');
SELECT callback.validate_url('http://0.0.0.0:8080/');
SELECT callback.validate_url('http://[fe80::1]/');
SELECT callback.validate_url('http://[fe80::1%25eth0]/');
SELECT callback.validate_url('http://[fc00::1]/');
SELECT callback.validate_url('http://[::ffff:169.254.169.254]/');
SELECT callback.validate_url('http://[::ffff:10.0.0.1]/');
SELECT callback.validate_url('http://[::10.0.0.1]/');
SELECT callback.validate_url('http://[64:ff9b::10.0.0.1]/');
SELECT callback.validate_url('http://167772161/');
SELECT callback.validate_url('http://0xa.1/');
SELECT callback.validate_url('http://012.0.0.1/');
SELECT callback.validate_url('http://0xA9FEA9FE/');
SELECT callback.validate_url('http://%31%30.0.0.1/');
SELECT callback.validate_url('https://224.0.0.1/');
SELECT callback.validate_url('https://255.255.255.255/');

-- Loopback, in any spelling, is allowlisted here
SELECT u AS allowed_url, callback.validate_url(u)
  FROM (VALUES ('http://127.0.0.1/hook'), ('http://127.1/'), ('http://2130706433/'),
               ('http://0x7f000001:8080/'), ('http://017700000001/'),
               ('http://[::1]:8080/hook'), ('http://[::ffff:127.0.0.1]/')) v(u);

-- Malformed or unsupported URLs
SELECT callback.validate_url('ftp://example.com/file');
SELECT callback.validate_url('file:///etc/passwd');
SELECT callback.validate_url('gopher://example.com/');
SELECT callback.validate_url('not a url');
SELECT callback.validate_url('example.com/hook');
SELECT callback.validate_url('');
SELECT callback.validate_url('http://');
SELECT callback.validate_url('http://user:pw@example.com/');
SELECT callback.validate_url('https://token@example.com/');
SELECT callback.validate_url('http://exa mple.com');
SELECT callback.validate_url(E'http://example.com/\tx');
SELECT callback.validate_url('http://example.com:99999/');
SELECT callback.validate_url('http://[::1/');
SELECT callback.validate_url('http://example.com/' || repeat('a', 3000));

-- Good URLs, the longest allowed among them; host names are judged at connect time
SELECT length(u) AS len, callback.validate_url(u)
  FROM (VALUES ('https://example.com/hook'), ('http://example.com:8080/x?y=1'),
               ('HTTPS://Example.COM/Hook#frag'),
               ('https://example.com/' || repeat('a', 2028))) v(u);
SELECT callback.validate_url('https://example.com/' || repeat('a', 2029));

-- SQLSTATEs: policy refusals are insufficient_privilege, bad input invalid_parameter_value
CREATE FUNCTION pg_temp.url_sqlstate(u text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM callback.validate_url(u);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
SELECT u, pg_temp.url_sqlstate(u)
  FROM (VALUES ('http://10.0.0.1/'), ('http://0xa.1/'), ('http://[::ffff:10.0.0.1]/'),
               ('ftp://example.com/'), ('http://user:pw@example.com/'),
               ('https://example.com/')) v(u);

-- Headers
SELECT callback.validate_headers('[]');
SELECT callback.validate_headers('"x"');
SELECT callback.validate_headers('null');
SELECT callback.validate_headers('{"a": 1}');
SELECT callback.validate_headers('{"a": null}');
SELECT callback.validate_headers('{"a": {"b": "c"}}');
SELECT callback.validate_headers('{"a": ["b"]}');
SELECT callback.validate_headers('{"bad name": "x"}');
SELECT callback.validate_headers('{"": "x"}');
SELECT callback.validate_headers('{"X-Caf\u00e9": "x"}');
SELECT callback.validate_headers(jsonb_build_object(repeat('a', 257), 'x'));
SELECT callback.validate_headers(E'{"X": "a\\r\\nInjected: 1"}');
SELECT callback.validate_headers(E'{"X": "a\\nb"}');
SELECT callback.validate_headers(E'{"X": "a\\u0001b"}');
-- (NUL never reaches the check: jsonb cannot hold \u0000.)  A lone CR, DEL:
-- refused by validate_headers itself; a tab is allowed.
SELECT callback.validate_headers(E'{"X": "a\\rb"}');
SELECT callback.validate_headers(E'{"X": "a\\u007fb"}');
SELECT callback.validate_headers(E'{"X": "a\\tb"}');
SELECT callback.validate_headers(jsonb_build_object('X-Long', repeat('a', 8193)));
SELECT callback.validate_headers('{"webhook-id": "x"}');
SELECT callback.validate_headers('{"Webhook-Signature": "v1,x"}');
SELECT callback.validate_headers('{"Content-Type": "text/plain"}');
SELECT callback.validate_headers('{"HOST": "evil.example"}');
SELECT callback.validate_headers('{"Transfer-Encoding": "chunked"}');
SELECT callback.validate_headers('{"Expect": "100-continue"}');
SELECT h AS good_headers, callback.validate_headers(h::jsonb)
  FROM (VALUES ('{"Authorization": "Bearer abc"}'), ('{}'),
               (E'{"X-Tab": "a\\tb", "X-Empty": "", "X-Token!#$%&''*+-.^_`|~": "1"}')) v(h);
SELECT callback.validate_headers(jsonb_build_object('X-Max', repeat('a', 8192),
                                                    repeat('n', 256), 'x'));

-- Addresses as curl would connect to them
SELECT a, callback.address_allowed(a)
  FROM (VALUES ('127.0.0.1'::inet), ('127.255.255.254'), ('::1'), ('::ffff:127.0.0.1'),
               ('8.8.8.8'), ('2001:4860:4860::8888'), ('100.128.0.1'), ('172.32.0.1'),
               ('::ffff:8.8.8.8'), ('64:ff9b::808:808'),
               ('10.0.0.1'), ('10.0.0.0/8'), ('172.31.255.255'), ('192.168.0.1'),
               ('169.254.169.254'), ('100.64.0.1'), ('0.0.0.0'), ('192.0.0.8'),
               ('198.18.0.1'), ('224.0.0.1'), ('240.0.0.1'), ('255.255.255.255'),
               ('::'), ('::2'), ('fe80::1'), ('fc00::1'), ('fd00:ec2::254'), ('fec0::1'),
               ('ff02::1'), ('::ffff:10.0.0.1'), ('::ffff:169.254.169.254'),
               ('::10.0.0.1'), ('64:ff9b::a00:1'), ('2002:a00:1::1')) v(a);

-- The IANA special-purpose registries (IPv4 and IPv6), block by block: the
-- first and the last address of each block that is not globally reachable,
-- and the IPv6 forms that carry an IPv4 address.  Every row is refused
-- (allowed = f).  Loopback (127/8, ::1) is allowlisted in this cluster and
-- covered above.
SELECT a AS refused, callback.address_allowed(a) AS allowed
  FROM (VALUES ('0.0.0.0'::inet), ('0.255.255.255'), ('10.0.0.0'), ('10.255.255.255'),
               ('100.64.0.0'), ('100.127.255.255'),
               ('169.254.0.0'), ('169.254.255.255'), ('172.16.0.0'), ('172.31.255.255'),
               ('192.0.0.0'), ('192.0.0.255'), ('192.0.2.0'), ('192.0.2.255'),
               ('192.88.99.0'), ('192.88.99.255'), ('192.168.0.0'), ('192.168.255.255'),
               ('198.18.0.0'), ('198.19.255.255'), ('198.51.100.0'), ('198.51.100.255'),
               ('203.0.113.0'), ('203.0.113.255'), ('224.0.0.0'), ('239.255.255.255'),
               ('240.0.0.0'), ('255.255.255.254'), ('255.255.255.255'),
               ('::'), ('::ffff:10.0.0.1'), ('::ffff:0:10.0.0.1'), ('::ffff:0:192.0.2.1'),
               ('::10.0.0.1'), ('64:ff9b::10.0.0.1'), ('64:ff9b::192.0.2.1'),
               ('64:ff9b:1::'), ('64:ff9b:1:ffff:ffff:ffff:ffff:ffff'), ('64:ff9b:1::808:808'),
               ('100::'), ('100::ffff:ffff:ffff:ffff'), ('100:0:0:1::'), ('100:0:0:1:ffff:ffff:ffff:ffff'),
               ('2001::'), ('2001:0:ffff:ffff:ffff:ffff:ffff:ffff'), ('2001:0:4136:e378:8000:63bf:3fff:fdd2'),
               ('2001:1::1'), ('2001:2::'), ('2001:2:0:ffff:ffff:ffff:ffff:ffff'), ('2001:10::1'),
               ('2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('2001:db8::'), ('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('2002:a00:1::'), ('2002:c000:201::1'), ('2002:7f00:1::1'),
               ('3fff::'), ('3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('5f00::'), ('5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('fc00::'), ('fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('fe80::'), ('febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('fec0::'), ('feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('ff00::'), ('ff02::1'), ('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'),
               ('::2:0:0:1'), ('1::1'), ('4000::1'), ('e000::1')) v(a);

-- Why each new block is refused (one address each).
SELECT u, pg_temp.url_sqlstate(u)
  FROM (VALUES ('http://192.0.2.1/'), ('http://[64:ff9b:1::a00:1]/'), ('http://[::ffff:0:10.0.0.1]/'),
               ('http://[2001::1]/'), ('http://[2001:db8::1]/'), ('http://[100::1]/'),
               ('http://[4000::1]/')) v(u);
SELECT callback.validate_url('http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/');
SELECT callback.validate_url('http://[64:ff9b:1::a00:1]/');
SELECT callback.validate_url('http://[::ffff:0:10.0.0.1]/');
SELECT callback.validate_url('http://[2002:c000:201::1]/');
SELECT callback.validate_url('http://203.0.113.7/');
SELECT callback.validate_url('http://[5f00::1]/');
SELECT callback.validate_url('http://[4000::1]/');

-- Public addresses just outside the blocks, and public IPv4 carried by the
-- IPv6 forms, pass.
SELECT a AS public, callback.address_allowed(a) AS allowed
  FROM (VALUES ('1.1.1.1'::inet), ('9.255.255.255'), ('11.0.0.0'), ('100.63.255.255'),
               ('100.128.0.0'), ('172.15.255.255'), ('172.32.0.0'), ('192.0.1.255'),
               ('192.0.3.0'), ('192.88.98.255'), ('192.88.100.0'), ('198.17.255.255'),
               ('198.20.0.0'), ('198.51.99.255'), ('198.51.101.0'), ('203.0.112.255'),
               ('203.0.114.0'), ('223.255.255.255'),
               ('::ffff:8.8.8.8'), ('::ffff:0:8.8.8.8'), ('64:ff9b::8.8.8.8'), ('2002:808:808::1'),
               ('2001:200::1'), ('2001:4860:4860::8888'), ('2001:db7:ffff::1'), ('2001:db9::1'),
               ('2600::1'), ('3ffe:ffff::1'), ('2a00:1450:4001::1')) v(a);

-- No URL error repeats a password or a token: every error path, each with
-- "user:s3cret@" in the URL (or the secret in the query, where the
-- userinfo check would come first).  Message, detail, hint and context are
-- searched; the message shows the URL redacted.
CREATE FUNCTION pg_temp.url_error(u text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
    hnt text;
    ctx text;
BEGIN
    PERFORM callback.validate_url(u);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    RETURN CASE WHEN position('s3cret' IN concat(msg, det, hnt, ctx)) > 0 THEN 'LEAK ' ELSE '' END
           || st || ' ' || left(msg, 80) || ' / ' || det;
END
$$;
SELECT n, pg_temp.url_error(u) AS error
  FROM (VALUES (1, 'http://user:s3cret@example.com/' || repeat('a', 3000)),
               (2, 'http://user:s3cret@example.com/a b'),
               (3, E'http://user:s3cret@example.com/\n'),
               (4, 'user:s3cret@example.com'),
               (5, 's3cret@example.com/hook'),
               (6, 'http://user:s3cret@/hook'),
               (7, 'http://user:s3cret@example.com:99999/'),
               (8, 'http://user:s3cret@[::1/'),
               (9, 'http://user:s3cret@exa<mple.com/'),
               (10, 'ftp://user:s3cret@example.com/'),
               (11, 'http:/user:s3cret@example.com/'),
               (12, 'http:///user:s3cret@example.com/'),
               (13, 'http://user:s3cret@example.com/'),
               (14, 'http://:s3cret@example.com/'),
               (15, 'https://s3cret@example.com/'),
               (16, 'http://user:s3cret@10.0.0.1/'),
               (17, 'http://10.0.0.1/hook?token=s3cret'),
               (18, 'http://[::ffff:10.0.0.1]/hook#s3cret'),
               (19, 'http://a@b:s3cret@example.com/'),
               (20, 'http://user:s3cret@example.com:8080:80/')) v(n, u)
 ORDER BY n;
-- through the endpoint functions too (the URL passed as a parameter, so
-- that the context of this harness's own statement does not show it)
CREATE FUNCTION pg_temp.endpoint_error(cmd text, u text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    det text;
    hnt text;
    ctx text;
BEGIN
    EXECUTE cmd USING u;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    RETURN CASE WHEN position('s3cret' IN concat(msg, det, hnt, ctx)) > 0 THEN 'LEAK ' ELSE '' END || msg;
END
$$;
SELECT callback.create_endpoint('np_leak', 'https://example.com/hook') IS NOT NULL AS created;
SELECT f, u, pg_temp.endpoint_error(f, u) AS error
  FROM (VALUES ($$SELECT callback.create_endpoint('np_leak2', $1)$$),
               ($$SELECT callback.alter_endpoint('np_leak', url => $1)$$)) f(f),
       (VALUES ('http://user:s3cret@example.com/'), ('ftp://user:s3cret@example.com/'),
               ('http://10.0.0.1/?code=s3cret'), ('http://user:s3cret@exa mple.com/')) v(u)
 ORDER BY 1, 2;
SELECT callback.drop_endpoint('np_leak');

-- The redaction itself: userinfo, query and fragment always; the path too
-- for the monitor's view (keep_path => false).
SELECT u, callback.redact_url(u) AS in_messages, callback.redact_url(u, false) AS for_monitors
  FROM (VALUES ('https://example.com'), ('https://example.com/'), ('https://example.com:8443/hooks/x'),
               ('https://user:pw@example.com/hooks?token=abc#frag'), ('https://example.com/#frag'),
               ('http://[::1]:8080/p?q=1'), ('http://a@b@example.com/'), ('http:u:pw@example.com'),
               ('u:pw@example.com/x'), ('not a url'), ('')) v(u);

-- amqp:// and amqps:// (issue 13): parsed by librabbitmq, the same address
-- policy, the password never repeated, the vhost kept where paths are kept.
SELECT u, pg_temp.endpoint_error($$SELECT callback.validate_url($1)$$, u) AS error
  FROM (VALUES ('amqp://app:s3cret@example.com:5672/%2F?exchange=orders&routing_key=k'),
               ('amqps://app:s3cret@example.com/prod?mandatory=false'),
               ('AMQP://example.com'), ('amqp://app:s3cret@/vh'), ('amqp://app:s3cret@example.com:0/'),
               ('amqp://app:s3cret@example.com/a/b'), ('amqp://app:s3cret@example.com/?queue=s3cret'),
               ('amqp://app:s3cret@example.com/?exchange=a%20b'), ('amqp://app:s3cret@10.0.0.1/'),
               ('amqp://app:s3cret@[::1]:5672/'), ('amqp:app:s3cret@example.com')) v(u);
SELECT callback.redact_url('amqp://app:s3cret@example.com:5672/prod?exchange=orders') AS in_messages,
       callback.redact_url('amqp://app:s3cret@example.com:5672/prod?exchange=orders', false) AS for_monitors;
