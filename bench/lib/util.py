"""Small helpers shared by the parts: console output, medians, percentiles,
free ports, verdicts.  No I/O beyond printing."""

import fractions
import math
import os
import socket
import statistics


def log(msg):
    print("   " + msg, flush=True)


def step(msg):
    print("== " + msg, flush=True)


def plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def median_ci(xs, level=0.95):
    """A distribution-free confidence interval of the median: the order
    statistics x(j) and x(n + 1 - j) of the n values, j the largest rank
    for which the median lies between them with probability >= level (the
    count of values below the median is Binomial(n, 1/2)).  None when n is
    too small for that level (n < 6 for 95 %).  In integers: no float
    overflows at 2^n."""
    xs = sorted(x for x in xs if x is not None)
    n = len(xs)
    level = fractions.Fraction(level).limit_denominator(10 ** 6)
    best = None
    below = 0  # sum of C(n, i) for i < j: 2^n P(Binomial(n, 1/2) < j)
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1)
        # P(x(j) <= median <= x(n + 1 - j)) = 1 - 2 P(Binomial(n, 1/2) < j)
        if fractions.Fraction(2 ** n - 2 * below, 2 ** n) < level:
            break
        best = j
    return None if best is None else (xs[best - 1], xs[n - best])


def percentile(sorted_xs, p):
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def rotated(items, r):
    """items rotated by r: each round starts with another variant, so that
    drift on a shared machine does not always favour the same one."""
    if not items:
        return []
    r %= len(items)
    return items[r:] + items[:r]


def fmt(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)


def verdict(ok):
    """A computed target check: None (no figure) prints nothing."""
    return "" if ok is None else ("met" if ok else "not met")


def free_port(start):
    for port in range(start, start + 200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        if os.path.exists("/tmp/.s.PGSQL.%d" % port):
            continue
        return port
    raise RuntimeError("no free port from %d" % start)


def read_pid(path):
    """The pid on the first line of a pid file, or None."""
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None
