/*
 * netpolicy.c
 *		What pg_callback may connect to: checks of endpoint URLs and extra
 *		headers, and the address policy (SSRF protection) that guards every
 *		connection the worker opens.
 *
 * There are two lines of defence.  pgcb_netpolicy_check_url() gives a clear
 * error when an endpoint is saved with a URL whose host is an address (in any
 * spelling) that the policy refuses.  It never resolves host names: a name
 * can resolve to a public address today and to 127.0.0.1 tomorrow (DNS
 * rebinding).  The real guard is pgcb_netpolicy_opensocket(), curl's
 * opensocket callback, which judges each address curl is about to connect to,
 * after DNS, every time.
 *
 * pgcb_netpolicy_address_allowed() runs inside that curl callback in the
 * worker, where an ereport(ERROR) would longjmp through libcurl, and inside
 * the GUC check hook in the postmaster.  So it, the allowlist parser and
 * everything they call never ereport and never palloc: the parsed allowlist
 * lives in malloc'd memory, and anything that goes wrong refuses (fails
 * closed).
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/jsonb.h"

#include "amqp_transport.h"
#include "guc.h"
#include "netpolicy.h"
#include "notify_target.h"

/* Longest URL accepted; browsers and proxies commonly stop near here. */
#define PGCB_URL_MAX_LEN			2048
#define PGCB_HEADER_NAME_MAX_LEN	256
#define PGCB_HEADER_VALUE_MAX_LEN	8192
/* How much of a long or odd value an error message repeats. */
#define PGCB_SHOW_MAX_LEN			64

#define NETPOLICY_HINT_ALLOWLIST \
	"Add the address to callback.ssrf_allowlist to allow it."
#define NETPOLICY_HINT_URL \
	"Give an absolute http or https URL, such as https://example.com/hook."
#define NETPOLICY_HINT_HEADERS \
	"Give headers as a JSON object of strings, such as {\"Authorization\": \"Bearer ...\"}."

/* An address block: family, network address (host bits zero), prefix length. */
typedef struct NetBlock
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;			/* prefix length */
	unsigned char addr[16];		/* 4 bytes used for AF_INET */
} NetBlock;

typedef struct BlockedRange
{
	const char *cidr;
	const char *what;
} BlockedRange;

/*
 * Refused unless allowlisted: every block of the IANA IPv4 and IPv6
 * special-purpose address registries that is not globally reachable, plus
 * multicast, broadcast and the reserved 240/4.  More specific blocks come
 * first so that an address is named for what it is (Teredo before the IETF
 * block that holds it, 255.255.255.255 before 240/4).  Checked before the
 * embedded forms below, so that ::1 is "loopback", not "IPv4-compatible
 * 0.0.0.1".  Audited against the registries as of 2025 (RFC 6890 and its
 * updates: 8215, 9602, 9637, 9780).
 */
static const BlockedRange blocked_ranges[] = {
	{"0.0.0.0/8", "\"this\" network"},
	{"10.0.0.0/8", "private network"},
	{"100.64.0.0/10", "carrier-grade NAT"},
	{"127.0.0.0/8", "loopback"},
	{"169.254.0.0/16", "link-local, cloud metadata"},
	{"172.16.0.0/12", "private network"},
	{"192.0.0.0/24", "IETF protocol assignments"},
	{"192.0.2.0/24", "documentation (TEST-NET-1)"},
	{"192.88.99.0/24", "6to4 relay anycast, deprecated"},
	{"192.168.0.0/16", "private network"},
	{"198.18.0.0/15", "benchmarking"},
	{"198.51.100.0/24", "documentation (TEST-NET-2)"},
	{"203.0.113.0/24", "documentation (TEST-NET-3)"},
	{"224.0.0.0/4", "multicast"},
	{"255.255.255.255/32", "broadcast"},
	{"240.0.0.0/4", "reserved"},
	{"::/128", "unspecified"},
	{"::1/128", "loopback"},
	{"64:ff9b:1::/48", "local-use NAT64"},
	{"100::/64", "discard-only"},
	{"100:0:0:1::/64", "dummy prefix"},
	{"2001::/32", "Teredo"},
	{"2001:2::/48", "benchmarking"},
	{"2001::/23", "IETF protocol assignments"},
	{"2001:db8::/32", "documentation"},
	{"3fff::/20", "documentation"},
	{"5f00::/16", "segment routing SIDs"},
	{"fc00::/7", "unique local"},
	{"fe80::/10", "link-local"},
	{"fec0::/10", "site-local"},
	{"ff00::/8", "multicast"},
};

/*
 * IPv6 blocks that carry an IPv4 address, which the kernel (mapped), a
 * translator (SIIT, NAT64), or a tunnel (compatible, 6to4) turns into an
 * IPv4 connection: the embedded address is held to the IPv4 rules.  The
 * mapped block must stay first (allowlisted() uses it).  Teredo also embeds
 * addresses (obfuscated) but is refused whole, above.
 */
typedef struct EmbeddedRange
{
	const char *cidr;
	int			offset;			/* byte where the IPv4 address starts */
	const char *what;
} EmbeddedRange;

static const EmbeddedRange embedded_ranges[] = {
	{"::ffff:0:0/96", 12, "IPv4-mapped"},
	{"::ffff:0:0:0/96", 12, "IPv4-translated (SIIT)"},
	{"::/96", 12, "IPv4-compatible"},
	{"64:ff9b::/96", 12, "NAT64"},
	{"2002::/16", 2, "6to4"},
};

/*
 * Any other IPv6 address outside global unicast (2000::/3) is unassigned or
 * reserved by the IETF: nothing a public endpoint lives on.
 */
#define GLOBAL_UNICAST_V6 "2000::/3"

/* Headers pg_callback sets itself, or that would break the request framing. */
static const char *const owned_headers[] = {
	"content-type",
	"content-length",
	"host",
	"transfer-encoding",
	"connection",
	"expect",
};

/* Parsed forms of the two tables above, built on first use. */
static NetBlock blocked_blocks[lengthof(blocked_ranges)];
static NetBlock embedded_blocks[lengthof(embedded_ranges)];
static NetBlock global_unicast_v6;
static bool tables_ready = false;

/* Parsed callback.ssrf_allowlist, and the string it was parsed from. */
static char *allow_src = NULL;
static NetBlock *allow_blocks = NULL;
static int	allow_count = 0;

PG_FUNCTION_INFO_V1(validate_url);
PG_FUNCTION_INFO_V1(validate_headers);
PG_FUNCTION_INFO_V1(address_allowed);
PG_FUNCTION_INFO_V1(redact_url);

static inline bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Parse one "address[/bits]" item of len bytes.  Only canonical spellings
 * (inet_pton) are taken: the allowlist is written by an administrator, and
 * "10.1/8" is more likely a mistake than a wish.  Host bits are cleared, as
 * the cidr type would insist.
 */
static bool
parse_cidr(const char *item, size_t len, NetBlock *out)
{
	char		buf[INET6_ADDRSTRLEN + 5];
	char	   *slash;
	int			maxbits;
	int			i;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, item, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';

	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->addr) == 1)
	{
		out->family = AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, buf, out->addr) == 1)
	{
		out->family = AF_INET6;
		maxbits = 128;
	}
	else
		return false;

	out->bits = maxbits;
	if (slash != NULL)
	{
		const char *d = slash + 1;

		if (*d == '\0')
			return false;
		out->bits = 0;
		for (; *d != '\0'; d++)
		{
			if (*d < '0' || *d > '9')
				return false;
			out->bits = out->bits * 10 + (*d - '0');
			if (out->bits > maxbits)
				return false;
		}
	}

	for (i = 0; i < 16; i++)
	{
		int			keep = out->bits - i * 8;

		if (keep <= 0)
			out->addr[i] = 0;
		else if (keep < 8)
			out->addr[i] &= (unsigned char) (0xFF << (8 - keep));
	}
	return true;
}

/*
 * Walk a comma-separated list of CIDR blocks; blank items are skipped.  With
 * out set, the blocks are stored there (room for one per comma, plus one).
 * On a bad item, returns false with *bad and *badlen pointing into list.
 */
static bool
parse_allowlist(const char *list, NetBlock *out, int *count,
				const char **bad, size_t *badlen)
{
	const char *p = list;
	int			n = 0;

	for (;;)
	{
		const char *comma = strchr(p, ',');
		const char *start = p;
		const char *end = comma != NULL ? comma : p + strlen(p);

		while (start < end && is_blank(*start))
			start++;
		while (end > start && is_blank(end[-1]))
			end--;
		if (start < end)
		{
			NetBlock	block;

			if (!parse_cidr(start, end - start, &block))
			{
				*bad = start;
				*badlen = end - start;
				return false;
			}
			if (out != NULL)
				out[n] = block;
			n++;
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*count = n;
	return true;
}

/*
 * The GUC check hook's helper.  *bad points to static storage holding the
 * offending item (clipped), valid until the next call: no allocation here,
 * as this runs in the postmaster too.
 */
bool
pgcb_netpolicy_allowlist_is_valid(const char *list, char **bad)
{
	static char badbuf[PGCB_SHOW_MAX_LEN + 4];
	const char *item;
	size_t		len;
	int			count;

	if (list == NULL || parse_allowlist(list, NULL, &count, &item, &len))
		return true;

	if (len > PGCB_SHOW_MAX_LEN)
	{
		/* clip on a character boundary, so the message stays valid UTF-8 */
		len = PGCB_SHOW_MAX_LEN;
		while (len > 0 && (item[len] & 0xC0) == 0x80)
			len--;
		memcpy(badbuf, item, len);
		strcpy(badbuf + len, "...");
	}
	else
	{
		memcpy(badbuf, item, len);
		badbuf[len] = '\0';
	}
	if (bad != NULL)
		*bad = badbuf;
	return false;
}

static void
load_tables(void)
{
	size_t		i;

	if (tables_ready)
		return;
	for (i = 0; i < lengthof(blocked_ranges); i++)
		(void) parse_cidr(blocked_ranges[i].cidr, strlen(blocked_ranges[i].cidr),
						  &blocked_blocks[i]);
	for (i = 0; i < lengthof(embedded_ranges); i++)
		(void) parse_cidr(embedded_ranges[i].cidr, strlen(embedded_ranges[i].cidr),
						  &embedded_blocks[i]);
	(void) parse_cidr(GLOBAL_UNICAST_V6, strlen(GLOBAL_UNICAST_V6), &global_unicast_v6);
	tables_ready = true;
}

/*
 * Make allow_blocks match the current callback.ssrf_allowlist.  The setting
 * can change at any reload, so the parsed form is keyed on the string.
 * Returns false only when out of memory.
 */
static bool
load_allowlist(void)
{
	const char *src = pgcb_ssrf_allowlist != NULL ? pgcb_ssrf_allowlist : "";
	const char *p;
	const char *bad;
	size_t		badlen;
	char	   *copy;
	NetBlock   *blocks;
	int			room = 1;
	int			n;

	if (allow_src != NULL && strcmp(allow_src, src) == 0)
		return true;

	for (p = src; *p != '\0'; p++)
		if (*p == ',')
			room++;
	copy = strdup(src);
	blocks = malloc(sizeof(NetBlock) * room);
	if (copy == NULL || blocks == NULL)
	{
		free(copy);
		free(blocks);
		return false;
	}
	/* The check hook has vetted the value; should it not parse, admit nothing. */
	if (!parse_allowlist(src, blocks, &n, &bad, &badlen))
		n = 0;

	free(allow_src);
	free(allow_blocks);
	allow_src = copy;
	allow_blocks = blocks;
	allow_count = n;
	return true;
}

static bool
block_contains(const NetBlock *block, int family, const unsigned char *addr)
{
	int			whole = block->bits / 8;
	int			rest = block->bits % 8;
	unsigned char mask;

	if (block->family != family)
		return false;
	if (memcmp(block->addr, addr, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (unsigned char) (0xFF << (8 - rest));
	return (addr[whole] & mask) == block->addr[whole];
}

/*
 * Does the allowlist admit this address?  An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) also matches IPv4 blocks: it is the same connection.
 */
static bool
allowlisted(int family, const unsigned char *addr)
{
	bool		mapped;
	int			i;

	mapped = family == AF_INET6 && block_contains(&embedded_blocks[0], family, addr);
	for (i = 0; i < allow_count; i++)
	{
		if (block_contains(&allow_blocks[i], family, addr))
			return true;
		if (mapped && block_contains(&allow_blocks[i], AF_INET, addr + 12))
			return true;
	}
	return false;
}

static const BlockedRange *
find_blocked(int family, const unsigned char *addr)
{
	size_t		i;

	for (i = 0; i < lengthof(blocked_ranges); i++)
		if (block_contains(&blocked_blocks[i], family, addr))
			return &blocked_ranges[i];
	return NULL;
}

static void set_why(char *why, size_t whylen, const char *fmt,...) pg_attribute_printf(3, 4);

static void
set_why(char *why, size_t whylen, const char *fmt,...)
{
	va_list		args;

	if (why == NULL || whylen == 0)
		return;
	va_start(args, fmt);
	vsnprintf(why, whylen, fmt, args);
	va_end(args);
}

/*
 * The policy: an allowlisted address passes; one in a blocked range, an IPv6
 * address carrying a blocked IPv4 address, or any other IPv6 address outside
 * global unicast is refused; anything else (a public address) passes.
 */
bool
pgcb_netpolicy_address_allowed(const struct sockaddr *addr,
							   char *why, size_t whylen)
{
	unsigned char bytes[16];
	char		shown[INET6_ADDRSTRLEN];
	int			family;
	const BlockedRange *range;
	size_t		i;

	if (addr == NULL)
	{
		set_why(why, whylen, "no address");
		return false;
	}
	family = addr->sa_family;
	if (family == AF_INET)
		memcpy(bytes, &((const struct sockaddr_in *) addr)->sin_addr, 4);
	else if (family == AF_INET6)
		memcpy(bytes, &((const struct sockaddr_in6 *) addr)->sin6_addr, 16);
	else
	{
		set_why(why, whylen, "address family %d is not IPv4 or IPv6", family);
		return false;
	}
	if (inet_ntop(family, bytes, shown, sizeof(shown)) == NULL)
		strcpy(shown, "?");

	load_tables();
	if (!load_allowlist())
	{
		set_why(why, whylen, "out of memory reading callback.ssrf_allowlist");
		return false;
	}
	if (allowlisted(family, bytes))
		return true;

	range = find_blocked(family, bytes);
	if (range != NULL)
	{
		set_why(why, whylen, "%s is in %s (%s)", shown, range->cidr, range->what);
		return false;
	}

	if (family == AF_INET6)
	{
		for (i = 0; i < lengthof(embedded_ranges); i++)
		{
			const unsigned char *v4 = bytes + embedded_ranges[i].offset;
			char		v4shown[INET_ADDRSTRLEN];

			if (!block_contains(&embedded_blocks[i], AF_INET6, bytes))
				continue;
			range = find_blocked(AF_INET, v4);
			if (range == NULL)
				return true;	/* a public IPv4 address, carried */
			if (inet_ntop(AF_INET, v4, v4shown, sizeof(v4shown)) == NULL)
				strcpy(v4shown, "?");
			set_why(why, whylen, "%s is %s %s, which is in %s (%s)",
					shown, embedded_ranges[i].what, v4shown,
					range->cidr, range->what);
			return false;
		}
		if (!block_contains(&global_unicast_v6, AF_INET6, bytes))
		{
			set_why(why, whylen, "%s is outside %s (reserved)", shown, GLOBAL_UNICAST_V6);
			return false;
		}
	}
	return true;
}

/* Repeat at most PGCB_SHOW_MAX_LEN bytes of s in a message, whole characters only. */
static char *
clip_for_message(const char *s, size_t len)
{
	int			keep;

	if (len <= PGCB_SHOW_MAX_LEN)
		return pnstrdup(s, len);
	keep = pg_mbcliplen(s, len, PGCB_SHOW_MAX_LEN);
	return psprintf("%.*s...", keep, s);
}

/*
 * The form of a URL that messages, logs and views show: the user name and
 * password become three stars, so do the query and the fragment, and the
 * path too without keep_path.  A query often carries a token
 * (?code=..., ?token=...), and a path sometimes does (Slack, Discord), so
 * only the scheme, host and port are sure to be harmless.
 *
 * It reads the string itself, not through curl, so that a URL curl cannot
 * parse is redacted too: an error about a malformed URL must not repeat its
 * password either.  The authority runs from after "scheme:" and its slashes
 * to the first '/', '?' or '#' (RFC 3986: a password must percent-encode
 * those), and the userinfo ends at its LAST '@' (curl takes the first; the
 * last hides more), looked for up to the first '?' or '#' in case the
 * password holds a '/' that was not encoded.
 */
char *
pgcb_netpolicy_redact_url(const char *url, bool keep_path)
{
	StringInfoData out;
	size_t		a = 0;
	size_t		h;
	size_t		e;
	size_t		q;
	size_t		i;
	const char *at = NULL;
	const char *rest;

	initStringInfo(&out);

	/* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" */
	if ((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z'))
	{
		i = 1;
		while ((url[i] >= 'a' && url[i] <= 'z') || (url[i] >= 'A' && url[i] <= 'Z') ||
			   (url[i] >= '0' && url[i] <= '9') || url[i] == '+' || url[i] == '-' ||
			   url[i] == '.')
			i++;
		if (url[i] == ':')
			a = i + 1;
	}
	while (url[a] == '/')
		a++;

	/*
	 * A password that holds an unencoded '/' would end the authority early
	 * and show what follows it.  So the userinfo runs to the last '@' before
	 * any '?' or '#', even past a '/': a path with an '@' (/users/@me) then
	 * loses its host too, which is hiding too much, never too little.
	 */
	q = a + strcspn(url + a, "?#");
	for (i = a; i < q; i++)
		if (url[i] == '@')
			at = url + i;
	h = (at != NULL) ? (size_t) (at + 1 - url) : a;
	e = h + strcspn(url + h, "/?#");

	appendBinaryStringInfo(&out, url, a);
	if (at != NULL)
		appendStringInfoString(&out, "***@");
	appendBinaryStringInfo(&out, url + h, e - h);

	rest = url + e;
	q = strcspn(rest, "?#");
	if (keep_path)
		appendBinaryStringInfo(&out, rest, q);
	else if (q > 1 || (q == 1 && rest[0] != '/'))
		appendStringInfoString(&out, "/***");
	else
		appendBinaryStringInfo(&out, rest, q);
	if (rest[q] == '?')
		appendStringInfoString(&out, "?***");
	else if (rest[q] == '#')
		appendStringInfoString(&out, "#***");
	return out.data;
}

/* A part of a parsed URL, copied to palloc'd memory, or NULL when absent. */
static char *
url_part(CURLU *cu, CURLUPart part)
{
	char	   *value = NULL;
	char	   *copy = NULL;

	if (curl_url_get(cu, part, &value, 0) == CURLUE_OK && value != NULL)
		copy = pstrdup(value);
	curl_free(value);
	return copy;
}

void
pgcb_netpolicy_check_url(const char *url)
{
	size_t		len = strlen(url);
	size_t		i;
	CURLU	   *cu;
	CURLUcode	rc;
	char	   *scheme;
	char	   *host;
	char	   *user;
	const char *authority;
	char	   *password;
	char	   *shown;

	/* notify:channel names no host: notify_target.c judges it */
	if (pgcb_notify_channel(url) != NULL)
	{
		pgcb_notify_check_url(url);
		return;
	}

	/*
	 * Every message below shows the URL redacted, and none repeats the
	 * statement into the log (errhidestmt): the caller's statement holds the
	 * URL in full, password and token included.  The path is hidden too:
	 * some services put the token there (Slack, Discord).
	 */
	shown = pgcb_netpolicy_redact_url(url, false);

	if (len > PGCB_URL_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", clip_for_message(shown, strlen(shown))),
				 errhidestmt(true),
				 errdetail("The URL is %zu bytes long; the limit is %d.",
						   len, PGCB_URL_MAX_LEN),
				 errhint("Send large values in the event body, not the URL.")));

	/* curl would reject most of these, but with a less helpful message */
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) url[i];

		if (c <= ' ' || c == 0x7F)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid callback URL \"%s\"", shown),
					 errhidestmt(true),
					 errdetail("It contains whitespace or a control character at byte %zu.",
							   i + 1),
					 errhint("Percent-encode such characters, for instance a space as %%20.")));
	}

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"\""),
				 errhidestmt(true),
				 errdetail("The URL is empty."),
				 errhint(NETPOLICY_HINT_URL)));

	/* checked by the parser of the code that will connect (librabbitmq) */
	if (pgcb_amqp_is_url(url))
	{
		pgcb_amqp_check_url(url, shown);
		return;
	}

	cu = curl_url();
	if (cu == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	/*
	 * Take any scheme, so that "ftp://..." is refused by us with a hint
	 * rather than by curl as unparseable.
	 */
	rc = curl_url_set(cu, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK)
	{
		const char *detail;

		curl_url_cleanup(cu);

		/* our own words for the common cases: curl's vary between versions */
		switch (rc)
		{
			case CURLUE_BAD_SCHEME:
			case CURLUE_MALFORMED_INPUT:
			case CURLUE_BAD_SLASHES:
				detail = "It is not an absolute URL with a scheme.";
				break;
			case CURLUE_NO_HOST:
				detail = "It has no host.";
				break;
			case CURLUE_BAD_PORT_NUMBER:
				detail = "Its port is not a number between 0 and 65535.";
				break;
			case CURLUE_BAD_IPV6:
				detail = "Its host is not a valid IPv6 address.";
				break;
			case CURLUE_BAD_HOSTNAME:
				detail = "Its host is not a valid host name.";
				break;
			default:
				detail = curl_url_strerror(rc);
				break;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("%s", detail),
				 errhint(NETPOLICY_HINT_URL)));
	}

	/*
	 * curl has normalized the host: numeric IPv4 spellings (2130706433,
	 * 0x7f.1, 127.1) come back dotted, percent-encoding decoded.
	 */
	scheme = url_part(cu, CURLUPART_SCHEME);
	host = url_part(cu, CURLUPART_HOST);
	user = url_part(cu, CURLUPART_USER);
	password = url_part(cu, CURLUPART_PASSWORD);
	curl_url_cleanup(cu);

	if (scheme == NULL ||
		(pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("Its scheme is \"%s\".", scheme ? scheme : ""),
				 errhint("Only http, https, amqp, amqps and notify:<channel> are supported.")));

	/*
	 * curl forgives "http:/x" and "http:///x", reading "x" as the host; a
	 * callback URL must spell its authority out.
	 */
	authority = strstr(url, "://");
	if (authority == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("It is not an absolute URL of the form scheme://host/path."),
				 errhint(NETPOLICY_HINT_URL)));
	if (authority[3] == '/' || authority[3] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("It has no host."),
				 errhint(NETPOLICY_HINT_URL)));

	if (host == NULL || host[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("It has no host."),
				 errhint(NETPOLICY_HINT_URL)));

	if (user != NULL || password != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid callback URL \"%s\"", shown),
				 errhidestmt(true),
				 errdetail("It contains a user name or password."),
				 errhint("Put credentials in headers, such as {\"Authorization\": \"Basic ...\"}.")));

	pgcb_netpolicy_check_host(host, shown);
}

/*
 * An address as host is judged now; names wait for connect time, where
 * each transport checks the address it reached.
 */
void
pgcb_netpolicy_check_host(const char *host, const char *shown)
{
	struct sockaddr_storage ss;
	char		why[PGCB_NETPOLICY_WHY_LEN];
	char		bare[INET6_ADDRSTRLEN + 2];
	size_t		hlen = strlen(host);

	memset(&ss, 0, sizeof(ss));
	/* [::1] from curl, ::1 from librabbitmq */
	if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']' && hlen - 2 < sizeof(bare))
	{
		memcpy(bare, host + 1, hlen - 2);
		bare[hlen - 2] = '\0';
		host = bare;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	/* inet_aton takes every spelling getaddrinfo would */
	else if (inet_aton(host, &((struct sockaddr_in *) &ss)->sin_addr) != 0)
		ss.ss_family = AF_INET;
	else
		return;

	if (!pgcb_netpolicy_address_allowed((struct sockaddr *) &ss, why, sizeof(why)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("callback URL \"%s\" points to a forbidden address", shown),
				 errhidestmt(true),
				 errdetail("%s.", why),
				 errhint(NETPOLICY_HINT_ALLOWLIST)));
}

static const char *
jsonb_type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
		default:
			return "value";
	}
}

/* RFC 7230 tchar */
static bool
is_token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void
check_header_name(const char *name, int len)
{
	int			i;
	size_t		k;
	bool		ok = len >= 1 && len <= PGCB_HEADER_NAME_MAX_LEN;

	for (i = 0; ok && i < len; i++)
		ok = is_token_char((unsigned char) name[i]);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("invalid header name \"%s\"", clip_for_message(name, len)),
				 errdetail("A header name is 1 to %d letters, digits or characters among !#$%%&'*+-.^_`|~.",
						   PGCB_HEADER_NAME_MAX_LEN),
				 errhint(NETPOLICY_HINT_HEADERS)));

	/*
	 * pg_callback writes these; a second copy would confuse the receiver or
	 * break the request.  webhook-* is the Standard Webhooks namespace.
	 */
	for (k = 0; k < lengthof(owned_headers); k++)
	{
		if (pg_strcasecmp(name, owned_headers[k]) == 0)
			break;
	}
	if (k < lengthof(owned_headers) || pg_strncasecmp(name, "webhook-", 8) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("header \"%s\" is set by pg_callback", name),
				 errdetail("pg_callback sets webhook-id, webhook-timestamp, webhook-signature, Content-Type, Content-Length and Host itself, and owns Transfer-Encoding, Connection and Expect."),
				 errhint("Remove \"%s\" from the headers.", name)));
}

static void
check_header_value(const char *name, const JsonbValue *v)
{
	int			i;

	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("value of header \"%s\" must be a JSON string", name),
				 errdetail("It is a JSON %s.", jsonb_type_name(v)),
				 errhint(NETPOLICY_HINT_HEADERS)));

	if (v->val.string.len > PGCB_HEADER_VALUE_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("value of header \"%s\" is too long", name),
				 errdetail("It is %d bytes long; the limit is %d.",
						   v->val.string.len, PGCB_HEADER_VALUE_MAX_LEN)));

	/*
	 * CR or LF would let a value inject headers of its own.  jsonb cannot hold
	 * NUL (it rejects \u0000), but a value must not hold any control
	 * character other than tab.
	 */
	for (i = 0; i < v->val.string.len; i++)
	{
		unsigned char c = (unsigned char) v->val.string.val[i];

		if ((c < ' ' && c != '\t') || c == 0x7F)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errhidestmt(true),
					 errmsg("value of header \"%s\" contains a control character", name),
					 errdetail("Header values may not contain CR, LF, NUL or other control characters except tab."),
					 errhint("Give each header value as a single line.")));
	}
}

/*
 * The errors below keep the statement out of the log (errhidestmt): it holds
 * the other header values, Authorization among them.
 */
void
pgcb_netpolicy_check_headers(Jsonb *headers)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	char	   *name = NULL;

	if (!JB_ROOT_IS_OBJECT(headers))
	{
		const char *type = "array";

		if (JB_ROOT_IS_SCALAR(headers) && JsonbExtractScalar(&headers->root, &v))
			type = jsonb_type_name(&v);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("callback headers must be a JSON object"),
				 errdetail("They are a JSON %s.", type),
				 errhint(NETPOLICY_HINT_HEADERS)));
	}

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		CHECK_FOR_INTERRUPTS();
		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			check_header_name(name, v.val.string.len);
		}
		else if (tok == WJB_VALUE)
			check_header_value(name, &v);
	}
}

curl_socket_t
pgcb_netpolicy_opensocket(void *clientp, curlsocktype purpose,
						  struct curl_sockaddr *address)
{
	char	   *why = (char *) clientp;
	struct sockaddr_storage ss;
	curl_socket_t sock;
	int			socktype;
	char		reason[PGCB_NETPOLICY_WHY_LEN];

	/*
	 * why is not cleared when an address passes: when curl tries several
	 * addresses (IPv6 and IPv4, say), a refusal of one of them stays on
	 * record even if the last attempt then fails for a network reason.  The
	 * caller empties why before each transfer.
	 */
	(void) purpose;
	if (address == NULL || address->addrlen > sizeof(ss) ||
		(address->family == AF_INET && address->addrlen < sizeof(struct sockaddr_in)) ||
		(address->family == AF_INET6 && address->addrlen < sizeof(struct sockaddr_in6)))
	{
		set_why(why, PGCB_NETPOLICY_WHY_LEN, "bad address from curl");
		return CURL_SOCKET_BAD;
	}

	/*
	 * curl's struct declares a plain sockaddr but stores the whole address
	 * behind it; copy addrlen bytes into storage large enough for any.
	 */
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, &address->addr, address->addrlen);
	if (!pgcb_netpolicy_address_allowed((struct sockaddr *) &ss, reason, sizeof(reason)))
	{
		/* recorded as the attempt's error: say who refused and what to do */
		set_why(why, PGCB_NETPOLICY_WHY_LEN,
				"connection refused by the address policy: %s; "
				"add the address to callback.ssrf_allowlist to allow it", reason);
		return CURL_SOCKET_BAD;
	}

	/* what curl itself would do, plus close-on-exec */
	socktype = address->socktype;
#ifdef SOCK_CLOEXEC
	socktype |= SOCK_CLOEXEC;
#endif
	sock = socket(address->family, socktype, address->protocol);
	if (sock == CURL_SOCKET_BAD)
		set_why(why, PGCB_NETPOLICY_WHY_LEN, "could not create socket: %s",
				strerror(errno));
	return sock;
}

/*
 * curl's prereq callback: runs before each request is sent, on a new
 * connection or a kept-alive one.  opensocket judged the address when the
 * connection was made; this judges it again under the allowlist of now, so
 * that narrowing callback.ssrf_allowlist also stops connections already open.
 */
int
pgcb_netpolicy_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
					  int conn_primary_port, int conn_local_port)
{
	char	   *why = (char *) clientp;
	struct sockaddr_storage ss;
	char		reason[PGCB_NETPOLICY_WHY_LEN];

	(void) conn_local_ip;
	(void) conn_primary_port;
	(void) conn_local_port;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, conn_primary_ip, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, conn_primary_ip, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	else
	{
		set_why(why, PGCB_NETPOLICY_WHY_LEN, "bad peer address \"%s\" from curl", conn_primary_ip);
		return CURL_PREREQFUNC_ABORT;
	}
	if (!pgcb_netpolicy_address_allowed((struct sockaddr *) &ss, reason, sizeof(reason)))
	{
		set_why(why, PGCB_NETPOLICY_WHY_LEN,
				"request refused by the address policy: %s; "
				"add the address to callback.ssrf_allowlist to allow it", reason);
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/*
 * SQL: callback.validate_url(url text) returns void.
 */
Datum
validate_url(PG_FUNCTION_ARGS)
{
	pgcb_netpolicy_check_url(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * SQL: callback.validate_headers(headers jsonb) returns void.
 */
Datum
validate_headers(PG_FUNCTION_ARGS)
{
	pgcb_netpolicy_check_headers(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}

/*
 * SQL: callback.address_allowed(address inet) returns boolean.  A netmask is
 * ignored: the address itself is judged, as if curl were about to connect.
 */
Datum
address_allowed(PG_FUNCTION_ARGS)
{
	inet	   *ip = PG_GETARG_INET_PP(0);
	struct sockaddr_storage ss;
	char		why[PGCB_NETPOLICY_WHY_LEN];
	bool		allowed;

	memset(&ss, 0, sizeof(ss));
	if (ip_family(ip) == PGSQL_AF_INET)
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ip_addr(ip), 4);
	}
	else
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ip_addr(ip), 16);
	}

	allowed = pgcb_netpolicy_address_allowed((struct sockaddr *) &ss, why, sizeof(why));
	if (!allowed)
		ereport(DEBUG1, (errmsg_internal("address refused: %s", why)));
	PG_RETURN_BOOL(allowed);
}

/*
 * SQL: callback.redact_url(url text, keep_path boolean DEFAULT true)
 * returns text: the form of url that messages and views may show.
 */
Datum
redact_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(pgcb_netpolicy_redact_url(url, PG_GETARG_BOOL(1))));
}
