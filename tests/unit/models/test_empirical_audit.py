"""The empirical audit: at or below the claim on the real build, above it with the noise off.

The noise-off build keeps the accountant's charges and zeroes the noise (tests/noise_off.py),
the bug an audit exists to catch; if these tests pass with it, the audit can fail.
"""

import copy

import numpy as np
import pytest

from models import Synthesizer
from models.empirical_audit import CANARY_COLUMN, audit_synthesizer, canaries_for, canary_table, dpsgd_params
from tests.conftest import make_table
from tests.noise_off import noise_off

RELEASE_TYPES = {"marginals": 0.0, "dp-gan": 0.5}


@pytest.fixture(scope="module", params=sorted(RELEASE_TYPES))
def fitted(request) -> Synthesizer:
    df = make_table(600, seed=11)
    share = RELEASE_TYPES[request.param]
    return Synthesizer(epsilon=1.0, discriminator_share=share, seed=3, generator_steps=200).fit(df)


def _bounds(audit) -> dict[str, float]:
    return {a.attack: a.epsilon_lower_bound for a in audit.attacks}


def test_real_build_stays_at_or_below_the_claim(fitted):
    before = copy.deepcopy(fitted.certificate)
    audit = audit_synthesizer(fitted, rows=600, canaries=256, seed=5)
    claimed = fitted.certificate["epsilon"]
    expected = (
        {"measured marginals", "dp-sgd"} if fitted.config.discriminator_share else {"measured marginals"}
    )
    assert set(_bounds(audit)) == expected
    for attack in audit.attacks:
        # What an attack runs claims at most the release's epsilon (up to the planner's tolerance).
        assert attack.epsilon_lower_bound <= claimed and attack.epsilon_claimed <= claimed * 1.001, attack
    assert fitted.certificate == before  # the audit spends nothing of the fit's budget


def test_noise_off_build_is_caught_above_the_claim(fitted):
    with noise_off():
        audit = audit_synthesizer(fitted, rows=600, canaries=256, seed=5)
    claimed = fitted.certificate["epsilon"]
    assert all(b > claimed for b in _bounds(audit).values()), _bounds(audit)
    entry = audit.to_dict(base="test")
    assert entry["epsilon_lower_bound"] > claimed and entry["correct"] <= entry["guesses"]


@pytest.mark.parametrize("fitted", ["dp-gan"], indirect=True)
def test_dpsgd_noise_off_alone_is_caught_by_the_dpsgd_attack(fitted):
    with noise_off(measurements=False):
        audit = audit_synthesizer(fitted, rows=600, canaries=256, seed=5)
    bounds = _bounds(audit)
    assert bounds["dp-sgd"] > fitted.certificate["epsilon"] and bounds["measured marginals"] < 0.5, bounds


def test_canary_table_plants_one_labelled_copy_per_member():
    base = make_table(50, seed=1)
    members = np.array([True, False, True, True])
    table = canary_table(base, members, np.random.default_rng(0))
    planted = table[table[CANARY_COLUMN] != "none"]
    assert sorted(planted[CANARY_COLUMN]) == ["canary-0", "canary-2", "canary-3"]
    assert len(table) == 53 and (table[CANARY_COLUMN] == "none").sum() == 50
    with pytest.raises(ValueError, match="non-empty"):
        canary_table(base.iloc[:0], members, np.random.default_rng(0))


def test_dpsgd_params_follow_the_certificate(fitted):
    params = dpsgd_params(fitted.certificate)
    if not fitted.config.discriminator_share:
        assert params is None
        return
    (entry,) = [m for m in fitted.certificate["mechanisms"] if m["name"].startswith("dp-sgd")]
    assert (params.noise_multiplier, params.sample_rate, params.steps) == (
        entry["noise_multiplier"],
        entry["sample_rate"],
        entry["steps"],
    )


def test_more_canaries_are_planted_when_the_claim_is_above_what_they_could_show():
    assert canaries_for(1.0, delta=1e-5, at_least=256) == 256
    assert canaries_for(4.0, delta=1e-5, at_least=256) == 1024
    assert canaries_for(50.0, delta=1e-5, at_least=256) == 4096  # capped: no audit can catch that claim
