"""Tests of the benchmark's statistics (no PostgreSQL needed): the median's
confidence interval and the brackets of part 2, on which the README's
"settled" and "not settled" verdicts of issue 10's targets rest."""

import math
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from lib.util import median_ci  # noqa: E402
from parts import trigger  # noqa: E402


def coverage(j, n):
    """P(x(j) <= median <= x(n + 1 - j)) for n values of a continuous law."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2.0 ** n


@pytest.mark.parametrize("n", [6, 7, 10, 20, 25, 100])
def test_median_ci_is_the_widest_rank_with_95_percent(n):
    xs = list(range(1, n + 1))
    random.Random(n).shuffle(xs)
    lo, hi = median_ci(xs)
    j = lo  # the values are their ranks
    assert hi == n + 1 - j
    assert coverage(j, n) >= 0.95
    # one rank further in would fall below 95 %
    assert coverage(j + 1, n) < 0.95


def test_median_ci_needs_six_values_and_skips_none():
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_ci([]) is None
    assert median_ci([None, 1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_ci([None, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)
    # 20 rounds: the 6th and the 15th
    assert median_ci([float(x) for x in range(20, 0, -1)]) == (6.0, 15.0)


def test_median_ci_covers_the_median_as_often_as_it_says():
    rng = random.Random(7)
    trials = 3000
    hits = 0
    for _ in range(trials):
        lo, hi = median_ci([rng.expovariate(1.0) for _ in range(20)])
        hits += lo <= math.log(2) <= hi  # the exponential law's median
    # coverage(6, 20) = 0.9586; 3,000 trials put the rate within about 0.011 of it
    assert 0.94 <= hits / trials <= 0.98


def test_brackets_put_plain_around_every_variant():
    order = trigger.bracketed(["plain", "a", "b", "c"], 1)
    assert order == ["plain", "b", "plain", "c", "plain", "a", "plain"]


def test_quiet_brackets_need_all_three_runs_quiet():
    steal = [0.0, 0.01, 0.2, 0.0, 0.04, None, 0.0]
    keep = trigger.quiet(steal)
    assert keep(0, 1, 3)
    assert not keep(1, 2, 3)      # one run stolen from
    assert not keep(4, 5, 6)      # one run not measured
    assert keep(3, 4, 6)
    assert not trigger.quiet([trigger.QUIET_STEAL] * 3)(0, 1, 2)


def test_plain_noise_keeps_only_the_brackets_kept():
    tps = [100.0, 50.0, 100.0, 60.0, 120.0, 70.0, 100.0]
    # plain at 0, 2, 4, 6: the plain runs at 2 and 4 each against the two around them
    assert trigger.plain_noise(tps) == [100.0 / ((100.0 + 120.0) / 2), 120.0 / ((100.0 + 100.0) / 2)]
    steal = [0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0]
    assert trigger.plain_noise(tps, keep=trigger.quiet(steal)) == []
    steal[4] = 0.0
    assert len(trigger.plain_noise(tps, keep=trigger.quiet(steal))) == 2
