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


def test_quiet_brackets_ask_the_runs_given():
    steal = [0.0, 0.9, 0.04, 0.2, 0.0, None, 0.0]
    keep = trigger.quiet(steal)
    assert keep(0, 2)             # the variant's own run (1) is not asked
    assert not keep(2, 4, 3)      # one run stolen from
    assert not keep(4, 5)         # one run not measured
    assert not trigger.quiet([trigger.QUIET_STEAL] * 3)(0, 2)


def test_plain_noise_keeps_only_the_brackets_kept():
    tps = [100.0, 50.0, 100.0, 60.0, 120.0, 70.0, 100.0]
    # plain at 0, 2, 4, 6: the plain runs at 2 and 4 each against the two around them
    assert trigger.plain_noise(tps) == [100.0 / ((100.0 + 120.0) / 2), 120.0 / ((100.0 + 100.0) / 2)]
    steal = [0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0]
    assert trigger.plain_noise(tps, keep=trigger.quiet(steal)) == []
    steal[4] = 0.0
    assert len(trigger.plain_noise(tps, keep=trigger.quiet(steal))) == 2


def rounds_of(variant_tps, plain_tps, steal):
    """single-row results as pgbench_rounds leaves them: one round per
    entry, plain around one variant "row" (P row P)"""
    out = {"plain": {"tps": [], "pg_us": [], "worker_us": []},
           "row": {"tps": [], "pg_us": [], "worker_us": []}, "_rounds": []}
    for v, (p0, p1), st in zip(variant_tps, plain_tps, steal):
        out["_rounds"].append({"order": ["plain", "row", "plain"], "tps": [p0, v, p1], "steal": st})
        out["plain"]["tps"] += [p0, p1]
        out["row"]["tps"].append(v)
    return out


def test_summarize_single_brackets_and_quiet_ones():
    out = rounds_of([90.0, 45.0, 80.0], [(100.0, 100.0), (40.0, 60.0), (100.0, 60.0)],
                    [[0.0, 0.5, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.01]])
    trigger.summarize_single(out, ["plain", "row"])
    assert out["row"]["ratio_rounds"] == [0.9, 0.9, 1.0]
    assert out["row"]["ratio"] == 0.9
    # round 1 is quiet though its variant's run was stolen from; round 2 is not
    assert out["row"]["quiet_ratio_rounds"] == [0.9, 1.0]
    assert out["plain"]["ratio"] == 1.0 and out["plain"]["quiet_ratio"] is None
    # a round of three slices has no plain run with a plain run on each side
    assert out["plain"]["noise_rounds"] == []


def test_settled_only_when_the_interval_is_on_one_side():
    low = {"ratio_rounds": [0.70 + 0.01 * i for i in range(10)]}   # CI x(2)..x(9): 0.71-0.78
    assert trigger.settled(low, "ratio", 0.90) == "settled"
    assert trigger.settled(low, "ratio", 0.75) == "undecided"
    assert trigger.settled(low, "ratio", 0.70) == "settled"       # above: lo >= threshold
    assert trigger.settled({"ratio_rounds": [0.5] * 5}, "ratio", 0.9) is None
    check = ("what", "0.73x", ">= 0.90x plain", False, "settled")
    assert trigger.check_verdict(check) == "not met (settled)"
    assert trigger.check_verdict(check[:3] + (True, "undecided")).startswith("met (undecided")
    assert trigger.check_verdict(check[:3] + (None, None)) == "not available"


def test_median_ci_with_ties_and_many_values():
    assert median_ci([1.0] * 5 + [2.0] * 5) == (1.0, 2.0)
    xs = list(range(2000))
    lo, hi = median_ci(xs)
    assert lo < 1000 <= hi and hi - lo < 100
