/*
 * tracecontext.c
 *		W3C Trace Context (https://www.w3.org/TR/trace-context/) carried by
 *		events.  An event takes its traceparent and tracestate from
 *		enqueue()'s arguments or from the callback.traceparent /
 *		callback.tracestate settings (SET LOCAL in the writing transaction);
 *		a malformed one is refused when it is written, never dropped on the
 *		way.  Each attempt then sends the event's trace-id and flags with a
 *		parent-id of its own, as a new span of the trace would.
 *
 * The checks are pure (no I/O, no globals): guc.c's check hooks and
 * enqueue() share them.
 *
 * Versions: 00 is the one the specification defines.  ff is forbidden.  A
 * later version (01 to fe) is taken as the specification asks of a
 * version-00 reader: its first 55 characters must parse as version 00 and
 * anything after them must start with '-'.  It is stored as given; the
 * attempts send version 00 (the one we speak) with its trace-id and flags.
 */
#include "postgres.h"

#include "event.h"
#include "guc.h"
#include "tracecontext.h"

static bool
is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * Whether s[0..n) is lowercase hex; *zero tells whether it is all zeros,
 * *upper whether an uppercase hex digit spoilt it (for a better message).
 */
static bool
hex_field(const char *s, int n, bool *zero, bool *upper)
{
	*zero = true;
	*upper = false;
	for (int i = 0; i < n; i++)
	{
		if (!is_lower_hex(s[i]))
		{
			*upper = (s[i] >= 'A' && s[i] <= 'F');
			return false;
		}
		if (s[i] != '0')
			*zero = false;
	}
	return true;
}

bool
pgcb_trace_parent_valid(const char *s, const char **why)
{
	size_t		len = strlen(s);
	bool		zero;
	bool		upper;

	if (len > PGCB_TRACEPARENT_MAX)
	{
		*why = "It is longer than 512 characters.";
		return false;
	}
	if (len < 2 || !hex_field(s, 2, &zero, &upper) || (len > 2 && s[2] != '-'))
	{
		*why = "It does not start with a version of two lowercase hex digits and '-'.";
		return false;
	}
	if (strncmp(s, "ff", 2) == 0)
	{
		*why = "Version ff is forbidden.";
		return false;
	}
	if (strncmp(s, "00", 2) == 0 ? len != PGCB_TRACEPARENT_LEN :
		len < PGCB_TRACEPARENT_LEN || (len > PGCB_TRACEPARENT_LEN && s[PGCB_TRACEPARENT_LEN] != '-'))
	{
		*why = strncmp(s, "00", 2) == 0 ?
			"A version-00 traceparent is exactly 55 characters long." :
			"A traceparent of a later version starts with the 55 characters of version 00, then '-' if anything follows.";
		return false;
	}
	if (!hex_field(s + 3, 32, &zero, &upper) || s[35] != '-')
	{
		*why = upper ? "Its trace-id has uppercase hex digits; only lowercase is allowed." :
			"Its trace-id is not 32 lowercase hex digits followed by '-'.";
		return false;
	}
	if (zero)
	{
		*why = "Its trace-id is all zeros, which is invalid.";
		return false;
	}
	if (!hex_field(s + 36, 16, &zero, &upper) || s[52] != '-')
	{
		*why = upper ? "Its parent-id has uppercase hex digits; only lowercase is allowed." :
			"Its parent-id is not 16 lowercase hex digits followed by '-'.";
		return false;
	}
	if (zero)
	{
		*why = "Its parent-id is all zeros, which is invalid.";
		return false;
	}
	if (!hex_field(s + 53, 2, &zero, &upper))
	{
		*why = upper ? "Its flags have uppercase hex digits; only lowercase is allowed." :
			"Its flags are not 2 lowercase hex digits.";
		return false;
	}
	return true;
}

static bool
is_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '-' || c == '*' || c == '/';
}

/*
 * key = simple-key / tenant-id "@" system-id
 * simple-key = lcalpha 0*255(keychar)
 * tenant-id = (lcalpha / DIGIT) 0*240(keychar); system-id = lcalpha 0*13(keychar)
 */
static bool
tracestate_key_valid(const char *k, int n)
{
	const char *at = memchr(k, '@', n);

	if (at == NULL)
	{
		if (n < 1 || n > 256 || !(k[0] >= 'a' && k[0] <= 'z'))
			return false;
		for (int i = 1; i < n; i++)
			if (!is_key_char(k[i]))
				return false;
		return true;
	}
	else
	{
		int			tn = at - k;
		int			sn = n - tn - 1;

		if (tn < 1 || tn > 241 || sn < 1 || sn > 14 ||
			!((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')) ||
			!(at[1] >= 'a' && at[1] <= 'z'))
			return false;
		for (int i = 1; i < tn; i++)
			if (!is_key_char(k[i]))
				return false;
		for (int i = 1; i < sn; i++)
			if (!is_key_char(at[1 + i]))
				return false;
		return true;
	}
}

/* value = 0*255(chr) nblk-chr; chr = ' ' / nblk-chr; nblk-chr = 0x21-0x7E but ',' and '=' */
static bool
tracestate_value_valid(const char *v, int n)
{
	if (n < 1 || n > 256 || v[n - 1] == ' ')
		return false;
	for (int i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] > 0x7E || v[i] == ',' || v[i] == '=')
			return false;
	return true;
}

/*
 * list = list-member 0*31(OWS "," OWS list-member), 512 characters at most.
 * Empty members (and so an empty list) are allowed, as the specification
 * asks; a key may appear once.
 */
bool
pgcb_trace_state_valid(const char *s, const char **why)
{
	size_t		len = strlen(s);
	const char *keys[PGCB_TRACESTATE_MEMBERS];
	int			key_lens[PGCB_TRACESTATE_MEMBERS];
	int			n = 0;
	const char *p = s;

	if (len > PGCB_TRACESTATE_MAX)
	{
		*why = "It is longer than 512 characters.";
		return false;
	}
	for (;;)
	{
		const char *end = strchr(p, ',');
		const char *b = p;
		const char *e = end ? end : p + strlen(p);
		const char *eq;

		/* OWS around the member */
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e > b)
		{
			if (n == PGCB_TRACESTATE_MEMBERS)
			{
				*why = "It has more than 32 list-members.";
				return false;
			}
			eq = memchr(b, '=', e - b);
			if (eq == NULL)
			{
				*why = "A list-member is not of the form key=value.";
				return false;
			}
			if (!tracestate_key_valid(b, eq - b))
			{
				*why = "A key is not 1 to 256 of a-z 0-9 _ - * / starting with a letter (or tenant@system).";
				return false;
			}
			if (!tracestate_value_valid(eq + 1, e - eq - 1))
			{
				*why = "A value is not 1 to 256 printable ASCII characters without ',' or '=' (and not ending in a space).";
				return false;
			}
			for (int i = 0; i < n; i++)
			{
				if (key_lens[i] == eq - b && memcmp(keys[i], b, key_lens[i]) == 0)
				{
					*why = "A key appears more than once.";
					return false;
				}
			}
			keys[n] = b;
			key_lens[n] = eq - b;
			n++;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return true;
}

/* Whether a tracestate has no member: then there is nothing to store or send. */
static bool
tracestate_empty(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != ',')
			return false;
	return true;
}

static void
check_traceparent(const char *s)
{
	const char *why;

	if (!pgcb_trace_parent_valid(s, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid traceparent \"%s\"", pgcb_event_clip_for_message(s)),
				 errdetail("%s", why),
				 errhint(PGCB_TRACEPARENT_HINT)));
}

static void
check_tracestate(const char *s)
{
	const char *why;

	if (!pgcb_trace_state_valid(s, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tracestate \"%s\"", pgcb_event_clip_for_message(s)),
				 errdetail("%s", why),
				 errhint(PGCB_TRACESTATE_HINT)));
}

/*
 * An argument wins over its setting.  A traceparent given as an argument
 * starts from a clean slate: the session's tracestate belongs to the
 * session's trace, so only a tracestate argument goes with it.  A tracestate
 * without any traceparent means nothing (the specification ignores it) and
 * is refused when given, not stored.  The settings were checked when set.
 */
void
pgcb_trace_for_event(const char *traceparent_arg, const char *tracestate_arg,
					 const char **traceparent, const char **tracestate)
{
	const char *tp = NULL;
	const char *ts = NULL;

	if (traceparent_arg != NULL)
	{
		check_traceparent(traceparent_arg);
		tp = traceparent_arg;
	}
	else if (pgcb_traceparent != NULL && pgcb_traceparent[0] != '\0')
	{
		tp = pgcb_traceparent;
		ts = pgcb_tracestate;
	}
	if (tracestate_arg != NULL)
	{
		check_tracestate(tracestate_arg);
		if (tp == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tracestate given without a traceparent"),
					 errdetail("A tracestate only means something beside the traceparent of its trace."),
					 errhint("Give traceparent => '00-...' too, or SET LOCAL callback.traceparent first.")));
		ts = tracestate_arg;
	}
	if (ts != NULL && tracestate_empty(ts))
		ts = NULL;
	*traceparent = tp;
	*tracestate = ts;
}

void
pgcb_trace_attempt_parent(const char *stored, char *out)
{
	static const char hex[] = "0123456789abcdef";
	uint8		id[8];
	bool		zero;

	do
	{
		if (!pg_strong_random(id, sizeof(id)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		zero = true;
		for (int i = 0; i < 8; i++)
			zero &= id[i] == 0;
	} while (zero);

	memcpy(out, "00-", 3);
	memcpy(out + 3, stored + 3, 32);	/* trace-id */
	out[35] = '-';
	for (int i = 0; i < 8; i++)
	{
		out[36 + 2 * i] = hex[id[i] >> 4];
		out[37 + 2 * i] = hex[id[i] & 0x0f];
	}
	out[52] = '-';
	memcpy(out + 53, stored + 53, 2);	/* flags */
	out[PGCB_TRACEPARENT_LEN] = '\0';
}
