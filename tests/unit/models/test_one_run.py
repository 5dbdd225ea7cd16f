"""The one-run bound (Steinke, Nasr, Jagielski 2023): closed forms, monotonicity, chance level."""

import math

import numpy as np
import pytest

from models.one_run import ceiling, epsilon_lower_bound, guess_counts, p_value


@pytest.mark.parametrize("r", [16, 64, 256])
def test_all_guesses_right_matches_the_closed_form(r):
    # With delta = 0 and every guess right the p-value is q^r, so the bound is log(q / (1 - q)).
    q = 0.05 ** (1 / r)
    members = np.arange(r) % 2 == 0  # half in: the top r/2 scores are "in", the bottom r/2 "out"
    found = epsilon_lower_bound(
        members.astype(float), members, delta=0.0, alpha=0.05, guesses=[r], rng=np.random.default_rng(0)
    )
    assert found.guesses == found.correct == r
    assert found.epsilon_lower_bound == pytest.approx(math.log(q / (1 - q)), abs=1e-3)


def test_p_value_grows_with_epsilon_and_with_delta():
    values = [p_value(m=200, r=100, v=70, epsilon=e, delta=0.0) for e in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 1e-4 and values[-1] > 0.5
    assert p_value(m=200, r=100, v=70, epsilon=0.5, delta=1e-3) > p_value(
        m=200, r=100, v=70, epsilon=0.5, delta=0.0
    )
    # At epsilon 0 a guess is a fair coin.
    assert p_value(m=10, r=10, v=5, epsilon=0.0, delta=0.0) == pytest.approx(0.623046875)


def test_delta_weakens_the_bound():
    args = dict(alpha=0.05, guesses=[100], rng=np.random.default_rng(0))
    members = np.arange(100) % 2 == 0
    scores = members.astype(float)
    strict = epsilon_lower_bound(scores, members, delta=0.0, **args).epsilon_lower_bound
    loose = epsilon_lower_bound(scores, members, delta=1e-3, **args).epsilon_lower_bound
    assert 0 < loose < strict


def test_scores_that_say_nothing_give_no_bound():
    rng = np.random.default_rng(1)
    members = rng.random(1000) < 0.5
    found = epsilon_lower_bound(np.zeros(1000), members, delta=1e-6, alpha=0.05, rng=rng)
    assert found.epsilon_lower_bound == 0.0


def test_perfect_scores_pay_for_the_guess_counts_tried():
    rng = np.random.default_rng(2)
    members = rng.random(256) < 0.5
    found = epsilon_lower_bound(members.astype(float), members, delta=0.0, alpha=0.05, rng=rng)
    alone = epsilon_lower_bound(
        members.astype(float), members, delta=0.0, alpha=0.05, guesses=[found.guesses], rng=rng
    )
    assert found.correct == found.guesses
    assert 0 < found.epsilon_lower_bound < alone.epsilon_lower_bound  # alpha split over 4 counts


def test_guess_counts_are_even_and_fixed_in_advance():
    assert guess_counts(256) == (32, 64, 128, 256)
    assert all(r % 2 == 0 for r in guess_counts(10))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="v <= r <= m"):
        p_value(m=5, r=6, v=1, epsilon=1.0, delta=0.0)
    with pytest.raises(ValueError, match="one membership flag per score"):
        epsilon_lower_bound([1.0, 2.0], [True], delta=0.0, alpha=0.05, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="even"):
        epsilon_lower_bound(
            [1.0] * 4, [True] * 4, delta=0.0, alpha=0.05, guesses=[3], rng=np.random.default_rng(0)
        )


def test_ceiling_is_the_bound_of_a_perfect_attack_and_grows_with_canaries():
    members = np.arange(256) % 2 == 0
    perfect = epsilon_lower_bound(
        members.astype(float), members, delta=1e-5, alpha=0.05, rng=np.random.default_rng(0)
    )
    assert perfect.epsilon_lower_bound == pytest.approx(ceiling(256, delta=1e-5, alpha=0.05), abs=1e-3)
    assert (
        ceiling(64, delta=1e-5, alpha=0.05)
        < ceiling(256, delta=1e-5, alpha=0.05)
        < ceiling(1024, delta=1e-5, alpha=0.05)
    )
    # 2 m delta caps it: the same canaries show less on a small table's larger delta.
    assert ceiling(1024, delta=1e-4, alpha=0.05) < ceiling(1024, delta=1e-6, alpha=0.05)
