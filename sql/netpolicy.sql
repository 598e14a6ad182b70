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
