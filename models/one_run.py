"""Lower bounds on epsilon from one run with canaries (Steinke, Nasr, Jagielski 2023).

Each of ``m`` canaries is put into the input independently with probability 1/2. An
attack then guesses, for ``r`` of them, whether it was in, and gets ``v`` right. For an
(epsilon, delta)-DP mechanism the count of correct guesses is dominated by a binomial
with success rate ``e^eps / (1 + e^eps)``, up to a delta term (their Theorem 5.2 with
the simplification of their Proposition 5.7):

    P[V >= v] <= P[Binomial(r, q) >= v] + 2 m delta * max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i

The lower bound is the largest epsilon whose p-value stays below ``alpha``: a mechanism
that were only that private would have produced so many correct guesses with probability
at most ``alpha``. Trying several guess counts costs confidence; ``epsilon_lower_bound``
splits ``alpha`` evenly over them (Bonferroni), so the bound keeps its stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

_EPS_CAP = 50.0  # beyond this q rounds to 1; no run of a few hundred canaries gets near it


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability that an (epsilon, delta)-DP mechanism lets ``v`` of ``r`` guesses be right."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon!r}, {delta!r}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))  # P[v - i <= B < v], i = 1..v
    slack = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * slack, 1.0)


def _bound(*, m: int, r: int, v: int, delta: float, alpha: float) -> float:
    """Largest epsilon (to 1e-4) with p-value below ``alpha``; 0 when even epsilon 0 is not rejected."""
    if p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0
    while high < _EPS_CAP and p_value(m=m, r=r, v=v, epsilon=high, delta=delta) < alpha:
        low, high = high, 2 * high
    while high - low > 1e-4:
        mid = (low + high) / 2
        if p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) < alpha:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class OneRunResult:
    """The best of the guess counts tried: its bound and the guesses that gave it."""

    epsilon_lower_bound: float
    guesses: int
    correct: int


def guess_counts(m: int) -> tuple[int, ...]:
    """Guess counts tried for ``m`` canaries, fixed before any score is seen: m/8, m/4, m/2, m."""
    return tuple(sorted({max(2, m // k) // 2 * 2 for k in (8, 4, 2, 1)}))


def ceiling(m: int, *, delta: float, alpha: float, guesses: Sequence[int] | None = None) -> float:
    """The highest bound ``m`` canaries can give (every guess right): above it no audit can fail."""
    tried = tuple(guesses) if guesses is not None else guess_counts(m)
    return max(_bound(m=m, r=r, v=r, delta=delta, alpha=alpha / len(tried)) for r in tried)


def epsilon_lower_bound(
    scores: Sequence[float],
    members: Sequence[bool],
    *,
    delta: float,
    alpha: float,
    guesses: Sequence[int] | None = None,
    rng: np.random.Generator,
) -> OneRunResult:
    """The one-run bound from an attack's ``scores`` (higher = more likely a member).

    For each guess count ``r`` the attack says "in" for the ``r/2`` highest scores and
    "out" for the ``r/2`` lowest, abstaining on the rest. Ties are broken at random, so
    a score that says nothing gives chance accuracy, not an artefact of the order.

    Args:
        scores: one score per canary.
        members: whether each canary was really put in.
        delta: the mechanism's delta.
        alpha: 1 - confidence, shared by all guess counts tried.
        guesses: guess counts to try (even, <= m); default ``guess_counts(m)``.
        rng: breaks ties.
    """
    s = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(members, dtype=bool)
    m = len(s)
    if m == 0 or len(truth) != m:
        raise ValueError(f"need one membership flag per score, got {len(truth)} for {m} scores")
    tried = tuple(guesses) if guesses is not None else guess_counts(m)
    if any(r % 2 or not 0 < r <= m for r in tried):
        raise ValueError(f"guess counts must be even and in (0, {m}], got {tried}")
    shuffle = rng.permutation(m)
    order = shuffle[np.argsort(s[shuffle], kind="stable")]  # ascending, ties in random order
    best = OneRunResult(0.0, 0, 0)
    for r in tried:
        half = r // 2
        v = int(truth[order[m - half :]].sum() + (~truth[order[:half]]).sum())
        bound = _bound(m=m, r=r, v=v, delta=delta, alpha=alpha / len(tried))
        if best.guesses == 0 or bound > best.epsilon_lower_bound:
            best = OneRunResult(bound, r, v)
    return best
