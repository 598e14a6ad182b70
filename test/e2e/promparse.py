"""A small, strict parser of the Prometheus text exposition format (0.0.4).

Strict where scrapers are lenient, so that a test fails on anything a
scraper might reject or misread:

- the text is not empty and ends with a newline; no empty lines, no stray
  comment lines;
- every metric family has exactly one "# HELP" and exactly one "# TYPE" line,
  both before its first sample, and its samples are contiguous;
- every sample line is  name{label="value",...} number  (no timestamp, no
  trailing comma), and its name belongs to the family declared last (for a
  summary: name, name_sum, name_count; for a histogram: name_bucket,
  name_sum, name_count);
- label names are [a-zA-Z_][a-zA-Z0-9_]*, never repeated in one sample; label
  values use only the escapes \\\\, \\" and \\n; a summary sample carries a
  quantile label, a histogram bucket an le label;
- numbers are Go-style floats (or NaN, +Inf, -Inf);
- no two samples are the same series (same name and same label set).

parse(text) -> {family name: Family}; ParseError says which line and why.
"""

import math
import re

__all__ = ["ParseError", "Family", "Sample", "parse", "unescape_label", "escape_label"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_TYPES = ("counter", "gauge", "summary", "histogram", "untyped")


class ParseError(ValueError):
    def __init__(self, lineno, line, why):
        super().__init__("line %d: %s: %r" % (lineno, why, line))
        self.lineno = lineno
        self.line = line
        self.why = why


class Sample:
    __slots__ = ("name", "labels", "value", "lineno")

    def __init__(self, name, labels, value, lineno):
        self.name = name
        self.labels = labels      # dict, values unescaped
        self.value = value        # float
        self.lineno = lineno

    def __repr__(self):
        return "Sample(%s%r %r)" % (self.name, self.labels, self.value)


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []

    def __repr__(self):
        return "Family(%s, %s, %d samples)" % (self.name, self.type, len(self.samples))

    def value(self, name=None, **labels):
        """The value of the one sample with exactly these labels."""
        name = name or self.name
        hits = [s for s in self.samples if s.name == name and s.labels == labels]
        if len(hits) != 1:
            raise KeyError("%d samples %s%r" % (len(hits), name, labels))
        return hits[0].value


def escape_label(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def unescape_label(raw):
    """Unescape a label value body (between the quotes); strict."""
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 >= len(raw):
                raise ValueError("dangling backslash")
            n = raw[i + 1]
            if n == "\\":
                out.append("\\")
            elif n == '"':
                out.append('"')
            elif n == "n":
                out.append("\n")
            else:
                raise ValueError("invalid escape \\%s" % n)
            i += 2
        elif c == '"':
            raise ValueError("unescaped double quote")
        elif c == "\n":
            raise ValueError("raw newline")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _unescape_help(raw):
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            n = raw[i + 1] if i + 1 < len(raw) else ""
            if n == "\\":
                out.append("\\")
            elif n == "n":
                out.append("\n")
            else:
                raise ValueError("invalid escape in HELP")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_number(text):
    if text in ("NaN",):
        return float("nan")
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if not _NUMBER.match(text):
        raise ValueError("not a number: %r" % text)
    return float(text)


def _parse_labels(s, pos):
    """s[pos] == '{'; returns (labels dict, position after '}')."""
    labels = {}
    pos += 1
    if pos < len(s) and s[pos] == "}":
        return labels, pos + 1
    while True:
        m = _LABEL_NAME.match(s, pos)
        if not m:
            raise ValueError("bad label name at %d" % pos)
        lname = m.group(0)
        pos = m.end()
        if s[pos:pos + 2] != '="':
            raise ValueError("expected =\" after label %s" % lname)
        pos += 2
        start = pos
        while True:
            if pos >= len(s):
                raise ValueError("unterminated label value")
            c = s[pos]
            if c == "\\":
                pos += 2
                continue
            if c == '"':
                break
            pos += 1
        value = unescape_label(s[start:pos])
        pos += 1  # closing quote
        if lname in labels:
            raise ValueError("label %s repeated" % lname)
        labels[lname] = value
        if pos >= len(s):
            raise ValueError("unterminated label set")
        if s[pos] == ",":
            pos += 1
            if pos < len(s) and s[pos] == "}":
                raise ValueError("trailing comma in label set")
            continue
        if s[pos] == "}":
            return labels, pos + 1
        raise ValueError("expected , or } at %d" % pos)


def _family_of(sample_name, fam):
    """Whether sample_name belongs to family fam."""
    if fam is None:
        return False
    if sample_name == fam.name:
        return fam.type != "histogram"
    suffixes = {"summary": ("_sum", "_count"),
                "histogram": ("_bucket", "_sum", "_count")}.get(fam.type, ())
    return any(sample_name == fam.name + suf for suf in suffixes)


def parse(text):
    if not isinstance(text, str):
        raise ParseError(0, text, "not a string")
    if text == "":
        # no families at all: a scrape of nothing is an error, not a pass
        raise ParseError(0, text, "empty exposition")
    if not text.endswith("\n"):
        raise ParseError(0, text[-80:], "does not end with a newline")
    families = {}
    order = []
    current = None
    closed = set()          # families whose samples are over
    series = set()
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "":
            raise ParseError(lineno, line, "empty line")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE"):
                raise ParseError(lineno, line, "comment that is neither HELP nor TYPE")
            kind, name = parts[1], parts[2]
            if not _METRIC_NAME.match(name):
                raise ParseError(lineno, line, "bad metric name")
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Family(name)
                order.append(name)
            if fam.samples or name in closed:
                raise ParseError(lineno, line, "%s after the family's samples" % kind)
            if current is not None and current is not fam:
                closed.add(current.name)
            current = fam
            if kind == "HELP":
                if fam.help is not None:
                    raise ParseError(lineno, line, "second HELP")
                if len(parts) < 4 or parts[3] == "":
                    raise ParseError(lineno, line, "empty HELP")
                try:
                    fam.help = _unescape_help(parts[3])
                except ValueError as e:
                    raise ParseError(lineno, line, str(e))
            else:
                if fam.type is not None:
                    raise ParseError(lineno, line, "second TYPE")
                if len(parts) != 4 or parts[3] not in _TYPES:
                    raise ParseError(lineno, line, "bad TYPE")
                fam.type = parts[3]
            continue

        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if not m:
            raise ParseError(lineno, line, "bad sample name")
        sname = m.group(0)
        pos = m.end()
        labels = {}
        try:
            if pos < len(line) and line[pos] == "{":
                labels, pos = _parse_labels(line, pos)
            if line[pos:pos + 1] != " ":
                raise ValueError("expected one space before the value")
            rest = line[pos + 1:]
            if " " in rest or "\t" in rest:
                raise ValueError("anything after the value (timestamps are not expected here)")
            value = _parse_number(rest)
        except ValueError as e:
            raise ParseError(lineno, line, str(e))
        if not _family_of(sname, current):
            raise ParseError(lineno, line, "sample outside its family (declared last: %s)"
                             % (current.name if current else None))
        if current.help is None or current.type is None:
            raise ParseError(lineno, line, "sample before the family's HELP and TYPE")
        if current.type == "summary" and sname == current.name and "quantile" not in labels:
            raise ParseError(lineno, line, "summary sample without quantile label")
        if current.type == "histogram" and sname.endswith("_bucket") and "le" not in labels:
            raise ParseError(lineno, line, "histogram bucket without le label")
        key = (sname, tuple(sorted(labels.items())))
        if key in series:
            raise ParseError(lineno, line, "duplicate series")
        series.add(key)
        current.samples.append(Sample(sname, labels, value, lineno))

    for name in order:
        fam = families[name]
        if fam.help is None or fam.type is None:
            raise ParseError(0, name, "family without both HELP and TYPE")
    return families
