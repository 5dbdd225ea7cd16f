import warnings

import pytest
from opacus.accountants import RDPAccountant

from models.accounting import (
    _RDP_ORDERS,
    Mechanism,
    PrivacyLedger,
    _merged_history,
    create_accountant,
    epsilon_of,
    register_accountant,
    solve_scale,
)
from models.errors import BudgetExceededError, PrivacyParameterError


def test_epsilon_of_matches_opacus_golden_values():
    history = [(1.5, 0.04, 2250)]
    assert epsilon_of(history, delta=1e-5, accountant="rdp") == pytest.approx(7.32911, abs=1e-4)
    # PRV is numerical with eps_error 0.01 and returns its upper bound.
    assert epsilon_of(history, delta=1e-5, accountant="prv") == pytest.approx(6.77740, abs=0.01)


def test_epsilon_of_merges_gaussians_exactly():
    separate = [(3.0, 1.0, 1), (4.0, 1.0, 1), (2.0, 0.05, 100)]
    merged = [(1 / (1 / 9 + 1 / 16) ** 0.5, 1.0, 1), (2.0, 0.05, 100)]
    for name in ("rdp", "prv"):
        assert epsilon_of(separate, delta=1e-5, accountant=name) == pytest.approx(
            epsilon_of(merged, delta=1e-5, accountant=name), rel=1e-9
        )


def test_epsilon_of_empty_history_is_zero():
    assert epsilon_of([], delta=1e-5, accountant="prv") == 0.0


def test_create_accountant_refuses_unknown_name():
    with pytest.raises(PrivacyParameterError, match="unknown accountant 'gdpx'"):
        create_accountant("gdpx")


def test_register_accountant_refuses_duplicates():
    with pytest.raises(ValueError, match="'prv' is already registered"):
        register_accountant("prv", type(create_accountant("prv")))


def test_plan_over_budget_raises_exact_message():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    with pytest.raises(BudgetExceededError) as info:
        ledger.plan([Mechanism(name="m", noise_multiplier=1.0)])
    assert str(info.value).startswith("planned mechanisms need epsilon ")
    assert str(info.value).endswith("but the target is 1; lower the number of steps or raise the noise")
    assert ledger.spent == []


def test_charge_within_plan_then_refuses_past_target():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5, accountant="rdp")
    mech = Mechanism(name="dp-sgd", noise_multiplier=1.5, sample_rate=0.01, steps=50)
    planned = ledger.plan([mech])
    for _ in range(50):
        ledger.charge(Mechanism(name="dp-sgd", noise_multiplier=1.5, sample_rate=0.01, steps=1))
    assert ledger.epsilon_spent() == pytest.approx(planned)
    assert ledger.epsilon_spent() <= 1.0
    with pytest.raises(BudgetExceededError) as info:
        ledger.charge(Mechanism(name="extra", noise_multiplier=0.5))
    assert str(info.value).startswith("extra would raise the spent epsilon to ")
    assert str(info.value).endswith("over the target 1; nothing was run")
    # The 50 one-step charges are kept as one record of 50 steps.
    assert [(m.name, m.steps) for m in ledger.spent] == [("dp-sgd", 50)]


def test_merged_history_composes_repeats_exactly():
    repeated = [(1.5, 0.01, 1)] * 40 + [(2.0, 1.0, 1), (1.5, 0.01, 10)]
    merged = _merged_history(repeated)
    assert sorted(merged) == [(1.5, 0.01, 50), (2.0, 1.0, 1)]
    one_by_one = RDPAccountant()
    for _ in range(50):
        one_by_one.step(noise_multiplier=1.5, sample_rate=0.01)
    one_by_one.step(noise_multiplier=2.0, sample_rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns when the best order is the largest one
        expected = one_by_one.get_epsilon(1e-5, alphas=_RDP_ORDERS)
    assert epsilon_of(repeated, delta=1e-5, accountant="rdp") == pytest.approx(expected, rel=1e-9)


def test_charge_outside_plan_is_checked_not_trusted():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    ledger.plan([Mechanism(name="m", noise_multiplier=10.0)])
    # Less noise than planned is not covered by the plan; it must be re-checked.
    with pytest.raises(BudgetExceededError):
        ledger.charge(Mechanism(name="m", noise_multiplier=0.5))


def test_state_dict_roundtrip_keeps_spent_epsilon():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-5, delta_reserved=1e-6)
    ledger.plan([Mechanism(name="a", noise_multiplier=5.0), Mechanism(name="b", noise_multiplier=3.0)])
    ledger.charge(Mechanism(name="a", noise_multiplier=5.0))
    again = PrivacyLedger.from_state_dict(ledger.state_dict())
    assert again.epsilon_spent() == ledger.epsilon_spent()
    assert again.accountant_delta == pytest.approx(9e-6)
    again.charge(Mechanism(name="b", noise_multiplier=3.0))
    assert again.epsilon_spent() > ledger.epsilon_spent()


def test_mechanism_validates_parameters():
    with pytest.raises(PrivacyParameterError, match="noise_multiplier must be > 0"):
        Mechanism(name="x", noise_multiplier=0.0)
    with pytest.raises(PrivacyParameterError, match="sample_rate must be in"):
        Mechanism(name="x", noise_multiplier=1.0, sample_rate=1.5)


def test_solve_scale_lands_just_under_target():
    def eps(scale: float) -> float:
        return epsilon_of([(scale, 1.0, 1)], delta=1e-5, accountant="prv")

    scale = solve_scale(eps, 1.0)
    assert eps(scale) <= 1.0
    assert eps(scale / 1.01) > 1.0 - 0.02


def test_charge_off_plan_keeps_room_for_the_rest_of_the_plan():
    # An off-plan charge that fits alone but not with what is still planned is refused,
    # so the covered charges that follow can never push the total past the target.
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    # Alone: sigma 6 -> 0.60, sigma 4.5 -> 0.82; together 6 and 6 -> 0.9, 4.5 and 6 -> 1.05.
    ledger.plan([Mechanism(name="a", noise_multiplier=6.0), Mechanism(name="b", noise_multiplier=6.0)])
    with pytest.raises(BudgetExceededError, match="^a would raise the spent epsilon to"):
        ledger.charge(Mechanism(name="a", noise_multiplier=4.5))
    ledger.charge(Mechanism(name="a", noise_multiplier=6.0))
    ledger.charge(Mechanism(name="b", noise_multiplier=6.0))
    assert ledger.epsilon_spent() <= 1.0


def test_epsilon_of_falls_back_to_rdp_where_prv_cannot_discretise():
    history = [(1e-4, 1.0, 1)]
    eps = epsilon_of(history, delta=1e-5, accountant="prv")
    assert eps == epsilon_of(history, delta=1e-5, accountant="rdp")
    assert eps > 1e6
